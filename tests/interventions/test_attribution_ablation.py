"""Attribution patching equals exact patching where the model is linear; ablations use their references."""

from __future__ import annotations

import pytest
import torch
from test_patching import TOL, random_task
from torch import nn
from torch.testing import assert_close

import mechscope
import tiny
from mechscope.errors import MechscopeError
from mechscope.interventions import Patch, SweepConfig, patch_variants, sweep
from mechscope.interventions.ablation import ablate
from mechscope.interventions.attribution import attribution_patching
from mechscope.tasks import Task, prepare


def _uniform_causal(t: torch.Tensor, hook) -> torch.Tensor:
    """A frozen attention pattern: uniform over the allowed (causal, bottom-right aligned) keys."""
    q, k = t.shape[-2:]
    allowed = torch.ones(q, k, dtype=t.dtype).tril(diagonal=k - q)
    return (allowed / allowed.sum(-1, keepdim=True)).expand_as(t).clone()


@pytest.fixture(scope="module")
def linear_gpt2(tiny_dirs):
    """GPT-2 with its LayerNorms and GELU removed: linear in every activation once patterns are frozen."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"], dtype=torch.float64).eval()
    for block in hf.transformer.h:
        block.ln_1, block.ln_2, block.mlp.act = nn.Identity(), nn.Identity(), nn.Identity()
    hf.transformer.ln_f = nn.Identity()
    return mechscope.wrap(hf)


@pytest.mark.parametrize(
    "kind", ["resid_pre", "attn_out", "mlp_out", "heads", "heads_by_pos", "v", "q", "neurons"]
)
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_atp_is_exact_on_a_linear_model(linear_gpt2, kind, direction):
    m = linear_gpt2
    data = prepare(m, random_task())
    freeze = [(f"blocks.{i}.attn.hook_pattern", _uniform_causal) for i in range(m.cfg.n_layers)]
    cfg = SweepConfig(direction=direction, neurons=(0, 7, 30))
    with m.hooks(freeze):
        exact = sweep(m, data, kind, config=cfg)
        atp = attribution_patching(m, data, kind, direction=direction, config=cfg)
    assert_close(atp.values, exact.values, rtol=1e-9, atol=1e-9)
    assert_close(atp.per_example, exact.per_example, rtol=1e-9, atol=1e-9)
    assert atp.clean == pytest.approx(exact.clean) and atp.corrupted == pytest.approx(exact.corrupted)
    if kind != "q":  # frozen patterns make queries irrelevant: both are exactly zero effect there
        assert (exact.values - exact.baseline).abs().max() > 1e-3  # the sweep is not trivially zero


def test_atp_star_is_exact_when_only_softmax_is_nonlinear(tmp_path):
    """One linearised layer: the metric is linear in the attention pattern, so recomputing the
    pattern exactly (AtP*) gives exact patching for queries and keys, while AtP does not."""
    from transformers import AutoModelForCausalLM, GPT2Config

    cfg = GPT2Config(
        vocab_size=tiny.VOCAB, n_embd=32, n_layer=1, n_head=4, n_positions=32, initializer_range=0.5
    )
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(cfg).double().eval()
    block = hf.transformer.h[0]
    block.ln_1, block.ln_2, block.mlp.act, hf.transformer.ln_f = (
        nn.Identity(),
        nn.Identity(),
        nn.Identity(),
        nn.Identity(),
    )
    m = mechscope.wrap(hf)
    task = random_task()
    # In one layer only the final query reaches the metric, so corrupt the final token too.
    corrupted = tuple((*c[:-1], (c[-1] + 1) % tiny.VOCAB) for c in task.corrupted)
    data = prepare(m, Task(task.name, task.clean, corrupted, task.answers, task.wrong))
    for kind in ("q", "k"):
        exact = sweep(m, data, kind, config=SweepConfig(mode="loop")).values
        star = attribution_patching(m, data, kind, qk_fix=True).values
        atp = attribution_patching(m, data, kind).values
        assert_close(star, exact, rtol=1e-9, atol=1e-9)
        assert (atp - exact).abs().max() > 1e-3
    with pytest.raises(MechscopeError, match="qk_fix"):
        attribution_patching(m, data, "heads", qk_fix=True)


def test_zero_ablation_matches_a_hand_written_hook(tiny_model):
    data = prepare(tiny_model, random_task())
    res = ablate(tiny_model, data, "mlp_out", config=SweepConfig(positions=(5,)), kind="zero")
    layer = 1

    def kill(t, hook):
        t = t.clone()
        t[:, 5] = 0
        return t

    from mechscope.tasks import LogitDiff

    logits = tiny_model.run_with_hooks(data.clean, [(f"blocks.{layer}.hook_mlp_out", kill)], logits_to_keep=1)
    expected = LogitDiff()(logits[:, -1], data).mean()
    assert res.values[layer, 0].item() == pytest.approx(expected.item(), abs=1e-5)
    assert res.ablation == "zero" and res.baseline == res.clean


def test_mean_and_resample_use_their_reference(tiny_model):
    data = prepare(tiny_model, random_task(n=3))
    other = prepare(tiny_model, random_task(n=4, seed=7))
    sites = [(Patch("blocks.0.hook_attn_out"),), (Patch("blocks.1.attn.hook_z", (slice(None), 0)),)]
    one = prepare(tiny_model, random_task(n=1, seed=9))
    # The mean over a single reference prompt is that prompt: equal to resampling from it
    # and to patching its activations in directly.
    mean1 = ablate(tiny_model, data, sites, kind="mean", reference=one).values
    res1 = ablate(tiny_model, data, sites, kind="resample", reference=one).values
    assert_close(mean1, res1, **TOL)
    names = [p.name for v in sites for p in v]
    _, ref_cache = tiny_model.run_with_cache(one.clean, names=names)
    source = {n: ref_cache[n].expand(data.n, *ref_cache[n].shape[1:]) for n in names}
    direct = patch_variants(tiny_model, data, sites, direction="noise", source=source).mean
    assert_close(mean1, direct, **TOL)
    # A different reference gives different numbers; the same seed gives the same resample.
    assert not torch.allclose(ablate(tiny_model, data, sites, kind="mean", reference=other).values, mean1)
    a = ablate(tiny_model, data, sites, kind="resample", reference=other, seed=1).values
    b = ablate(tiny_model, data, sites, kind="resample", reference=other, seed=1).values
    c = ablate(tiny_model, data, sites, kind="resample", reference=other, seed=2).values
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ablation_errors(tiny_model):
    data = prepare(tiny_model, random_task())
    with pytest.raises(MechscopeError, match="kind"):
        ablate(tiny_model, data, "heads", kind="scramble")
    short = prepare(tiny_model, random_task(width=7))
    with pytest.raises(MechscopeError, match="width"):
        ablate(tiny_model, data, "heads", kind="resample", reference=short)
    assert ablate(tiny_model, data, "mlp_out", kind="mean", reference=short).values.isfinite().all()
