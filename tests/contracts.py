"""The hook contracts of DESIGN.md section 3, as reusable checks.

Each function takes a :class:`mechscope.HookedModel` and token ids ``[batch pos]`` and
asserts one contract. Tiny random models and the real pretrained models run the same
checks.
"""

from __future__ import annotations

from functools import partial

import torch
from torch.testing import assert_close

from mechscope import HookedModel
from mechscope.models.adapters import get_path
from mechscope.models.names import parse

# Tight fp32 tolerances for values recomputed along a different (but equivalent) path.
TIGHT = dict(rtol=1e-5, atol=1e-5)
# Logits after every layer took the recomputed path (30 layers for SmolLM2): rounding accumulates.
END_TO_END = dict(rtol=1e-4, atol=1e-4)


def _site(cache, layer: int, site: str) -> torch.Tensor:
    return cache[f"blocks.{layer}.{site}"]


def on_demand(model: HookedModel) -> list[str]:
    return [n for n in model.hook_names if model.hook_info(n).on_demand]


def check_logits_match_hf(model: HookedModel, toks: torch.Tensor) -> None:
    """No hooks: bit-identical to HF. All always-on hooks cached: still bit-identical."""
    with torch.no_grad():
        ref = model.hf_model(input_ids=toks).logits
        assert torch.equal(model(toks), ref)
        logits, _ = model.run_with_cache(toks)
        assert torch.equal(logits, ref)
        # On-demand sites recompute attention explicitly: equal up to fp32 rounding.
        logits_od, _ = model.run_with_cache(toks, names=on_demand(model))
        assert_close(logits_od, ref, **END_TO_END)


