"""The patching engine: its three modes agree, and patching means what it should."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import tiny
from mechscope.errors import MechscopeError, UnknownHookError
from mechscope.interventions import Patch, PatchResult, SweepConfig, patch_variants, sweep
from mechscope.tasks import Task, prepare

# fp32 rounding only: batched and suffix runs feed kernels differently shaped inputs
TOL = dict(rtol=1e-5, atol=1e-5)


def random_task(n: int = 3, width: int = 9, seed: int = 0, same: bool = False) -> Task:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(4, tiny.VOCAB, (n, width), generator=g)
    corrupted = clean.clone()
    if not same:
        corrupted[:, 3] = torch.randint(4, tiny.VOCAB, (n,), generator=g)
        corrupted[:, 6] = torch.randint(4, tiny.VOCAB, (n,), generator=g)
    ids = lambda t: tuple(tuple(r) for r in t.tolist())  # noqa: E731
    return Task("random", ids(clean), ids(corrupted), tuple(range(5, 5 + n)), tuple(range(20, 20 + n)))


def mixed_variants(model) -> list[tuple[Patch, ...]]:
    c = model.cfg
    last = c.n_layers - 1
    return [
        (),
        (Patch("blocks.0.hook_resid_pre", (3,)),),
        (Patch(f"blocks.{last}.hook_resid_pre", (6,)),),
        (Patch("blocks.1.attn.hook_z", (slice(None), c.n_heads - 1)),),
        (Patch("blocks.0.attn.hook_z", (4, 0)),),
        (Patch(f"blocks.{last}.attn.hook_k", (slice(None), c.n_kv_heads - 1)),),
        (Patch("blocks.1.attn.hook_v", (6, 0)),),
        (Patch("blocks.0.attn.hook_q", (slice(5, None), 1)),),
        (Patch("blocks.1.attn.hook_pattern", (0,)),),
        (Patch(f"blocks.{last}.mlp.hook_post", (slice(None), 3)),),
        (Patch(f"blocks.{last}.hook_mlp_out", (8,)),),
        (Patch("hook_embed", (3,)),),
        (Patch("blocks.1.hook_attn_out", (slice(None),)), Patch("blocks.0.mlp.hook_pre", (6, 2))),
        (Patch("blocks.1.hook_attn_out", (6,)),),  # joins after block 1's attention
        (Patch(f"blocks.{last}.attn.hook_z", (slice(None), 0)),),  # joins the final, trimmed block
        (Patch("blocks.0.hook_resid_pre", (1,)),),  # clean == corrupted there: changes nothing
    ]


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_modes_agree(tiny_model, direction):
    data = prepare(tiny_model, random_task())
    variants = mixed_variants(tiny_model)
    runs = {
        m: patch_variants(tiny_model, data, variants, "logit_diff", direction=direction, mode=m)
        for m in ("loop", "batched", "fast")
    }
    assert_close(runs["batched"].values, runs["loop"].values, **TOL)
    assert_close(runs["fast"].values, runs["loop"].values, **TOL)
    baseline = runs["loop"].corrupted if direction == "denoise" else runs["loop"].clean
    for run in runs.values():
        assert_close(run.values[0], baseline, **TOL)  # the empty variant is the target's own run
        assert_close(run.values[-1], baseline, **TOL)  # a patch that changes nothing
    # fast mode does not even run those: it returns the target run's own values
    assert torch.equal(runs["fast"].values[0], baseline) and torch.equal(runs["fast"].values[-1], baseline)


def test_small_memory_budget_chunks_without_changing_results(tiny_model):
    data = prepare(tiny_model, random_task())
    variants = mixed_variants(tiny_model)
    one = patch_variants(tiny_model, data, variants, mode="fast")
    tiny_chunks = patch_variants(tiny_model, data, variants, mode="fast", memory_budget_mb=0)
    assert_close(tiny_chunks.values, one.values, **TOL)


def test_patching_a_whole_layer_restores_the_clean_run(tiny_model):
    data = prepare(tiny_model, random_task())
    n = tiny_model.cfg.n_layers
    variants = [(Patch(f"blocks.{layer}.hook_resid_pre"),) for layer in range(n)]
    variants.append((Patch(f"blocks.{n - 1}.hook_resid_post"),))
    for mode in ("fast", "loop"):
        run = patch_variants(tiny_model, data, variants, "logit_diff", mode=mode)
        assert_close(run.values, run.clean.expand_as(run.values), **TOL)
        noised = patch_variants(tiny_model, data, variants, "logit_diff", mode=mode, direction="noise")
        assert_close(noised.values, noised.corrupted.expand_as(noised.values), **TOL)


def test_identical_inputs_change_nothing(tiny_model):
    data = prepare(tiny_model, random_task(same=True))
    fast = patch_variants(tiny_model, data, mixed_variants(tiny_model), direction="noise", mode="fast")
    assert torch.equal(fast.values, fast.clean.expand_as(fast.values))  # every patch is recognised as a no-op
    batched = patch_variants(tiny_model, data, mixed_variants(tiny_model), direction="noise", mode="batched")
    assert_close(batched.values, batched.clean.expand_as(batched.values), **TOL)


def test_sweep_matches_the_loop_and_labels_axes(tiny_model):
    data = prepare(tiny_model, random_task())
    fast = sweep(tiny_model, data, "resid_pre")
    loop = sweep(tiny_model, data, "resid_pre", config=SweepConfig(mode="loop"))
    assert fast.shape == (tiny_model.cfg.n_layers, data.width)
    assert_close(fast.values, loop.values, **TOL)
    assert [a.name for a in fast.axes] == ["layer", "pos"]
    assert fast.axes[1].labels[3].startswith("3: ")
    heads = sweep(tiny_model, data, "heads_by_pos", config=SweepConfig(layers=(0,), positions=(3, -1)))
    assert heads.shape == (1, 2, tiny_model.cfg.n_heads) and heads.axes[1].labels[1].startswith(
        f"{data.width - 1}: "
    )
    kv = sweep(tiny_model, data, "k")
    assert kv.shape == (tiny_model.cfg.n_layers, tiny_model.cfg.n_kv_heads)


def test_every_named_sweep_runs(tiny_model):
    from mechscope.interventions import SWEEPS

    data = prepare(tiny_model, random_task(n=2))
    cfg = SweepConfig(layers=(0,), neurons=(0, 5))
    for kind in SWEEPS:
        if kind == "resid_mid" and tiny_model.cfg.parallel_attn_mlp:
            with pytest.raises(UnknownHookError, match="no 'hook_resid_mid' site"):
                sweep(tiny_model, data, kind, config=cfg)
            continue
        r = sweep(tiny_model, data, kind, config=cfg)
        assert r.values.isfinite().all(), kind
        assert r.per_example is not None and r.per_example.shape == (*r.shape, 2)


def test_result_round_trip(tiny_model, tmp_path):
    data = prepare(tiny_model, random_task())
    r = sweep(tiny_model, data, "heads")
    r.save(tmp_path / "res")
    back = PatchResult.load(tmp_path / "res")
    assert torch.equal(back.values, r.values) and back.axes == r.axes and back.metric == r.metric
    assert back.per_example is not None and torch.equal(back.per_example, r.per_example)
    assert back.top(3) == r.top(3)
    (tmp_path / "res" / "values.safetensors").write_bytes(b"garbage")
    from mechscope.errors import ArtifactError

    with pytest.raises(ArtifactError, match="corrupt"):
        PatchResult.load(tmp_path / "res")


def test_bad_sites_and_options(tiny_model):
    data = prepare(tiny_model, random_task())
    with pytest.raises(UnknownHookError, match="did you mean"):
        patch_variants(tiny_model, data, [(Patch("blocks.0.hook_resid_pr", (1,)),)])
    with pytest.raises(MechscopeError, match="out of range"):
        patch_variants(tiny_model, data, [(Patch("blocks.0.hook_resid_pre", (99,)),)])
    with pytest.raises(MechscopeError, match="indices"):
        patch_variants(tiny_model, data, [(Patch("blocks.0.hook_resid_pre", (1, 2, 3)),)])
    with pytest.raises(MechscopeError, match="direction"):
        patch_variants(tiny_model, data, [], direction="sideways")
    with pytest.raises(MechscopeError, match="unknown sweep"):
        sweep(tiny_model, data, "everything")
