"""Ablation: knock a component out of the clean run and measure what the metric loses.

1. Choose the sites: a named sweep (``"heads"``, ``"mlp_out"``, ``"neurons"`` ...) or any
   list of variants (tuples of :class:`~mechscope.interventions.sites.Patch`).
2. Build the replacement value at each site:

   * ``zero``: 0.
   * ``mean``: the site's mean over the reference prompts, per position when the
     reference is padded to the task's width, otherwise over every real position (padding
     never counts).
   * ``resample`` (Chan et al. 2022; Conmy et al. 2023): each example takes the value of
     a reference prompt drawn uniformly at random, reproducibly from ``seed``. Positions
     must line up, so the reference must have the task's width.

3. Run the clean prompts with the sites replaced (the patching engine, noising direction)
   and report the metric per site beside the clean baseline.

The reference defaults to the task's clean prompts for ``mean`` and its corrupted prompts
for ``resample``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import MechscopeError
from ..models import HookedModel, TokenBatch
from ..tasks import Metric, PreparedTask, Task, prepare
from .patching import patch_variants
from .results import Axis, PatchResult
from .sites import Variant
from .sweeps import SWEEPS, SweepConfig, run_info

KINDS = ("zero", "mean", "resample")


def ablate(
    model: HookedModel,
    task: Task | PreparedTask,
    sites: str | Sequence[Variant],
    *,
    kind: str = "zero",
    reference: Task | PreparedTask | TokenBatch | None = None,
    seed: int = 0,
    metric: str | Metric | None = None,
    config: SweepConfig | None = None,
    progress: bool = False,
) -> PatchResult:
    """Ablate every site (``zero``, ``mean`` or ``resample``) in the clean run; see the module docstring."""
    if kind not in KINDS:
        raise MechscopeError(f"ablation kind must be one of {KINDS}, not {kind!r}")
    cfg = config or SweepConfig()
    data = task if isinstance(task, PreparedTask) else prepare(model, task)
    if isinstance(sites, str):
        if sites not in SWEEPS:
            raise MechscopeError(f"unknown sweep {sites!r}; choose one of {', '.join(SWEEPS)}")
        variants, axes = SWEEPS[sites](model, data, cfg)
        label = sites
    else:
        variants = list(sites)
        axes = (Axis("variant", tuple(" + ".join(map(str, v)) or "(none)" for v in variants)),)
        label = "custom"
    names = sorted({p.name for v in variants for p in v})
    start = time.perf_counter()
    with torch.no_grad():
        own = dict(model.run_with_cache(data.clean, names=names, return_logits=False)[1])
        source = _replacements(model, data, names, own, kind, reference, seed)
    run = patch_variants(
        model, data, variants, metric, direction="noise", source=source, mode=cfg.mode,
        memory_budget_mb=cfg.memory_budget_mb, progress=progress,
    )  # fmt: skip
    shape = tuple(len(a) for a in axes)
    info = run_info(model, data, cfg, time.perf_counter() - start) | {
        "seed": seed if kind == "resample" else None
    }
    return PatchResult(
        values=run.mean.reshape(shape).cpu(),
        axes=axes,
        method="ablation",
        sweep=label,
        metric=run.metric,
        clean=float(run.clean.mean()),
        corrupted=float(run.corrupted.mean()),
        ablation=kind,
        per_example=run.values.reshape(*shape, data.n).cpu(),
        info=info,
    )


def _replacements(
    model: HookedModel,
    data: PreparedTask,
    names: list[str],
    own: dict[str, Tensor],
    kind: str,
    reference: Task | PreparedTask | TokenBatch | None,
    seed: int,
) -> dict[str, Tensor]:
    """The value written at each site, shaped like the clean run's activation ``[n, ...]``."""
    if kind == "zero":
        return {n: torch.zeros_like(own[n]) for n in names}
    ref = _reference_batch(model, data, reference, kind)
    acts = dict(model.run_with_cache(ref, names=names, return_logits=False)[1])
    aligned = ref.tokens.shape[1] == data.width
    if kind == "resample":
        if not aligned:
            raise MechscopeError(
                f"resample ablation needs reference prompts of the task's width {data.width} (positions must line "
                f"up); got width {ref.tokens.shape[1]}"
            )
        g = torch.Generator().manual_seed(seed)
        pick = torch.randint(ref.tokens.shape[0], (data.n,), generator=g).to(ref.tokens.device)
        return {n: acts[n][pick] for n in names}
    return {n: _mean(n, acts[n], ref.attention_mask, aligned).expand_as(own[n]).clone() for n in names}


def _reference_batch(
    model: HookedModel, data: PreparedTask, reference: Task | PreparedTask | TokenBatch | None, kind: str
) -> TokenBatch:
    if reference is None:
        return data.clean if kind == "mean" else data.corrupted
    if isinstance(reference, TokenBatch):
        return reference.to(model.device)
    ref = reference if isinstance(reference, PreparedTask) else prepare(model, reference)
    return ref.clean


def _mean(name: str, acts: Tensor, mask: Tensor, per_position: bool) -> Tensor:
    """Mean over the reference's real tokens: ``[1, ...]`` per position, or ``[1, 1, ...]`` pooled."""
    from .sites import query_axis

    axis = query_axis(name)
    if axis is None or axis != 0:  # keys/values and patterns: positions must line up
        if not per_position:
            raise MechscopeError(f"mean ablation of {name} needs reference prompts of the task's width")
        return acts.mean(0, keepdim=True)
    w = mask.to(acts.dtype).reshape(*mask.shape, *([1] * (acts.dim() - 2)))  # [m pos 1 ...]
    if per_position:
        return (acts * w).sum(0, keepdim=True) / w.sum(0, keepdim=True).clamp(min=1)
    return (acts * w).sum((0, 1), keepdim=True) / w.sum((0, 1), keepdim=True)
