"""Attribution patching: a first-order estimate of every patching effect at once.

AtP (Nanda 2023; Syed, Rager & Conmy 2023), for denoising (noising swaps the roles):

1. Run the clean prompts and record the activation ``a_clean`` at every site.
2. Run the corrupted prompts, recording ``a_corr``, and backpropagate the metric ``M``
   (summed over examples, so each example's gradient is its own) to those sites.
3. Estimate patching site ``s``: ``M(patched) ≈ M(corr) + Σ_s (a_clean − a_corr) · ∂M/∂a``,
   the sum running over the patched slice. Two forward passes and one backward pass
   cover every site of every sweep.

The linear estimate is exact when the model is linear in the patched activation (it is
tested against exact patching on a model with its nonlinearities removed and attention
patterns frozen). It is poor where attention saturates. ``qk_fix=True`` applies AtP*'s
remedy (Kramár et al. 2024) to query and key sites: the attention pattern is recomputed
exactly with the patched queries (or keys), ``Δpattern = softmax(q' k) − softmax(q k)``,
and only the step from the pattern to the metric is linearised:
``ΔM ≈ Σ Δpattern · ∂M/∂pattern``.

Results report the estimated metric (``M(corr) + estimate``), so they read exactly like
activation-patching results and can be compared cell by cell.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from ..errors import MechscopeError
from ..models import HookedModel
from ..models.adapters import get_path
from ..tasks import Metric, PreparedTask, Task, make_metric, prepare
from .results import PatchResult
from .sites import Patch, Variant, normalize
from .sweeps import SWEEPS, SweepConfig, run_info


def attribution_patching(
    model: HookedModel,
    task: Task | PreparedTask,
    kind: str,
    *,
    metric: str | Metric | None = None,
    direction: str = "denoise",
    qk_fix: bool = False,
    config: SweepConfig | None = None,
) -> PatchResult:
    """AtP (or, with ``qk_fix``, AtP*'s query/key fix) over every site of sweep ``kind``."""
    if kind not in SWEEPS:
        raise MechscopeError(f"unknown sweep {kind!r}; choose one of {', '.join(SWEEPS)}")
    if direction not in ("denoise", "noise"):
        raise MechscopeError(f"direction must be 'denoise' or 'noise', not {direction!r}")
    cfg = config or SweepConfig()
    data = task if isinstance(task, PreparedTask) else prepare(model, task)
    m = make_metric(metric or data.task.metric, model, data)
    variants, axes = SWEEPS[kind](model, data, cfg)
    names = sorted({p.name for v in variants for p in v})
    fix = qk_fix and kind in ("q", "k")
    if qk_fix and not fix:
        raise MechscopeError(
            "qk_fix applies to the 'q' and 'k' sweeps (sites that act through the attention pattern)"
        )
    start = time.perf_counter()
    target, source = (data.corrupted, data.clean) if direction == "denoise" else (data.clean, data.corrupted)
    layers = sorted({p.layer for v in variants for p in v if p.layer is not None})
    extra = [
        f"blocks.{i}.attn.{s}"
        for i in layers
        for s in ("hook_q", "hook_k", "hook_attn_scores", "hook_pattern")
    ]
    read = sorted(set(names) | set(extra)) if fix else names
    with torch.no_grad():
        src_logits, src_cache = model.run_with_cache(source, names=read, logits_to_keep=1)
        src = dict(src_cache)
    logits, cache = model.run_with_cache(target, names=read, grad=True, logits_to_keep=1)
    assert logits is not None and src_logits is not None
    per_example = m(logits[:, -1], data)  # [n]
    grad_names = [f"blocks.{i}.attn.hook_pattern" for i in layers] if fix else names
    inputs = [cache[n] for n in grad_names]
    raw = torch.autograd.grad(per_example.sum(), inputs, allow_unused=True)  # unused: no path to the metric
    grads = {n: torch.zeros_like(x) if g is None else g for n, x, g in zip(grad_names, inputs, raw)}
    with torch.no_grad():
        tgt = {n: cache[n].detach() for n in read}
        if fix:
            est = _qk_estimates(model, variants, src, tgt, grads)
        else:
            est = _linear_estimates(variants, src, tgt, grads)
        values = per_example.detach()[None] + est  # [variant n]
        other = m(src_logits[:, -1], data)
    clean_v, corrupted = (other, per_example) if direction == "denoise" else (per_example, other)
    shape = tuple(len(a) for a in axes)
    return PatchResult(
        values=values.mean(1).reshape(shape).cpu(),
        axes=axes,
        method="attribution_patching",
        sweep=kind,
        metric=m.name,
        clean=float(clean_v.detach().mean()),
        corrupted=float(corrupted.detach().mean()),
        direction=direction,
        per_example=values.reshape(*shape, data.n).cpu(),
        info=run_info(model, data, cfg, time.perf_counter() - start) | {"qk_fix": fix},
    )


def _linear_estimates(
    variants: list[Variant], src: dict[str, Tensor], tgt: dict[str, Tensor], grads: dict[str, Tensor]
) -> Tensor:
    """``Σ (a_src − a_tgt) · grad`` over each variant's patched slices, ``[variant n]``."""
    products = {n: (src[n] - tgt[n]) * grads[n] for n in grads}
    rows = []
    n = next(iter(products.values())).shape[0]
    for v in variants:
        total = next(iter(products.values())).new_zeros(n)
        for patch in v:
            p = normalize(patch, products[patch.name].shape)
            part = products[patch.name][(slice(None), *p.index)]
            total = total + part.reshape(part.shape[0], -1).sum(-1)
        rows.append(total)
    return torch.stack(rows)


def _qk_estimates(
    model: HookedModel,
    variants: list[Variant],
    src: dict[str, Tensor],
    tgt: dict[str, Tensor],
    grads: dict[str, Tensor],
) -> Tensor:
    """AtP*: recompute each head's pattern with the patched queries or keys; linearise only the rest."""
    rows = []
    rep = model.cfg.n_heads // model.cfg.n_kv_heads
    for v in variants:
        (patch,) = v
        if len(patch.index) != 2 or patch.index[0] != slice(None) or not isinstance(patch.index[1], int):
            raise MechscopeError("qk_fix needs whole-head query/key patches, as in the 'q' and 'k' sweeps")
        layer, head = patch.layer, patch.index[1]
        assert layer is not None
        base = f"blocks.{layer}.attn."
        q, k = tgt[base + "hook_q"], tgt[base + "hook_k"]  # [n pos head d], [n pos kv_head d]
        if patch.name.endswith("hook_q"):
            q = q.clone()
            q[:, :, head] = src[base + "hook_q"][:, :, head]
            heads = [head]
        else:
            k = k.clone()
            k[:, :, head] = src[base + "hook_k"][:, :, head]
            heads = list(range(head * rep, (head + 1) * rep))
        new = _pattern(model, layer, q, k, tgt[base + "hook_attn_scores"], heads)  # [n len(heads) q k]
        delta = new - tgt[base + "hook_pattern"][:, heads]
        rows.append((delta * grads[base + "hook_pattern"][:, heads]).flatten(1).sum(-1))
    return torch.stack(rows)


def _pattern(
    model: HookedModel, layer: int, q: Tensor, k: Tensor, scores: Tensor, heads: list[int]
) -> Tensor:
    """Attention pattern of ``heads`` from queries ``q`` and keys ``k``, masked like ``scores``."""
    attn = get_path(model.blocks[layer], model.adapter.attn)
    rep = model.cfg.n_heads // model.cfg.n_kv_heads
    scale = getattr(attn, "scaling", q.shape[-1] ** -0.5)
    cap = getattr(attn, "attn_logit_softcapping", None)
    qh = q[:, :, heads].transpose(1, 2)  # [n h q d]
    kh = k[:, :, [h // rep for h in heads]].transpose(1, 2)  # [n h k d]
    s = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    if cap:
        s = torch.tanh(s / cap) * cap
    s = s.masked_fill(scores[:, heads] == float("-inf"), float("-inf"))
    exact = s.dtype in (torch.float32, torch.float64)
    return torch.softmax(s if exact else s.float(), -1).nan_to_num(0.0).to(q.dtype)


__all__ = ["Patch", "attribution_patching"]
