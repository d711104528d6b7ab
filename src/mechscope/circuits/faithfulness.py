"""How well a circuit explains the behaviour: faithfulness, completeness, curves, AUCs.

* **Faithfulness** of a circuit ``C``: run with every edge outside ``C`` ablated; normalise
  ``(m(C) − m(∅)) / (m(full) − m(∅))``, where ``m(∅)`` ablates every edge and ``m(full)`` is
  the clean run. 1 means the circuit alone reproduces the behaviour; 0 means it does nothing.
* **Completeness** reports the complement: every edge of ``C`` ablated and the rest kept,
  normalised the same way (near 0 when ``C`` holds everything that matters).
* **Curves**: faithfulness of the top-``k`` circuit (pruned to connected edges) for a range of
  edge fractions. The MIB-style summaries (Mueller et al. 2025) are areas over the edge
  fraction ``x`` in ``[0, max]`` by the trapezoid rule, divided by ``max``: **CPR** (circuit
  performance ratio, area under faithfulness, higher is better) and **CMD** (circuit–model
  difference, area under ``|1 − faithfulness|``, lower is better).
* **Edge-recovery ROC AUC** of scores against a known circuit: the probability that a
  circuit edge outscores a non-circuit edge (ties count half), by ``|score|``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .circuit import Circuit
from .engine import EdgeEngine

FRACTIONS = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Edge fractions of the default faithfulness curve (MIB's grid)."""


@dataclass(frozen=True)
class Baselines:
    """The two ends of the normalisation."""

    full: float
    """Mean metric of the clean run (every edge kept)."""
    empty: float
    """Mean metric with every edge ablated."""

    def normalise(self, value: float) -> float:
        """``(value − empty) / (full − empty)``."""
        span = self.full - self.empty
        return float("nan") if span == 0 else (value - self.empty) / span


def baselines(engine: EdgeEngine) -> Baselines:
    """The clean metric and the all-ablated metric."""
    empty = torch.zeros(1, engine.graph.n_edges, dtype=torch.bool)
    return Baselines(float(engine.clean_metric.mean()), float(engine.run(empty).mean()))


def faithfulness(engine: EdgeEngine, circuit: Tensor | Circuit, base: Baselines | None = None) -> float:
    """Normalised metric with only the circuit's edges kept."""
    mask = _mask(circuit)
    base = base or baselines(engine)
    return base.normalise(float(engine.run(mask[None]).mean()))


def completeness(engine: EdgeEngine, circuit: Tensor | Circuit, base: Baselines | None = None) -> float:
    """Normalised metric with the circuit's edges ablated and every other edge kept."""
    mask = _mask(circuit)
    base = base or baselines(engine)
    return base.normalise(float(engine.run((~mask)[None]).mean()))


def _mask(circuit: Tensor | Circuit) -> Tensor:
    if isinstance(circuit, Circuit):
        if circuit.in_circuit is None:
            raise ValueError("the circuit has not been pruned: use .top(n) or .above(threshold)")
        return circuit.in_circuit
    return circuit.to(torch.bool)


@dataclass(frozen=True)
class Curve:
    """Faithfulness against circuit size."""

    fractions: list[float]
    """Requested edge fractions."""
    n_edges: list[int]
    """Edges kept at each point after pruning to connected edges."""
    faithfulness: list[float]
    """Normalised metric at each point."""
    cpr: float
    """Area under faithfulness over the fraction range, divided by its width."""
    cmd: float
    """Area under ``|1 − faithfulness|`` over the fraction range, divided by its width."""

    def first_reaching(self, level: float) -> float | None:
        """The smallest fraction whose faithfulness is at least ``level`` (None if none)."""
        return next((x for x, f in zip(self.fractions, self.faithfulness, strict=True) if f >= level), None)


def curve(
    engine: EdgeEngine, circuit: Circuit, fractions: tuple[float, ...] = FRACTIONS, batch: int = 8
) -> Curve:
    """Faithfulness of the top-``k`` circuits for each edge fraction (``k = round(fraction * E)``)."""
    e = circuit.scores.numel()  # edges, or (position, edge) pairs
    masks = [circuit.top(round(f * e)).in_circuit for f in fractions]
    values: list[float] = []
    base = baselines(engine)
    for start in range(0, len(masks), batch):
        stack = torch.stack(masks[start : start + batch])  # type: ignore[arg-type]
        values += [base.normalise(float(v)) for v in engine.run(stack).mean(dim=1)]
    xs = list(fractions)
    width = (xs[-1] - xs[0]) or 1.0
    cpr = _trapezoid(xs, values) / width
    cmd = _trapezoid(xs, [abs(1 - v) for v in values]) / width
    return Curve(xs, [int(m.sum()) for m in masks], values, cpr, cmd)  # type: ignore[union-attr]


def _trapezoid(xs: list[float], ys: list[float]) -> float:
    return sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:], strict=False))


def roc_auc(scores: Tensor, truth: Tensor) -> float:
    """ROC AUC of ``|scores|`` separating ``truth`` edges from the rest (Mann–Whitney, ties half)."""
    s, t = scores.abs().double(), truth.to(torch.bool)
    pos, neg = s[t], s[~t]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("ROC AUC needs both circuit and non-circuit edges")
    greater = (pos[:, None] > neg[None]).double().sum()
    ties = (pos[:, None] == neg[None]).double().sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))
