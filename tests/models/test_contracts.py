"""Hook contracts on a tiny random model of every supported family (MHA, GQA, MQA, parallel)."""

from __future__ import annotations

import torch

import tiny
from conftest import windows
from contracts import (
    check_attention,
    check_component_reconstructions,
    check_every_hook_fires,
    check_generate,
    check_logits_match_hf,
    check_residual_identities,
    check_writes,
)


def _toks(seed: int = 0, batch: int = 2, pos: int = 9) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, tiny.VOCAB, (batch, pos), generator=g)


def test_logits_match_hf(tiny_model):
    check_logits_match_hf(tiny_model, _toks())


def test_hooks_fire_with_shapes_and_identities(tiny_model):
    cache = check_every_hook_fires(tiny_model, _toks())
    check_residual_identities(tiny_model, cache)
    check_component_reconstructions(tiny_model, _toks())
    check_attention(tiny_model, cache, windows(tiny_model))


def test_writes_take_effect(tiny_model):
    check_writes(tiny_model, _toks())


def test_generate_matches_hf_and_argmax_loop(tiny_model):
    check_generate(tiny_model, _toks(1, 1, 5))
