"""What writes, scopes, gradients and early stopping mean, checked against direct computation."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import mechscope
import tiny
from mechscope.models import runtime
from mechscope.models.adapters import get_path


def _toks(batch: int = 2, pos: int = 8, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, tiny.VOCAB, (batch, pos), generator=g)


def test_mlp_in_write_changes_only_the_mlp_branch(tiny_model):
    m, toks, layer = tiny_model, _toks(), 1
    _, clean = m.run_with_cache(toks)

    def zero_in_place(t, hook):
        t.zero_()  # in-place edit, returning None

    _, hooked = m.run_with_cache(toks, fwd_hooks=[(f"blocks.{layer}.hook_mlp_in", zero_in_place)])
    branch_in = "hook_resid_pre" if m.cfg.parallel_attn_mlp else "hook_resid_mid"
    # The residual the MLP was reading from is untouched...
    assert torch.equal(hooked[f"blocks.{layer}.{branch_in}"], clean[f"blocks.{layer}.{branch_in}"])
    # ...while the MLP saw zeros.
    blk = get_path(m.hf_model, m.adapter.layers)[layer]
    with torch.no_grad():
        expected = get_path(blk, m.adapter.mlp)(
            get_path(blk, m.adapter.ln2)(torch.zeros_like(clean[f"blocks.{layer}.hook_mlp_in"]))
        )
        if m.adapter.post_mlp_norm:
            expected = get_path(blk, m.adapter.post_mlp_norm)(expected)
    assert torch.equal(hooked[f"blocks.{layer}.hook_mlp_out"], expected)


def test_resid_mid_write_reaches_mlp_and_residual(tiny_model):
    m, toks, layer = tiny_model, _toks(), 0
    if m.cfg.parallel_attn_mlp:
        assert f"blocks.{layer}.hook_resid_mid" not in m.hook_names
        return
    new = torch.randn(*toks.shape, m.cfg.d_model, generator=torch.Generator().manual_seed(0))
    _, c = m.run_with_cache(toks, fwd_hooks=[(f"blocks.{layer}.hook_resid_mid", lambda t, h: new.clone())])
    assert torch.equal(c[f"blocks.{layer}.hook_mlp_in"], new)
    assert torch.equal(c[f"blocks.{layer}.hook_resid_post"], new + c[f"blocks.{layer}.hook_mlp_out"])


def test_in_place_edit_equals_returned_tensor(tiny_model):
    m, toks = tiny_model, _toks()
    name = "blocks.1.hook_resid_pre"

    def halve_in_place(t, hook):
        t.mul_(0.5)

    with torch.no_grad():
        a = m.run_with_hooks(toks, [(name, halve_in_place)])
        b = m.run_with_hooks(toks, [(name, lambda t, h: t * 0.5)])
    assert torch.equal(a, b)


def test_hooks_are_removed_even_on_error(tiny_model):
    m, toks = tiny_model, _toks()

    def boom(t, hook):
        raise RuntimeError("inside hook")

    with pytest.raises(RuntimeError, match="inside hook"):
        m.run_with_hooks(
            toks, [("blocks.1.mlp.hook_post", boom), ("blocks.0.attn.hook_pattern", lambda t, h: None)]
        )
    _assert_clean(m)
    with (
        pytest.raises(RuntimeError, match="outside"),
        m.hooks([("blocks.0.hook_resid_pre", lambda t, h: None)]),
    ):
        raise RuntimeError("outside")
    _assert_clean(m)
    with torch.no_grad():
        assert torch.equal(m(toks), m.hf_model(input_ids=toks).logits)


def _assert_clean(m):
    for layer in get_path(m.hf_model, m.adapter.layers):
        assert "forward" not in layer.__dict__
    for mod in m.hf_model.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks
    assert not m.hf_model.config._attn_implementation.startswith("mechscope")
    assert not runtime._SITES
    assert m._rt.state.fwd == {} and m._rt._depth == 0


def test_nested_hook_contexts_compose_and_unwind(tiny_model):
    m, toks = tiny_model, _toks()
    seen = []
    outer = ("blocks.0.hook_resid_post", lambda t, h: seen.append("outer"))
    inner = ("blocks.0.hook_resid_post", lambda t, h: seen.append("inner"))
    with m.hooks([outer]):
        with m.hooks([inner]):
            m(toks)
        assert seen == ["outer", "inner"]
        m(toks)
        assert seen == ["outer", "inner", "outer"]
        # hf_model itself runs with the hooks inside the context
        m.hf_model(input_ids=toks)
        assert seen[-1] == "outer"
    _assert_clean(m)


def test_backward_hooks_see_the_true_gradient(tiny_model):
    m, toks = tiny_model, _toks(1)
    name = "blocks.1.hook_resid_pre"
    got = {}

    def grab(g, hook):
        got["g"] = g.clone()

    logits, cache = m.run_with_cache(toks, names=[name], grad=True)
    (ref,) = torch.autograd.grad(logits[0, -1].logsumexp(-1), cache[name])
    with m.hooks(bwd_hooks=[(name, grab)]):
        m(toks)[0, -1].logsumexp(-1).backward()
    assert_close(got["g"], ref)
    m.hf_model.zero_grad(set_to_none=True)
    # A replaced gradient propagates: zeroing it at resid_pre 0 zeroes it at the embedding.
    zero = [("blocks.0.hook_resid_pre", lambda g, h: torch.zeros_like(g)), ("hook_embed", grab)]
    with m.hooks(bwd_hooks=zero):
        m(toks)[0, -1].logsumexp(-1).backward()
    assert got["g"].shape == (*toks.shape, m.cfg.d_model) and torch.count_nonzero(got["g"]) == 0
    m.hf_model.zero_grad(set_to_none=True)


def test_stop_at_layer(tiny_model):
    m, toks = tiny_model, _toks()
    _, full = m.run_with_cache(toks)
    logits, part = m.run_with_cache(toks, stop_at_layer=1)
    assert logits is None
    assert torch.equal(part["blocks.1.hook_resid_pre"], full["blocks.1.hook_resid_pre"])
    assert "blocks.1.hook_attn_out" not in part and "ln_final.hook_normalized" not in part
    fired = []
    logits, c = m.run_with_cache(
        toks,
        names=["blocks.0.hook_mlp_out"],
        return_logits=False,
        fwd_hooks=[(f"blocks.{m.cfg.n_layers - 1}.hook_attn_out", lambda t, h: fired.append(1))],
    )
    assert (
        logits is None
        and not fired
        and torch.equal(c["blocks.0.hook_mlp_out"], full["blocks.0.hook_mlp_out"])
    )


def test_patterns_are_computed_only_when_asked(tiny_model, monkeypatch):
    m, toks = tiny_model, _toks()
    calls = []
    real = runtime._explicit_attention
    monkeypatch.setattr(runtime, "_explicit_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    m.run_with_cache(toks)  # everything except on-demand sites
    assert calls == []
    m.run_with_cache(toks, names=["blocks.1.attn.hook_pattern"])
    assert calls == [1]  # only the layer that was asked for
    m.run_with_cache(toks, names=["blocks.0.hook_resid_pre"])
    assert calls == [1]


def test_cache_helpers(tiny_model):
    m, toks = tiny_model, _toks()
    logits, c = m.run_with_cache(toks)
    assert c["resid_pre", 1] is c["blocks.1.hook_resid_pre"]
    assert c.stack("resid_post").shape == (m.cfg.n_layers, *toks.shape, m.cfg.d_model)
    acc = c.accumulated_resid()
    assert acc.shape[0] == m.cfg.n_layers + 1
    assert torch.equal(m.unembed(acc[-1]), logits)  # the logit lens's last layer is the model
    with pytest.raises(KeyError, match="on demand"):
        c["blocks.0.attn.hook_pattern"]
    with pytest.raises(KeyError, match="did you mean"):
        c["blocks.0.hook_resid_prе"]


def test_hook_names_documented(tiny_model):
    m = tiny_model
    from mechscope.models.names import SITES, parse

    for n in m.hook_names:
        assert parse(n)[1] in SITES
        assert m.hook_info(n).meaning
    assert ("blocks.0.hook_resid_mid" in m.hook_names) != m.cfg.parallel_attn_mlp
    assert ("blocks.0.mlp.hook_pre_linear" in m.hook_names) == m.cfg.gated_mlp
    assert mechscope.hook_name("q", 2) == "blocks.2.attn.hook_q"
    assert mechscope.hook_name("embed") == "hook_embed"
