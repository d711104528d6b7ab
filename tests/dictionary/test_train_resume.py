"""Checkpoints, resume after a simulated crash, corrupt checkpoints, and the NaN guard."""

from __future__ import annotations

import json

import pytest
import torch
from train_stubs import ListSource, toy_data, toy_sae

from mechscope.dictionary import checkpoint as ckpt
from mechscope.dictionary.train import TrainConfig, TrainingDivergedError, train
from mechscope.errors import MechscopeError


class Crash(RuntimeError):
    pass


def _cfg(out, **kw) -> TrainConfig:
    base = dict(
        lr=1e-2, batch_size=32, total_tokens=32 * 14, output_dir=out, progress=False, checkpoint_every=3,
        log_every=2, lr_warmup_steps=2, sparsity_warmup_steps=4, sparsity_coefficient=0.2, init_batches=2,
        dead_window_tokens=96, keep_checkpoints=2,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _crash_at(k: int):
    def cb(info):
        if info.step == k:
            raise Crash(f"simulated crash after step {k}")

    return cb


def _state(res) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v for n, d in res.dictionaries.items() for k, v in d.state_dict().items()}


def _run_pair(tmp_path, make_dicts, tensors, crash_step=7, **kw):
    """(uninterrupted, crashed-then-resumed) results of the same run."""
    full = train(make_dicts(), ListSource(tensors), _cfg(tmp_path / "full", **kw))
    out = tmp_path / "crashy"
    with pytest.raises(Crash):
        train(make_dicts(), ListSource(tensors), _cfg(out, **kw), callbacks=[_crash_at(crash_step)])
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == [
        "step-000000003",
        "step-000000006",
    ]
    src = ListSource(tensors)
    resumed = train(make_dicts(), src, _cfg(out, resume=True, **kw))
    assert src.requests[0]["start"] == 6  # went on from the step-6 checkpoint, not from scratch
    return full, resumed, out


