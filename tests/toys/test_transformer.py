"""The toy transformer: an independent reference forward, the hook contracts, save/load, the trainer."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from contracts import (
    check_attention,
    check_component_reconstructions,
    check_every_hook_fires,
    check_generate,
    check_logits_match_hf,
    check_residual_identities,
    check_writes,
)
from mechscope import load_model, wrap
from mechscope.errors import ModelLoadError
from mechscope.toys.registry import save_toy
from mechscope.toys.train import CheckpointError, TrainConfig, latest_checkpoint, step_generator, train
from mechscope.toys.transformer import TransformerSpec, build

VOCAB = 40
# init_std well above the default so attention patterns are far from uniform (writes must show)
SPECS = {
    "attn-only-noln": TransformerSpec(
        d_vocab=VOCAB, n_ctx=16, d_model=32, n_heads=4, d_mlp=0, layer_norm=False, bias=False, init_std=0.2
    ),
    "mlp-ln-gelu": TransformerSpec(
        d_vocab=VOCAB, n_ctx=16, d_model=32, n_heads=2, d_mlp=48, act="gelu", init_std=0.2
    ),
    "mlp-noln-relu-1layer": TransformerSpec(
        d_vocab=VOCAB,
        n_ctx=16,
        d_model=24,
        n_layers=1,
        n_heads=3,
        d_head=5,
        d_mlp=40,
        layer_norm=False,
        init_std=0.2,
    ),
}


def _toks(batch: int = 2, pos: int = 11, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, pos), generator=torch.Generator().manual_seed(seed))


def reference_logits(spec: TransformerSpec, sd: dict[str, torch.Tensor], toks: torch.Tensor) -> torch.Tensor:
    """The toy's forward written out from its state dict, independent of the model code."""
    d_head = spec.d_head or spec.d_model // spec.n_heads
    g = lambda k: sd.get(k)  # noqa: E731

    def norm(x, name):
        return (
            F.layer_norm(x, (spec.d_model,), g(name + ".weight"), g(name + ".bias")) if spec.layer_norm else x
        )

    def lin(x, name):
        return F.linear(x, g(name + ".weight"), g(name + ".bias"))

    b, p = toks.shape
    x = sd["model.embed_tokens.weight"][toks] + sd["model.embed_positions.weight"][:p]
    mask = torch.tril(torch.ones(p, p, dtype=torch.bool))
    for layer in range(spec.n_layers):
        pre = f"model.layers.{layer}."
        h = norm(x, pre + "ln_1")
        q, k, v = (lin(h, pre + f"attn.{n}_proj").view(b, p, spec.n_heads, d_head) for n in "qkv")
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d_head)
        pattern = scores.masked_fill(~mask, -math.inf).softmax(-1)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v).reshape(b, p, -1)
        x = x + lin(z, pre + "attn.o_proj")
        if spec.d_mlp:
            act = F.relu if spec.act == "relu" else F.gelu
            x = x + lin(act(lin(norm(x, pre + "ln_2"), pre + "mlp.fc_in")), pre + "mlp.fc_out")
    return lin(norm(x, "model.ln_f"), "lm_head")


@pytest.mark.parametrize("variant", SPECS)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_logits_equal_reference(variant, attn):
    spec = SPECS[variant]
    model = build(spec, seed=3).eval()
    model.config._attn_implementation = attn
    toks = _toks()
    with torch.no_grad():
        ours = model(input_ids=toks).logits
        ref = reference_logits(spec, model.state_dict(), toks)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert ours.std() > 0.2  # not a degenerate, near-constant output


def test_same_seed_same_weights_other_seed_differs():
    a, b, c = (build(SPECS["mlp-ln-gelu"], seed=s).state_dict() for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["lm_head.weight"], c["lm_head.weight"])


@pytest.mark.parametrize("variant", SPECS)
def test_hook_contracts(variant):
    model = wrap(build(SPECS[variant], seed=0).eval())
    toks = _toks()
    assert model.cfg.family == "toy" and model.cfg.d_mlp == SPECS[variant].d_mlp
    check_logits_match_hf(model, toks)
    cache = check_every_hook_fires(model, toks)
    check_residual_identities(model, cache)
    check_component_reconstructions(model, toks)
    check_attention(model, cache, {})
    if SPECS[variant].d_mlp:
        check_writes(model, toks)


def test_attention_only_mlp_sites_are_empty_and_writes_still_reach_the_logits():
    model = wrap(build(SPECS["attn-only-noln"], seed=0).eval())
    toks = _toks()
    logits, cache = model.run_with_cache(toks)
    for layer in range(model.cfg.n_layers):
        assert cache[f"blocks.{layer}.mlp.hook_pre"].shape == (2, 11, 0)
        assert torch.equal(cache[f"blocks.{layer}.hook_mlp_out"], torch.zeros(2, 11, 32))
        assert torch.equal(cache[f"blocks.{layer}.hook_resid_post"], cache[f"blocks.{layer}.hook_resid_mid"])
    # ablating layer 1's attention through the standard hook name changes the logits
    zero = lambda t, h: torch.zeros_like(t)  # noqa: E731
    ablated = model.run_with_hooks(toks, [("blocks.1.hook_attn_out", zero)])
    assert (ablated - logits).abs().max() > 1e-2
    # writing the (all-zero) MLP output is a write into the residual stream
    bumped = model.run_with_hooks(toks, [("blocks.0.hook_mlp_out", lambda t, h: t + 1.0)])
    assert (bumped - logits).abs().max() > 1e-2


