"""A padded batch gives every prompt exactly what its unbatched run gives (left and right padding)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

PROMPTS = ["def add(a, b):", "The class", "import os, sys and then the rest of the module"]
SITES = [
    "blocks.1.hook_resid_post",
    "blocks.0.attn.hook_z",
    "blocks.1.mlp.hook_post",
    "ln_final.hook_normalized",
]
# Padding changes which SDPA kernel runs (masked vs is_causal), so sums are reordered: fp32 rounding only.
TOL = dict(rtol=1e-4, atol=1e-4)


def check_padding_equivalence(model, prompts, side: str, sites=SITES) -> None:
    batch = model.tokenize(prompts, padding_side=side)
    assert batch.is_padded
    pattern = "blocks.0.attn.hook_pattern"
    logits, cache = model.run_with_cache(batch, names=[*sites, pattern])
    width = batch.tokens.shape[1]
    for i, prompt in enumerate(prompts):
        n = int(batch.lengths[i])
        real = slice(width - n, width) if side == "left" else slice(0, n)
        one_logits, one = model.run_with_cache(prompt, names=[*sites, pattern])
        assert torch.equal(batch.tokens[i, real], model.to_tokens(prompt)[0])
        assert_close(logits[i, real], one_logits[0], **TOL)
        for name in sites:
            assert_close(cache[name][i, real], one[name][0], **TOL)
        p = cache[pattern][i][:, real, :]  # [head, q, k] for real queries
        assert_close(p[..., real], one[pattern][0], **TOL)
        assert torch.all(p.sum(-1)[..., None].isclose(torch.tensor(1.0)))  # no mass on padding


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_equals_unbatched(tiny_model, side):
    check_padding_equivalence(tiny_model, PROMPTS, side)


def test_batched_generation_equals_single(tiny_model):
    m = tiny_model
    together = m.generate(PROMPTS[:2], max_new_tokens=4, stop_at_eos=False)
    alone = [m.generate(p, max_new_tokens=4, stop_at_eos=False) for p in PROMPTS[:2]]
    assert together == alone


def test_last_positions(tiny_model):
    m = tiny_model
    for side in ("left", "right"):
        batch = m.tokenize(PROMPTS, padding_side=side)
        last = batch.tokens[torch.arange(len(PROMPTS)), batch.last_positions]
        assert last.tolist() == [m.to_tokens(p)[0, -1].item() for p in PROMPTS]


def test_ragged_token_lists_are_padded(tiny_model):
    m = tiny_model
    ids = [m.to_tokens(p)[0].tolist() for p in PROMPTS]
    with torch.no_grad():
        assert torch.equal(m(ids), m(PROMPTS))