def test_resume_after_crash_matches_uninterrupted_run(tmp_path):
    # dead latents (window 96 tokens = 3 steps) and the LR/sparsity schedules all cross the crash
    tensors = {"h": toy_data(n=256)}
    full, resumed, out = _run_pair(tmp_path, lambda: toy_sae(seed=5), tensors)
    a, b = _state(full), _state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.steps == full.steps == 14
    # the metrics history has every logged step exactly once
    steps = [json.loads(s)["step"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(2, 15, 2))
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1]) == {
        **json.loads((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()[-1]),
        "elapsed_s": json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["elapsed_s"],
    }


def test_resume_several_dictionaries(tmp_path):
    tensors = {"a": toy_data(seed=1), "b": toy_data(seed=2)}
    full, resumed, _ = _run_pair(
        tmp_path,
        lambda: [toy_sae(seed=1, hook="a"), toy_sae(seed=2, hook="b", d_sae=12)],
        tensors,
        crash_step=8,
    )
    a, b = _state(full), _state(resumed)
    assert len(a) == 8 and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_round_trip_and_no_pickle(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Crash):
        train(toy_sae(), ListSource({"h": toy_data()}), _cfg(out), callbacks=[_crash_at(6)])
    path = ckpt.latest(out / "checkpoints")
    assert path is not None and path.name == "step-000000006"
    files = sorted(p.name for p in path.iterdir())
    assert all(f.endswith((".safetensors", ".json")) for f in files), files
    step, tokens, states = ckpt.load(path)
    assert (step, tokens) == (6, 6 * 32)
    (st,) = states
    assert set(st.weights) == {"W_enc", "b_enc", "W_dec", "b_dec"}
    assert set(st.optimizer["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert float(st.optimizer["state"][0]["step"]) == 6.0
    assert st.config.norm_scale != 1.0 and st.tokens_since_fired.dtype == torch.int64


def _corrupt_latest(root):
    latest = ckpt.list_checkpoints(root)[-1]
    f = next(latest.glob("*.weights.safetensors"))
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    return latest


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
    tensors = {"h": toy_data()}
    full = train(toy_sae(), ListSource(tensors), _cfg(tmp_path / "full"))
    out = tmp_path / "run"
    with pytest.raises(Crash):
        train(toy_sae(), ListSource(tensors), _cfg(out), callbacks=[_crash_at(7)])
    bad = _corrupt_latest(out / "checkpoints")
    with pytest.raises(ckpt.CheckpointError, match=r"corrupt.*weights\.safetensors"):
        ckpt.verify(bad)
    src = ListSource(tensors)
    with pytest.warns(UserWarning, match="step-000000006 is corrupt"):
        resumed = train(toy_sae(), src, _cfg(out, resume=True))
    assert src.requests[0]["start"] == 3  # the previous checkpoint
    a, b = _state(full), _state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_partial_and_all_corrupt_checkpoints(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Crash):
        train(
            toy_sae(), ListSource({"h": toy_data()}), _cfg(out, keep_checkpoints=1), callbacks=[_crash_at(4)]
        )
    root = out / "checkpoints"
    (only,) = ckpt.list_checkpoints(root)
    (only / "state.json").unlink()  # a partial directory (e.g. copied by hand)
    with pytest.raises(ckpt.CheckpointError, match=r"partial: state\.json is missing"):
        ckpt.verify(only)
    with pytest.warns(UserWarning), pytest.raises(ckpt.CheckpointError, match="no usable checkpoint"):
        train(toy_sae(), ListSource({"h": toy_data()}), _cfg(out, resume=True))
    # a temporary directory left by a crash mid-write is ignored altogether
    (root / ".step-000000009.tmp-1234").mkdir()
    assert ckpt.list_checkpoints(root) == [only]


def test_resume_refuses_a_different_run(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Crash):
        train(toy_sae(), ListSource({"h": toy_data()}), _cfg(out), callbacks=[_crash_at(4)])
    with pytest.raises(ckpt.CheckpointError, match=r"different settings \['lr'\]"):
        train(toy_sae(), ListSource({"h": toy_data()}), _cfg(out, resume=True, lr=0.5))
    with pytest.raises(ckpt.CheckpointError, match="different config"):
        train(toy_sae(d_sae=20), ListSource({"h": toy_data()}), _cfg(out, resume=True))
    assert isinstance(ckpt.CheckpointError("x"), MechscopeError)


class NaNAt(ListSource):
    """Poisons one row of global batch ``k``."""

    def __init__(self, tensors, k, value=float("nan")):
        super().__init__(tensors)
        self.k, self.value = k, value

    def batches(self, batch_size, *, seed, start=0, rank=0, world=1, hooks=None):
        for i, b in enumerate(
            super().batches(batch_size, seed=seed, start=start, rank=rank, world=world, hooks=hooks)
        ):
            if start + i == self.k:
                b = {h: t.clone() for h, t in b.items()}
                b["h"][0, 0] = self.value
            yield b


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_activations_stop_training_and_keep_last_checkpoint(tmp_path, value):
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError) as e:
        train(toy_sae(), NaNAt({"h": toy_data()}, k=8, value=value), _cfg(out))
    err = e.value
    assert err.step == 8 and err.term == "input"
    assert "step 8" in str(err) and "hook 'h'" in str(err) and "step-000000006" in str(err)
    assert err.checkpoint is not None and err.checkpoint.name == "step-000000006"
    ckpt.verify(err.checkpoint)  # still complete
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == [
        "step-000000003",
        "step-000000006",
    ]
    assert not (out / "dictionaries").exists()


def test_nan_loss_names_the_term_and_nan_gradient_names_the_parameter(tmp_path):
    def poison(name):
        def cb(info):
            if info.step == 4:
                d = next(iter(info.dictionaries.values()))
                with torch.no_grad():
                    getattr(d, name)[0] = float("inf")

        return cb

    with pytest.raises(TrainingDivergedError, match=r"step 4 .*non-finite terms: l1, mse") as e:
        train(toy_sae(), ListSource({"h": toy_data()}), _cfg(tmp_path / "a"), callbacks=[poison("W_dec")])
    assert e.value.term == "l1,mse" and e.value.checkpoint.name == "step-000000003"

    class BadGrad(type(toy_sae())):
        def training_forward(self, x, y=None, **kw):
            out = super().training_forward(x, y, **kw)
            # value 0 (the loss stays finite) but d/d b_enc = 0 * (1 / (2 sqrt(0))) * 0 = nan
            out.loss = out.loss + 0.0 * (0.0 * self.b_enc[0]).sqrt()
            return out

    d = BadGrad(toy_sae().config)
    with pytest.raises(
        TrainingDivergedError, match=r"step 0 .*gradient is non-finite \(parameters: b_enc\)"
    ) as e:
        train(d, ListSource({"h": toy_data()}), _cfg(tmp_path / "b"))
    assert e.value.term == "grad:b_enc" and e.value.checkpoint is None