def test_save_load_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    model = build(SPECS["mlp-ln-gelu"], seed=5).eval()
    where = save_toy(model, "rt")
    assert where == tmp_path / "cache" / "toys" / "rt"
    assert {p.name for p in where.iterdir()} >= {"config.json", "model.safetensors"}
    assert json.loads((where / "config.json").read_text())["model_type"] == "mechscope_toy"
    toks = _toks()
    with torch.no_grad():
        expected = model(input_ids=toks).logits
    for loaded in (load_model("toy/rt", device="cpu"), load_model(where, device="cpu")):
        assert loaded.cfg.family == "toy"
        assert torch.equal(loaded(toks), expected)
    save_toy(build(SPECS["mlp-ln-gelu"], seed=6), "rt")  # overwriting replaces the weights
    assert not torch.equal(load_model("toy/rt", device="cpu")(toks), expected)


def test_load_model_imports_the_toys_package_by_itself(tmp_path):
    """A fresh interpreter that never imported mechscope.toys loads a toy by name and by directory."""
    build(SPECS["attn-only-noln"], seed=0).save_pretrained(tmp_path / "cache" / "toys" / "fresh")
    code = (
        "import sys, mechscope\n"
        "assert 'mechscope.toys' not in sys.modules\n"
        f"d = mechscope.load_model({str(tmp_path / 'cache' / 'toys' / 'fresh')!r}, device='cpu')\n"
        "m = mechscope.load_model('toy/fresh', device='cpu')\n"
        "print(m.cfg.family, d.cfg.n_layers)\n"
    )
    env = {"MECHSCOPE_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["toy", "2"]


def test_unknown_toy_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="toy 'nope' has no checkpoint"):
        load_model("toy/nope")
    with pytest.raises(ModelLoadError, match="invalid toy name"):
        load_model("toy/../x")


# ---------------------------------------------------------------- trainer

SMALL = TransformerSpec(d_vocab=12, n_ctx=8, d_model=16, n_layers=1, n_heads=2, d_mlp=16)


def _batches(step: int) -> tuple[torch.Tensor, None]:
    """Sequences that count up mod 12 from a random start: the next token is fully determined."""
    start = torch.randint(0, 12, (16, 1), generator=step_generator(0, step))
    return (start + torch.arange(8)) % 12, None


def test_training_smoke_loss_falls():
    model = build(SMALL, seed=0)
    result = train(model, _batches, TrainConfig(steps=60, lr=1e-2, progress=False))
    assert len(result.losses) == 60
    assert result.losses[0] > 2.0  # about ln 12 = 2.48 at initialisation
    assert sum(result.losses[-5:]) / 5 < 0.5 * result.losses[0]
    assert not model.training


def test_resume_gives_identical_weights(tmp_path):
    cfg = TrainConfig(steps=8, lr=3e-3, weight_decay=0.1, warmup_steps=3, grad_clip=1.0, progress=False)
    straight = build(SMALL, seed=1)
    full = train(straight, _batches, cfg, tmp_path / "a")
    interrupted = build(SMALL, seed=1)
    train(interrupted, _batches, TrainConfig(**{**cfg.__dict__, "steps": 5}), tmp_path / "b")
    assert latest_checkpoint(tmp_path / "b").name == "checkpoint-00000005"
    resumed = build(SMALL, seed=99)  # weights come from the checkpoint, not the seed
    second = train(resumed, _batches, cfg, tmp_path / "b")
    assert second.resumed_from == 5 and second.losses == full.losses
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [p.name for p in (tmp_path / "b").iterdir() if not p.name.startswith(".")] == [
        "checkpoint-00000008"
    ]
    # the checkpoint's model directory is a loadable model
    loaded = load_model(tmp_path / "b" / "checkpoint-00000008" / "model", device="cpu")
    toks = _batches(0)[0]
    with torch.no_grad():
        assert torch.equal(loaded(toks), resumed(input_ids=toks).logits)


def test_resume_refuses_another_config(tmp_path):
    train(build(SMALL, seed=1), _batches, TrainConfig(steps=2, progress=False), tmp_path)
    with pytest.raises(CheckpointError, match="written with"):
        train(build(SMALL, seed=1), _batches, TrainConfig(steps=4, lr=0.5, progress=False), tmp_path)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_padded_batch_matches_single_prompts(attn):
    """Left- and right-padded batches: the attention mask reaches every kernel (positions shift on the left)."""
    hf = build(SPECS["mlp-ln-gelu"], seed=2).eval()
    hf.config._attn_implementation = attn
    model = wrap(hf)
    short, long = [5, 6, 7], [8, 9, 10, 11, 12]
    with torch.no_grad():
        alone = [model(torch.tensor([t])) for t in (short, long)]
        right = model(
            torch.tensor([[*short, 0, 0], long]), attention_mask=torch.tensor([[1, 1, 1, 0, 0], [1] * 5])
        )
        left = model(
            torch.tensor([[0, 0, *short], long]), attention_mask=torch.tensor([[0, 0, 1, 1, 1], [1] * 5])
        )
    for batch, rows in ((right, slice(0, 3)), (left, slice(2, 5))):
        torch.testing.assert_close(batch[0, rows], alone[0][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batch[1], alone[1][0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["attn-only-noln", "mlp-ln-gelu"])
def test_generate_recomputes_without_a_cache(variant):
    """Greedy generate = HF generate = an argmax loop, with and without hooks; batched = one by one."""
    model = wrap(build(SPECS[variant], seed=1).eval())
    check_generate(model, _toks(pos=6))
    single = [
        model.generate(torch.tensor([p]), max_new_tokens=4, stop_at_eos=False)[0] for p in ([5, 6], [7, 8, 9])
    ]
    both = model.generate([[5, 6], [7, 8, 9]], max_new_tokens=4, stop_at_eos=False)  # left-padded
    assert torch.equal(both[0, 1:], single[0]) and torch.equal(both[1], single[1])
