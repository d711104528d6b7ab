"""The trainer: the step protocol against a hand-written loop, normalisation folding, b_dec
initialisation, several dictionaries from one pass, metrics and logging backends."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from train_stubs import ListSource, ToySAE, toy_config, toy_data, toy_sae

from mechscope.dictionary import schedule
from mechscope.dictionary.train import TrainConfig, train
from mechscope.errors import MechscopeError


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(
        lr=1e-2, batch_size=64, total_tokens=64 * 12, output_dir=tmp_path / "run", progress=False,
        checkpoint_every=0, log_every=4, lr_warmup_steps=3, lr_decay_fraction=0.5, sparsity_coefficient=0.1,
        sparsity_warmup_steps=5, init_batches=2,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _reference_loop(d: ToySAE, source, cfg: TrainConfig, c: float, b_dec: torch.Tensor) -> ToySAE:
    """The step protocol written out by hand (one dictionary, no dead latents)."""
    with torch.no_grad():
        d.b_dec.copy_(b_dec)
    opt = torch.optim.Adam(
        d.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps
    )
    steps = cfg.total_tokens // cfg.batch_size
    it = source.batches(cfg.batch_size, seed=cfg.seed)
    for s in range(steps):
        x = next(it)["h"] * c
        lam = cfg.sparsity_coefficient * min(1.0, (s + 1) / cfg.sparsity_warmup_steps)
        out = d.training_forward(
            x, sparsity_coefficient=lam, dead_mask=torch.zeros(d.config.d_sae, dtype=torch.bool)
        )
        out.loss.backward()
        for g in opt.param_groups:
            g["lr"] = cfg.lr * schedule.lr_factor(
                s, steps, cfg.lr_warmup_steps, cfg.lr_decay, cfg.lr_decay_fraction
            )
        opt.step()
        opt.zero_grad()
    return d


@pytest.mark.parametrize("norm", ["none", "unit_mean_squared_norm", "sqrt_d_over_mean_norm"])
def test_trainer_equals_hand_written_loop(tmp_path, norm):
    x = toy_data()
    src = ListSource({"h": x})
    cfg = _cfg(tmp_path, normalisation=norm, b_dec_init="mean")
    res = train(toy_sae(seed=1), src, cfg, names=["sae"])
    init = torch.cat([b["h"] for b, _ in zip(src.batches(64, seed=0), range(2), strict=False)])
    c = schedule.norm_scale(init, norm)
    ref = _reference_loop(toy_sae(seed=1), src, cfg, c, (c * init).mean(0))
    got = res.dictionaries["sae"]
    assert got.config.norm_scale == 1.0 and got.config.metadata["training"][
        "norm_scale_trained"
    ] == pytest.approx(c)
    # the saved dictionary takes raw activations: W_enc * c, W_dec / c, b_dec / c
    torch.testing.assert_close(got.W_enc, ref.W_enc * c, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.W_dec, ref.W_dec / c, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.b_dec, ref.b_dec / c, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.b_enc, ref.b_enc, rtol=1e-5, atol=1e-6)


def test_folded_dictionary_on_raw_equals_trained_on_normalised(tmp_path):
    x = toy_data(scale=40.0)
    seen = {}
    res = train(
        toy_sae(), ListSource({"h": x}), _cfg(tmp_path),
        callbacks=[lambda info: seen.__setitem__("d", {k: v.state_dict() for k, v in info.dictionaries.items()})],
    )  # fmt: skip
    name = next(iter(res.dictionaries))
    folded = res.dictionaries[name]
    c = folded.config.metadata["training"]["norm_scale_trained"]
    trained = ToySAE(toy_config(norm_scale=c))
    trained.load_state_dict(seen["d"][name])
    assert abs(c - 1.0) > 0.01
    with torch.no_grad():
        torch.testing.assert_close(folded.encode(x), trained.encode(c * x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(folded(x), trained(c * x) / c, rtol=1e-5, atol=1e-4)
    # and what was written to disk is the folded dictionary
    saved = res.paths[name]
    assert saved.is_dir() and any(saved.iterdir())
    from safetensors.torch import load_file

    weights = load_file(str(next(saved.glob("*.safetensors"))))
    assert torch.equal(weights["W_enc"], folded.W_enc.detach())


def test_b_dec_initialised_to_geometric_median(tmp_path):
    x = toy_data()
    x[:40] += 100.0  # outliers: the mean and the median differ a lot
    src = ListSource({"h": x})
    res = train(toy_sae(), src, _cfg(tmp_path, lr=0.0, total_tokens=64, init_batches=3, normalisation="none"))
    d = next(iter(res.dictionaries.values()))
    init = torch.cat([b["h"] for b, _ in zip(src.batches(64, seed=0), range(3), strict=False)])
    torch.testing.assert_close(d.b_dec, schedule.geometric_median(init), rtol=1e-5, atol=1e-5)
    assert float((d.b_dec.detach() - init.mean(0)).norm()) > 1.0


def test_loss_goes_down_and_history_is_written(tmp_path):
    x = toy_data(n=1024)
    cfg = _cfg(tmp_path, total_tokens=64 * 40, log_every=5, lr=2e-2)
    res = train(toy_sae(), ListSource({"h": x}), cfg)
    lines = [json.loads(s) for s in (cfg.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(5, 41, 5))
    first, last = lines[0], lines[-1]
    assert last["mse"] < 0.5 * first["mse"]
    for key in (
        "loss",
        "l1",
        "l0",
        "fvu",
        "dead_fraction",
        "lr",
        "sparsity_coefficient",
        "grad_norm",
        "tokens",
    ):
        assert key in last
    assert 0 <= last["fvu"] < 1 and 0 < last["l0"] <= 16 and last["lr"] == 0.0
    summary = json.loads((cfg.output_dir / "train.json").read_text())
    assert summary["steps"] == 40 and summary["tokens"] == 40 * 64
    assert res.steps == 40 and res.metrics[lines[-1]["dictionary"]]["step"] == 40


def test_batch_metrics_match_hand_computation(tmp_path):
    x = toy_data(n=256)
    seen = []
    cfg = _cfg(tmp_path, total_tokens=128, log_every=1, lr=0.0, normalisation="none", b_dec_init="zeros")
    d0 = toy_sae()
    ref = toy_sae()
    train(d0, ListSource({"h": x}), cfg, callbacks=[lambda info: seen.append(info.records)])
    batch = next(ListSource({"h": x}).batches(64, seed=0))["h"]
    with torch.no_grad():
        f = ref.encode(batch)
        y_hat = ref.decode(f)
    fvu = float((batch - y_hat).pow(2).sum() / (batch - batch.mean(0)).pow(2).sum())
    rec = seen[0][0]
    assert rec["fvu"] == pytest.approx(fvu, rel=1e-5)
    assert rec["l0"] == pytest.approx(float((f > 0).sum(-1).double().mean()))
    assert rec["mse"] == pytest.approx(float((batch - y_hat).pow(2).sum(-1).mean()), rel=1e-5)


def test_several_dictionaries_from_one_pass(tmp_path):
    g = torch.Generator().manual_seed(3)
    tensors = {"a": toy_data(seed=1), "b": toy_data(seed=2) @ torch.randn(8, 8, generator=g)}
    src = ListSource(tensors)
    cfgs = [_cfg(tmp_path, lr=1e-2), _cfg(tmp_path, lr=3e-3, sparsity_coefficient=0.5)]
    dicts = [toy_sae(seed=0, hook="a"), toy_sae(seed=1, hook="b")]
    res = train(dicts, src, cfgs, names=["A", "B"])
    train_reads = [r for r in src.requests if r["start"] == 0]
    assert len(src.requests) == 2 and len(train_reads) == 2  # one init read + one training pass for both
    for i, (name, hook) in enumerate([("A", "a"), ("B", "b")]):
        alone = train(toy_sae(seed=i, hook=hook), ListSource(tensors), cfgs[i], names=[name])
        for k, v in alone.dictionaries[name].state_dict().items():
            assert torch.equal(v, res.dictionaries[name].state_dict()[k]), (name, k)
    with pytest.raises(MechscopeError, match="must be the same"):
        train(dicts, src, [cfgs[0], _cfg(tmp_path, batch_size=32)])


def test_step_protocol_order(tmp_path):
    calls: list[str] = []

    class Recording(ToySAE):
        def training_forward(self, x, y=None, *, sparsity_coefficient=0.0, dead_mask=None):
            calls.append("forward")
            assert dead_mask is not None and dead_mask.shape == (self.config.d_sae,)
            out = super().training_forward(
                x, y, sparsity_coefficient=sparsity_coefficient, dead_mask=dead_mask
            )
            out.loss.register_hook(lambda g: calls.append("backward"))
            return out

        def before_optimizer_step(self):
            assert self.W_enc.grad is not None
            calls.append("before")

        def after_step(self):
            assert self.W_enc.grad is None  # zero_grad(set_to_none=True) ran
            calls.append("after")

    train(Recording(toy_config()), ListSource({"h": toy_data()}), _cfg(tmp_path, total_tokens=128))
    assert calls == ["forward", "backward", "before", "after"] * 2


def test_dead_latent_tracking(tmp_path):
    # latent 0 can never fire (huge negative bias, lr 0): dead after the window; the others are alive
    d = toy_sae()
    with torch.no_grad():
        d.b_enc[0] = -1e6
    masks = []

    class Watch(ToySAE):
        def training_forward(self, x, y=None, *, sparsity_coefficient=0.0, dead_mask=None):
            masks.append(dead_mask.clone())
            return super().training_forward(
                x, y, sparsity_coefficient=sparsity_coefficient, dead_mask=dead_mask
            )

    w = Watch(d.config)
    w.load_state_dict(d.state_dict())
    seen = []
    cfg = _cfg(tmp_path, lr=0.0, total_tokens=64 * 6, dead_window_tokens=128, log_every=1, b_dec_init="zeros")
    train(
        w,
        ListSource({"h": toy_data()}),
        cfg,
        callbacks=[lambda i: seen.append(i.records[0]["dead_fraction"])],
    )
    assert [bool(m[0]) for m in masks] == [False, False, True, True, True, True]
    assert not any(bool(m[1:].any()) for m in masks)
    assert seen[-1] == pytest.approx(1 / 16)


def test_bad_inputs_give_clear_errors(tmp_path):
    src = ListSource({"h": toy_data()})
    with pytest.raises(MechscopeError, match="no step"):
        train(toy_sae(), src, _cfg(tmp_path, total_tokens=10))
    with pytest.raises(MechscopeError, match="no hook 'zz'"):
        train(toy_sae(hook="zz"), src, _cfg(tmp_path))
    with pytest.raises(MechscopeError, match="d_in=5"):
        train(toy_sae(d_in=5), src, _cfg(tmp_path))
    with pytest.raises(MechscopeError, match="logging"):
        train(toy_sae(), src, _cfg(tmp_path, logging="mlflow"))
    with pytest.raises(MechscopeError, match="unique"):
        train([toy_sae(), toy_sae()], src, _cfg(tmp_path), names=["a", "a"])


def test_tensorboard_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails like a missing package
    with pytest.raises(MechscopeError, match="pip install tensorboard"):
        train(toy_sae(), ListSource({"h": toy_data()}), _cfg(tmp_path, logging="tensorboard"))


@pytest.mark.parametrize("backend", ["tensorboard", "wandb"])
def test_logging_backends_receive_metrics(tmp_path, monkeypatch, backend):
    logged: list[tuple[str, float, int]] = []
    closed = []

    class Writer:
        def __init__(self, **kw):
            pass

        def add_scalar(self, k, v, step):
            logged.append((k, v, step))

        def close(self):
            closed.append(True)

    class Run:
        def log(self, scalars, step):
            logged.extend((k, v, step) for k, v in scalars.items())

        def finish(self):
            closed.append(True)

    if backend == "tensorboard":
        monkeypatch.setitem(
            sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer)
        )
    else:
        monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: Run()))
    train(toy_sae(), ListSource({"h": toy_data()}), _cfg(tmp_path, logging=backend), names=["s"])
    keys = {k for k, _, _ in logged}
    assert {"s/loss", "s/l0", "s/fvu", "s/dead_fraction"} <= keys
    assert sorted({s for _, _, s in logged}) == [4, 8, 12] and closed == [True]
