"""A strength sweep: the same prompts generated at several steering strengths, side by side.

For each ``alpha``, greedy generations with ``hooks(alpha)`` in force, and the shift of a
metric on the prompts' next-token logits (by default the log-odds of ``target`` over
``baseline`` tokens) against ``alpha = 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..models import HookedModel


@dataclass(frozen=True)
class SweepRow:
    """One strength of a sweep."""

    alpha: float
    """The steering strength."""
    texts: list[str]
    """The generation for each prompt (prompt included)."""
    metric: float
    """The metric averaged over the prompts."""
    shift: float
    """``metric − metric at alpha = 0``."""


def logodds(logits: Tensor, target: Tensor, baseline: Tensor) -> Tensor:  # [..., vocab] -> [...]
    """``logsumexp(log p(target)) − logsumexp(log p(baseline))`` over token ids, at every position given."""
    lp = logits.float().log_softmax(-1)
    return lp[..., target].logsumexp(-1) - lp[..., baseline].logsumexp(-1)


def ids_logodds(target: Tensor, baseline: Tensor) -> Callable[[Tensor], Tensor]:
    """:func:`logodds` of token ids as a metric on next-token logits ``[n, vocab] -> [n]``."""
    return lambda logits: logodds(logits, target, baseline)


def token_logodds(
    model: HookedModel, target: Sequence[str], baseline: Sequence[str]
) -> Callable[[Tensor], Tensor]:
    """``logsumexp(log p(target)) − logsumexp(log p(baseline))`` at the last position, per prompt."""
    t = torch.tensor([model.to_single_token(s) for s in target])
    b = torch.tensor([model.to_single_token(s) for s in baseline])
    return ids_logodds(t, b)


def strength_sweep(
    model: HookedModel,
    prompts: Sequence[str],
    hooks: Callable[[float], list[tuple[str, Any]]],
    alphas: Sequence[float],
    metric: Callable[[Tensor], Tensor],
    max_new_tokens: int = 12,
) -> list[SweepRow]:
    """Generate and measure at every ``alpha`` (``hooks(alpha)`` gives the steering hooks)."""
    rows = []
    base = None
    for alpha in [0.0, *[a for a in alphas if a != 0]]:
        with torch.no_grad(), model.hooks(hooks(alpha)):
            logits = model(list(prompts), padding_side="left", logits_to_keep=1)[:, -1]
        value = float(metric(logits).mean())
        base = value if base is None else base
        texts = model.generate(list(prompts), max_new_tokens=max_new_tokens, fwd_hooks=hooks(alpha))
        rows.append(SweepRow(alpha, list(texts), value, value - base))  # type: ignore[arg-type]
    order = {a: i for i, a in enumerate(alphas)}
    return sorted((r for r in rows if r.alpha in order), key=lambda r: order[r.alpha])
