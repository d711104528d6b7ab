"""Training schedules and initialisation statistics for dictionary training.

1. Learning rate: linear warm-up from 0 over ``lr_warmup_steps``, constant, then a decay to 0
   over the last ``lr_decay_fraction`` of the steps, either linear or half-cosine.
2. Sparsity coefficient: linear warm-up from 0 to its final value over
   ``sparsity_warmup_steps`` (Anthropic's April 2024 recipe; Gemma Scope), then constant.
3. Activation normalisation: a scalar ``c`` estimated once, before training, from a fixed
   number of batches; training sees ``c * x``. Conventions:
   ``unit_mean_squared_norm`` ``c = 1 / sqrt(E ||x||^2)`` (Gemma Scope, dictionary_learning),
   ``sqrt_d_over_mean_norm`` ``c = sqrt(d) / E ||x||`` (Anthropic, SAELens), ``none`` ``c = 1``.
4. Decoder-bias initialisation: the geometric median ``argmin_y sum_i ||x_i - y||`` by
   Weiszfeld's iteration (Weiszfeld 1937; Vardi and Zhang 2000 for the fixed-point guard),
   the mean, or zeros.

Steps are 0-based: step ``s`` is the ``s``-th optimiser update of ``total_steps``.
"""

from __future__ import annotations

import math

import torch

from ..errors import MechscopeError

LR_DECAYS = ("linear", "cosine", "none")
"""LR decay shapes (``TrainConfig.lr_decay``)."""
NORMALISATIONS = ("unit_mean_squared_norm", "sqrt_d_over_mean_norm", "none")
"""Activation normalisation conventions (``TrainConfig.normalisation``)."""
B_DEC_INITS = ("geometric_median", "mean", "zeros")
"""Decoder-bias initialisations (``TrainConfig.b_dec_init``)."""


def lr_factor(step: int, total_steps: int, warmup_steps: int, decay: str, decay_fraction: float) -> float:
    """Multiplier of the base LR at 0-based ``step``: warm-up, plateau, decay to 0.

    Warm-up: ``(step + 1) / warmup_steps`` for ``step < warmup_steps`` (the first update is
    already non-zero). Decay over the last ``n_decay = round(decay_fraction * total_steps)``
    steps, with progress ``p = (step - start + 1) / n_decay`` in ``(0, 1]``: linear
    ``1 - p``; cosine ``(1 + cos(pi p)) / 2``. The last step therefore has LR 0 when decaying
    (as in dictionary_learning and SAELens). Warm-up and decay multiply where they overlap.
    """
    if decay not in LR_DECAYS:
        raise MechscopeError(f"lr_decay must be one of {', '.join(LR_DECAYS)}, not {decay!r}")
    factor = 1.0
    if warmup_steps > 0 and step < warmup_steps:
        factor *= (step + 1) / warmup_steps
    n_decay = round(decay_fraction * total_steps) if decay != "none" else 0
    start = total_steps - n_decay
    if n_decay > 0 and step >= start:
        p = min(1.0, (step - start + 1) / n_decay)
        factor *= 1.0 - p if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * p))
    return factor


def sparsity_factor(step: int, warmup_steps: int) -> float:
    """Multiplier of the sparsity coefficient: ``min(1, (step + 1) / warmup_steps)``."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def norm_scale(x: torch.Tensor, convention: str) -> float:
    """The normalisation scalar ``c`` for activations ``x`` ``[n, d]`` (computed in float64)."""
    if convention not in NORMALISATIONS:
        raise MechscopeError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, not {convention!r}")
    if convention == "none":
        return 1.0
    x = x.to(torch.float64)
    if convention == "unit_mean_squared_norm":
        ms = float(x.pow(2).sum(dim=-1).mean())
        if not ms > 0 or not math.isfinite(ms):
            raise MechscopeError(f"cannot normalise activations with mean squared norm {ms}")
        return 1.0 / math.sqrt(ms)
    mean_norm = float(x.norm(dim=-1).mean())
    if not mean_norm > 0 or not math.isfinite(mean_norm):
        raise MechscopeError(f"cannot normalise activations with mean norm {mean_norm}")
    return math.sqrt(x.shape[-1]) / mean_norm


def geometric_median(
    x: torch.Tensor, *, max_iter: int = 200, tol: float = 1e-7, eps: float = 1e-12
) -> torch.Tensor:
    """``[n, d] -> [d]``: ``argmin_y sum_i ||x_i - y||`` by Weiszfeld's iteration (float64).

    Starting from the mean, each step is ``y <- sum_i w_i x_i / sum_i w_i`` with
    ``w_i = 1 / max(||x_i - y||, eps)``; it stops when ``y`` moves less than
    ``tol * (1 + ||y||)``. A point that coincides with the iterate gets weight ``1 / eps``,
    so the iteration settles on a data point that is itself the median (the case Weiszfeld's
    plain rule cannot handle). The objective is convex, and Weiszfeld's iteration decreases
    it monotonically.
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise MechscopeError(f"geometric_median needs a non-empty [n, d] tensor, got shape {tuple(x.shape)}")
    pts = x.to(torch.float64)
    y = pts.mean(dim=0)
    for _ in range(max_iter):
        w = 1.0 / (pts - y).norm(dim=1).clamp_min(eps)  # [n]
        y_new = (w[:, None] * pts).sum(dim=0) / w.sum()
        moved = float((y_new - y).norm())
        y = y_new
        if moved <= tol * (1.0 + float(y.norm())):
            break
    return y.to(x.dtype)


def b_dec_init(y: torch.Tensor, how: str) -> torch.Tensor:
    """``[n, d_out] -> [d_out]`` initial decoder bias from (normalised) targets ``y``."""
    if how not in B_DEC_INITS:
        raise MechscopeError(f"b_dec_init must be one of {', '.join(B_DEC_INITS)}, not {how!r}")
    if how == "geometric_median":
        return geometric_median(y)
    if how == "mean":
        return y.to(torch.float64).mean(dim=0).to(y.dtype)
    return torch.zeros(y.shape[-1], dtype=y.dtype)
