"""Activation patching: one engine for every site, batched, chunked and exact.

Method (Vig et al. 2020; Meng et al. 2022; Heimersheim & Nanda 2024):

1. Run the *source* prompts and record the activation at every site to patch. Denoising
   (the default) takes the clean prompts as source and the corrupted ones as target;
   noising is the reverse.
2. For every *variant* (a set of :class:`~mechscope.interventions.sites.Patch`), run the
   target prompts with the source's values written into those sites.
3. Evaluate the metric on the final-position logits; report it per variant and example,
   beside the clean and corrupted baselines.

Three modes compute the same numbers:

* ``"loop"``: one forward pass per variant, the textbook reference.
* ``"batched"``: variants stacked along the batch (variant-major), chunked to a memory
  budget; only the final position's logits are computed.
* ``"fast"`` (default): batched, and each variant computes only what its patch can
  change. A patch whose first changed layer is ``L`` and first changed position ``p``
  leaves everything before block ``L`` and every position before ``p`` exactly as in the
  target's own run, so the variant starts at block ``L`` from the target's residual
  stream and processes positions ``p..`` only, with the target's keys and values for
  positions ``< p`` (see ``suffix.py``). A variant that changes nothing is the target's
  own run. Results equal ``"loop"`` up to floating-point rounding (attention kernels see
  differently shaped inputs).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import MechscopeError
from ..models import HookedModel, TokenBatch
from ..tasks import Metric, PreparedTask, make_metric
from ..tasks.metrics import answer_token_ids
from .sites import Patch, Variant, first_changed, local_index, normalize

DIRECTIONS = ("denoise", "noise")
MODES = ("fast", "batched", "loop")


@dataclass(frozen=True)
class PatchRun:
    """The metric of every patched variant, with the unpatched baselines."""

    values: Tensor
    """Metric per variant and example, ``[variant n]``."""
    clean: Tensor
    """Metric of the clean run per example, ``[n]``."""
    corrupted: Tensor
    """Metric of the corrupted run per example, ``[n]``."""
    metric: str
    """Name of the metric."""
    direction: str
    """``"denoise"`` (clean values into the corrupted run) or ``"noise"`` (the reverse)."""

    @property
    def mean(self) -> Tensor:
        """Mean metric per variant, ``[variant]``."""
        return self.values.mean(1)

    def normalized(self) -> Tensor:
        """Mean per variant rescaled so the corrupted run is 0 and the clean run 1, ``[variant]``."""
        clean, corrupted = self.clean.mean(), self.corrupted.mean()
        return (self.mean - corrupted) / (clean - corrupted)


@dataclass
class _Job:
    """Everything one call of :func:`patch_variants` shares across chunks."""

    model: HookedModel
    data: PreparedTask
    metric: Metric
    target: TokenBatch
    source: Mapping[str, Tensor]
    budget_bytes: int
    progress: bool

    def score(self, logits: Tensor) -> Tensor:
        """Metric per row of final-position logits ``[rows d_vocab]`` -> ``[rows / n, n]``."""
        return self.metric(logits, self.data).detach().view(-1, self.data.n)

    def rows_per_chunk(self, positions: int) -> int:
        """How many variants fit the memory budget when each runs ``positions`` positions."""
        c = self.model.cfg
        per_token = 4 * (8 * c.d_model + 3 * c.d_mlp + 2 * c.n_heads * self.data.width)
        per_variant = self.data.n * (positions * per_token + 4 * c.d_vocab)
        return max(1, self.budget_bytes // per_variant)


def patch_variants(
    model: HookedModel,
    data: PreparedTask,
    variants: Sequence[Variant],
    metric: str | Metric | None = None,
    *,
    direction: str = "denoise",
    source: Mapping[str, Tensor] | None = None,
    mode: str = "fast",
    memory_budget_mb: int = 1024,
    progress: bool = False,
) -> PatchRun:
    """Run every variant (a tuple of patches) and return the metric of each.

    ``source`` overrides where patched values come from (``{hook name: [n, ...]}``; used by
    ablations); by default it is the clean run when denoising and the corrupted run when
    noising. See the module docstring for ``mode``.
    """
    if direction not in DIRECTIONS:
        raise MechscopeError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    if mode not in MODES:
        raise MechscopeError(f"mode must be one of {MODES}, not {mode!r}")
    m = make_metric(metric or data.task.metric, model, data)
    names = sorted({p.name for v in variants for p in v})
    for name in names:
        model._check_name(name)
    with torch.no_grad():
        runs = _baseline_runs(model, data, names, direction, need_source=source is None, fast=mode == "fast")
        source = runs["source"] if source is None else source
        missing = [n for n in names if n not in source]
        if missing:
            raise MechscopeError(f"no source values for {missing}")
        variants = [tuple(normalize(p, source[p.name].shape) for p in v) for v in variants]
        target = data.corrupted if direction == "denoise" else data.clean
        job = _Job(model, data, m, target, source, memory_budget_mb * 2**20, progress)
        if not variants:
            values = torch.empty(0, data.n)
        elif mode == "fast":
            values = _run_fast(job, variants, runs["target_cache"], runs["target_logits"])
        else:
            values = (_run_loop if mode == "loop" else _run_batched)(job, variants)
    clean = m(runs["clean_logits"], data).detach()
    corrupted = m(runs["corrupted_logits"], data).detach()
    return PatchRun(values, clean, corrupted, m.name, direction)


def _baseline_runs(
    model: HookedModel, data: PreparedTask, names: list[str], direction: str, need_source: bool, fast: bool
) -> dict[str, Any]:
    """Clean and corrupted prompts in one stacked forward pass: final logits, source values, and
    what fast mode reuses (the target's residual stream, keys, values and head outputs)."""
    reuse = [
        f"blocks.{i}.{s}"
        for i in range(model.cfg.n_layers)
        for s in ("hook_resid_pre", "attn.hook_k", "attn.hook_v", "attn.hook_z", "hook_attn_out")
    ]
    wanted = sorted((set(names) if need_source else set()) | ((set(reuse) | set(names)) if fast else set()))
    # On-demand sites (patterns, per-head results) change how attention is computed, so the
    # baselines come from a run without them; those sites are recorded in a second run.
    later = [n for n in wanted if model.hook_info(n).on_demand]
    both = TokenBatch(
        torch.cat([data.clean.tokens, data.corrupted.tokens]),
        torch.cat([data.clean.attention_mask, data.corrupted.attention_mask]),
        "left",
    )
    logits, cache = model.run_with_cache(both, names=[n for n in wanted if n not in later], logits_to_keep=1)
    assert logits is not None
    values = dict(cache)
    if later:
        values.update(model.run_with_cache(both, names=later, return_logits=False)[1])
    n = data.n
    clean = {k: v[:n] for k, v in values.items()}
    corrupted = {k: v[n:] for k, v in values.items()}
    target, source = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
    return {
        "clean_logits": logits[:n, -1],
        "corrupted_logits": logits[n:, -1],
        "target_logits": logits[n:, -1] if direction == "denoise" else logits[:n, -1],
        "target_cache": target,
        "source": source,
    }


# ---------------------------------------------------------------- patch hooks


def patch_hooks(
    variants: Sequence[Variant], source: Mapping[str, Tensor], n: int, offset: int = 0
) -> list[tuple[str, Any]]:
    """Forward hooks that write each variant's patches into its rows of a variant-major batch.

    Variant ``i`` owns rows ``i*n .. (i+1)*n``; a hook skips variants whose rows are not in
    the batch (they have not started yet). ``offset``: the batch holds query positions
    ``offset..`` only.
    """
    by_name: dict[str, list[tuple[int, Patch]]] = defaultdict(list)
    for slot, variant in enumerate(variants):
        for patch in variant:
            by_name[patch.name].append((slot, patch))

    def make(name: str, items: list[tuple[int, Patch]]) -> Any:
        src = source[name]

        def write(t: Tensor, hook: Any) -> Tensor:
            t = t.clone()
            for slot, patch in items:
                if (slot + 1) * n > t.shape[0]:
                    continue
                loc = local_index(patch, t.dim() - 1, offset)
                if loc is None:
                    continue
                tgt, src_idx = loc
                t[slot * n : (slot + 1) * n][tgt] = src[src_idx].to(t.dtype)
            return t

        return write

    return [(name, make(name, items)) for name, items in by_name.items()]


def _run_loop(job: _Job, variants: list[Variant]) -> Tensor:
    out = []
    for v in tqdm(variants, desc="patching (loop)", disable=not job.progress):
        logits = job.model.run_with_hooks(
            job.target, patch_hooks([v], job.source, job.data.n), logits_to_keep=1
        )
        out.append(job.score(logits[:, -1])[0])
    return torch.stack(out)


def _run_batched(job: _Job, variants: list[Variant]) -> Tensor:
    k = job.rows_per_chunk(job.data.width)
    out = []
    for start in tqdm(range(0, len(variants), k), desc="patching", disable=not job.progress):
        chunk = variants[start : start + k]
        batch = TokenBatch(
            job.target.tokens.repeat(len(chunk), 1), job.target.attention_mask.repeat(len(chunk), 1), "left"
        )
        hooks = patch_hooks(chunk, job.source, job.data.n)
        logits = job.model.run_with_hooks(batch, hooks, logits_to_keep=1)
        out.append(job.score(logits[:, -1]))
    return torch.cat(out)


def _run_fast(job: _Job, variants: list[Variant], base: dict[str, Tensor], target_logits: Tensor) -> Tensor:
    from .suffix import SuffixRunner

    runner = SuffixRunner(job.model, job.target, job.source, base)
    baseline = job.score(target_logits)
    values = baseline.new_empty(len(variants), job.data.n)
    groups: dict[int, list[tuple[int, int]]] = defaultdict(list)  # first position -> [(variant, first layer)]
    fallback: list[int] = []
    for i, v in enumerate(variants):
        start = runner.start_of(v)
        if start is None:
            values[i] = baseline[0]
        elif isinstance(start, str):  # "full": a site outside the blocks
            fallback.append(i)
        else:
            layer, pos = start
            groups[pos].append((i, layer))
    if fallback:
        values[fallback] = _run_batched(job, [variants[i] for i in fallback])
    todo = [(pos, chunk) for pos, members in sorted(groups.items()) for chunk in _chunks(job, pos, members)]
    order = {"block": 0, "attn.hook_z": 1, "hook_attn_out": 2}
    ids = answer_token_ids(job.data) if job.metric.reads_only_answers else None
    for pos, chunk in tqdm(todo, desc="patching", disable=not job.progress):
        starts = {i: (layer, runner.entry_of(variants[i], layer)) for i, layer in chunk}
        chunk.sort(key=lambda item: (starts[item[0]][0], order[starts[item[0]][1]]))
        logits = runner.run([variants[i] for i, _ in chunk], [starts[i] for i, _ in chunk], pos, ids)
        values[[i for i, _ in chunk]] = job.score(logits)
    return values


def _chunks(job: _Job, pos: int, members: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    k = job.rows_per_chunk(job.data.width - pos)
    return [members[i : i + k] for i in range(0, len(members), k)]


__all__ = ["DIRECTIONS", "MODES", "Patch", "PatchRun", "first_changed", "patch_hooks", "patch_variants"]
