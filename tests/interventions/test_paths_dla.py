"""Path patching and direct logit attribution against hand computations."""

from __future__ import annotations

import pytest
import torch
from test_patching import random_task
from torch.testing import assert_close

import mechscope
import tiny
from mechscope.errors import MechscopeError
from mechscope.interventions import SweepConfig, sweep
from mechscope.interventions.dla import (
    direct_logit_attribution,
    frozen_norm,
    logit_diff_direction,
    logit_diff_lens,
)
from mechscope.interventions.path_patching import Receiver, path_patch
from mechscope.models.adapters import get_path
from mechscope.tasks import LogitDiff, prepare

TOL = dict(rtol=1e-5, atol=1e-5)


def test_direct_path_to_logits_is_the_heads_own_contribution(tiny_model):
    """Other heads and MLPs frozen: the final stream moves by exactly the sender's output change."""
    m = tiny_model
    data = prepare(m, random_task())
    res = path_patch(m, data, "logits", freeze_mlps=True)
    n_layers, n_heads = m.cfg.n_layers, m.cfg.n_heads
    assert res.shape == (n_layers, n_heads)
    names = [f"blocks.{i}.attn.hook_z" for i in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]
    _, tgt = m.run_with_cache(data.clean, names=names)
    _, src = m.run_with_cache(data.corrupted, names=names)
    for layer in range(n_layers):
        if m.adapter.post_attn_norm:  # Gemma: a head's output passes a nonlinear norm first
            break
        for head in range(n_heads):
            z = f"blocks.{layer}.attn.hook_z"
            delta = torch.einsum("bpd,dm->bpm", src[z][:, :, head] - tgt[z][:, :, head], m.W_O(layer)[head])
            final = tgt[f"blocks.{n_layers - 1}.hook_resid_post"][:, -1] + delta[:, -1]
            expected = LogitDiff()(m.unembed(final), data).mean()
            assert res.values[layer, head].item() == pytest.approx(expected.item(), abs=1e-4)


def test_one_layer_path_patching_is_activation_patching(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(
        vocab_size=tiny.VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.3,
    )
    torch.manual_seed(1)
    m = mechscope.wrap(AutoModelForCausalLM.from_config(cfg).eval())
    data = prepare(m, random_task())
    paths = path_patch(m, data, "logits")
    exact = sweep(m, data, "heads", config=SweepConfig(direction="noise"))
    assert_close(paths.values, exact.values, **TOL)


def test_receivers_before_the_sender_see_nothing(tiny_model):
    m = tiny_model
    data = prepare(m, random_task())
    last = m.cfg.n_layers - 1
    res = path_patch(m, data, [Receiver(0, 0, "q"), Receiver(0, 0, "k")], senders=[(last, 0), (last, 1)])
    assert_close(res.values, torch.full_like(res.values, res.clean), **TOL)
    with pytest.raises(MechscopeError, match="does not exist"):
        path_patch(m, data, [Receiver(0, 99, "q")])


def test_dla_components_sum_to_the_logit_difference(tiny_model):
    m = tiny_model
    data = prepare(m, random_task())
    res = direct_logit_attribution(m, data)
    assert res.axes[0].labels[0] == "embed" and res.axes[0].labels[-1] == "bias"
    total = res.per_example.sum(0)
    if not m.adapter.final_logit_softcap:  # soft-capped logits are not a sum of parts
        with torch.no_grad():
            expected = LogitDiff()(m(data.clean, logits_to_keep=1)[:, -1], data)
        assert_close(total, expected, **TOL)
    assert total.mean().item() == pytest.approx(res.clean, abs=1e-5)
    lens = logit_diff_lens(m, data)
    assert lens.values[-1].item() == pytest.approx(
        LogitDiff()(m(data.clean, logits_to_keep=1)[:, -1].detach(), data).mean().item(), abs=1e-4
    )


def test_dla_per_head_sums_to_attention_output(tiny_model):
    m = tiny_model
    data = prepare(m, random_task())
    if m.adapter.post_attn_norm:
        with pytest.raises(MechscopeError, match="post-attention norm"):
            direct_logit_attribution(m, data, by="head")
        return
    heads = direct_logit_attribution(m, data, by="head")
    comps = direct_logit_attribution(m, data)
    labels = list(comps.axes[0].labels)
    _, cache = m.run_with_cache(data.clean, names=[f"blocks.{m.cfg.n_layers - 1}.hook_resid_post"])
    resid = cache[f"blocks.{m.cfg.n_layers - 1}.hook_resid_post"][:, -1]
    direction = logit_diff_direction(m, data)
    for layer in range(m.cfg.n_layers):
        o_proj = get_path(m.blocks[layer], m.adapter.attn + "." + m.adapter.o_proj)
        bias = 0.0
        if o_proj.bias is not None:
            bias = (frozen_norm(m, o_proj.bias.expand_as(resid), resid) * direction).sum(-1).mean().item()
        attn = comps.values[labels.index(f"L{layer} attn")].item()
        assert heads.values[layer].sum().item() + bias == pytest.approx(attn, abs=1e-4)