def check_every_hook_fires(model: HookedModel, toks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every advertised hook fires once, with the documented shape."""
    fired: dict[str, int] = {}

    def count(t, hook):
        fired[hook.name] = fired.get(hook.name, 0) + 1

    with model.hooks([(n, count) for n in model.hook_names]), torch.no_grad():
        model(toks)
    assert fired == {n: 1 for n in model.hook_names}
    _, cache = model.run_with_cache(toks, names=model.hook_names)
    b, p = toks.shape
    sizes = {"batch": b, "pos": p, "q_pos": p, "k_pos": p}
    for name in model.hook_names:
        dims = [d.split("=") for d in model.hook_info(name).shape.split()]
        expected = tuple(int(d[1]) if len(d) == 2 else sizes[d[0]] for d in dims)
        assert tuple(cache[name].shape) == expected, name
    return dict(cache)


def check_residual_identities(model: HookedModel, cache: dict[str, torch.Tensor]) -> None:
    """resid_mid = resid_pre + attn_out; resid_post = resid_mid + mlp_out (or the parallel form)."""
    for layer in range(model.cfg.n_layers):
        c = partial(_site, cache, layer)
        pre, attn, mlp, post = (
            c("hook_resid_pre"),
            c("hook_attn_out"),
            c("hook_mlp_out"),
            c("hook_resid_post"),
        )
        if model.cfg.parallel_attn_mlp:
            assert torch.equal(post, mlp + attn + pre)
            assert torch.equal(c("hook_mlp_in"), pre)
        else:
            mid = c("hook_resid_mid")
            assert torch.equal(mid, pre + attn)
            assert torch.equal(post, mid + mlp)
            assert torch.equal(c("hook_mlp_in"), mid)
        if layer + 1 < model.cfg.n_layers:
            assert torch.equal(post, cache[f"blocks.{layer + 1}.hook_resid_pre"])


def check_component_reconstructions(model: HookedModel, toks: torch.Tensor) -> None:
    """Each site equals what the HF submodules compute from the site before it.

    Uses a run without on-demand sites, so every comparison is exact; the per-head
    results come from a second run that asks for them.
    """
    a, hf = model.adapter, model.hf_model
    layers = get_path(hf, a.layers)
    _, cache = model.run_with_cache(toks)
    _, results = model.run_with_cache(toks, names=lambda n: n.endswith("hook_result") or n.endswith("hook_z"))
    with torch.no_grad():
        for layer in range(model.cfg.n_layers):
            blk = layers[layer]
            c = partial(_site, cache, layer)
            attn = get_path(blk, a.attn)
            # ln1 and ln2 read resid_pre / mlp_in
            assert torch.equal(c("ln1.hook_normalized"), get_path(blk, a.ln1)(c("hook_resid_pre")))
            assert torch.equal(c("ln2.hook_normalized"), get_path(blk, a.ln2)(c("hook_mlp_in")))
            # z through the output projection (and any post-attention norm) is attn_out
            z = c("attn.hook_z")
            out = get_path(attn, a.o_proj)(z.flatten(-2))
            if a.post_attn_norm:
                out = get_path(blk, a.post_attn_norm)(out)
            assert torch.equal(out, c("hook_attn_out"))
            # per-head results sum (plus bias) to the projection's output
            o_proj = get_path(attn, a.o_proj)
            r = partial(_site, results, layer)
            summed = r("attn.hook_result").sum(2) + (o_proj.bias if o_proj.bias is not None else 0)
            assert_close(summed, o_proj(r("attn.hook_z").flatten(-2)), **TIGHT)
            # hook_post through the down projection is the MLP's output
            mlp = get_path(blk, a.mlp)
            m = get_path(mlp, a.mlp_down)(c("mlp.hook_post"))
            if a.post_mlp_norm:
                m = get_path(blk, a.post_mlp_norm)(m)
            assert torch.equal(m, c("hook_mlp_out"))
        final = get_path(hf, a.final_norm)(cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"])
        assert torch.equal(final, cache["ln_final.hook_normalized"])


def check_attention(
    model: HookedModel, cache: dict[str, torch.Tensor], window: dict[int, int | None]
) -> None:
    """Pattern = softmax(scores); causal (and windowed) zeros; pattern @ v = z."""
    rep = model.cfg.n_heads // model.cfg.n_kv_heads
    for layer in range(model.cfg.n_layers):
        c = partial(_site, cache, layer)
        scores, pattern = c("attn.hook_attn_scores"), c("attn.hook_pattern")
        assert_close(torch.softmax(scores, -1), pattern, **TIGHT)
        p = pattern.shape[-1]
        q_idx = torch.arange(p)[:, None]
        k_idx = torch.arange(p)[None, :]
        allowed = k_idx <= q_idx
        if window.get(layer):
            allowed &= q_idx - k_idx < window[layer]
        assert torch.all(pattern[..., ~allowed] == 0)
        assert torch.all(scores[..., ~allowed] == float("-inf"))
        assert_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)), **TIGHT)
        v = c("attn.hook_v").repeat_interleave(rep, dim=2)  # [batch pos head d_head]
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        assert_close(z, c("attn.hook_z"), **TIGHT)


def check_writes(model: HookedModel, toks: torch.Tensor, chunk: int = 64) -> None:
    """A perturbation through any hook changes the logits; writing back what was read changes nothing.

    Row ``i`` of a batch of copies of the prompt is perturbed at hook ``i`` only, so one
    forward pass tests many hooks (and that batch rows do not leak into each other).
    """
    prompt = toks[:1]
    names = model.hook_names
    with torch.no_grad():
        base = model(prompt)[0]
        for start in range(0, len(names), chunk):
            group = names[start : start + chunk]
            hooks = [(name, _perturb_row(i)) for i, name in enumerate(group)]
            logits = model.run_with_hooks(prompt.repeat(len(group), 1), hooks)
            for i, name in enumerate(group):
                assert (logits[i] - base).abs().max() > 1e-4, f"writing {name} did not change the logits"
        # Identity writes: returning a copy, or editing nothing in place, leaves logits unchanged.
        always = [n for n in names if not model.hook_info(n).on_demand]
        same = model.run_with_hooks(prompt, [(n, lambda t, h: t.clone()) for n in always])
        assert torch.equal(same[0], base)
        od = on_demand(model)
        read_only = model.run_with_hooks(prompt, [(n, lambda t, h: None) for n in od])
        rewritten = model.run_with_hooks(prompt, [(n, lambda t, h: t.clone()) for n in od])
        assert torch.equal(read_only, rewritten)


def _perturb_row(row: int):
    def fn(t: torch.Tensor, hook) -> torch.Tensor:
        t = t.clone()
        gen = torch.Generator().manual_seed(row)
        noise = torch.randn(t[row].shape, generator=gen).to(t)
        _, site = parse(hook.name)
        scale = 0.3 if "pattern" in site else t[row][t[row].isfinite()].abs().mean().clamp(min=1.0)
        t[row] = t[row] + noise * scale
        return t

    return fn


def greedy_reference(model: HookedModel, toks: torch.Tensor, n: int) -> torch.Tensor:
    """Greedy decoding by repeated full forward passes (no KV cache): the reference for generate."""
    out = toks.clone()
    with torch.no_grad():
        for _ in range(n):
            nxt = model(out)[:, -1].argmax(-1, keepdim=True)
            out = torch.cat([out, nxt], dim=1)
    return out


def check_generate(model: HookedModel, toks: torch.Tensor, n: int = 6) -> None:
    """Greedy generate equals HF's generate and a no-cache argmax loop, with and without hooks."""
    from transformers import GenerationConfig

    prompt = toks[:1]
    ours = model.generate(prompt, max_new_tokens=n, stop_at_eos=False)
    gen = GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=[], pad_token_id=0)
    with torch.no_grad():
        theirs = model.hf_model.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), generation_config=gen
        )
    assert torch.equal(ours, theirs)
    assert torch.equal(ours, greedy_reference(model, prompt, n))
    # A position-independent edit, applied during cached generation, matches the loop under the same edit.
    mid = model.cfg.n_layers // 2
    hook = (f"blocks.{mid}.hook_resid_post", lambda t, h: t * 0.5)
    hooked = model.generate(prompt, max_new_tokens=n, stop_at_eos=False, fwd_hooks=[hook])
    with model.hooks([hook]):
        assert torch.equal(hooked, greedy_reference(model, prompt, n))
