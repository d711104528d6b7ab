"""Split attention inputs (per-head q/k/v receivers) and the hook_attn_in branch site, on every family."""

from __future__ import annotations

import torch

from mechscope.models.runtime import RunState
from mechscope.models.split import SplitAttention


def _tokens(model, n=2, pos=7, seed=0):
    return torch.randint(3, model.cfg.d_vocab, (n, pos), generator=torch.Generator().manual_seed(seed))


def _run(model, tokens, state, names):
    """Logits and the activations at ``names`` under extra runtime state."""
    store = {}

    def keep(t, hook):
        store[hook.name] = t.detach().clone()

    for name in names:
        state.fwd.setdefault(name, []).append(keep)
    with torch.no_grad(), model._rt.active(state):
        logits = model.hf_model(input_ids=tokens).logits
    return logits, store


def test_identical_copies_are_the_plain_forward(tiny_model):
    model, layer = tiny_model, 1
    tokens = _tokens(model)
    h, kv = model.cfg.n_heads, model.cfg.n_kv_heads
    split = SplitAttention(
        inputs=lambda x: x[:, None].expand(-1, 3, -1, -1),
        q_copy=torch.arange(h) % 3,
        k_copy=torch.full((kv,), 1),
        v_copy=torch.full((kv,), 2),
    )
    with torch.no_grad():
        ref = model.hf_model(input_ids=tokens).logits
    logits, _ = _run(model, tokens, RunState(split_attn={layer: split}), [])
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)


def test_each_head_reads_its_own_copy(tiny_model):
    """Head 0's query reads a shifted input: its q equals a plain run on that input; other heads are untouched."""
    model, layer = tiny_model, 1
    tokens = _tokens(model)
    q_name, k_name = f"blocks.{layer}.attn.hook_q", f"blocks.{layer}.attn.hook_k"
    shift = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))

    def shifted(x, hook):
        return x + shift

    _, plain = _run(model, tokens, RunState(), [q_name, k_name])
    _, moved = _run(
        model, tokens, RunState(fwd={f"blocks.{layer}.hook_attn_in": [shifted]}), [q_name, k_name]
    )
    h, kv = model.cfg.n_heads, model.cfg.n_kv_heads
    q_copy = torch.zeros(h, dtype=torch.long)
    q_copy[0] = 1
    split = SplitAttention(
        inputs=lambda x: torch.stack([x, x + shift], dim=1),
        q_copy=q_copy,
        k_copy=torch.zeros(kv, dtype=torch.long),
        v_copy=torch.zeros(kv, dtype=torch.long),
    )
    logits, got = _run(model, tokens, RunState(split_attn={layer: split}), [q_name, k_name])
    torch.testing.assert_close(got[q_name][:, :, 0], moved[q_name][:, :, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[q_name][:, :, 1:], plain[q_name][:, :, 1:], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got[k_name], plain[k_name], atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        ref = model.hf_model(input_ids=tokens).logits
    assert (logits - ref).abs().max() > 1e-4  # the changed query changed the output


def test_attn_in_writes_only_the_attention_branch(tiny_model):
    """Shifting hook_attn_in changes what attention adds, while resid_pre (the skip connection) is unchanged."""
    model, layer = tiny_model, 1
    tokens = _tokens(model)
    pre = f"blocks.{layer}.hook_resid_pre"
    shift = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(2))

    def double(x, hook):  # a shift: norms would undo a pure rescaling
        return x + shift

    _, plain = _run(model, tokens, RunState(), [pre, f"blocks.{layer}.hook_attn_out"])
    _, got = _run(
        model,
        tokens,
        RunState(fwd={f"blocks.{layer}.hook_attn_in": [double]}),
        [pre, f"blocks.{layer}.hook_attn_out"],
    )
    torch.testing.assert_close(got[pre], plain[pre])
    assert (got[f"blocks.{layer}.hook_attn_out"] - plain[f"blocks.{layer}.hook_attn_out"]).abs().max() > 1e-4
