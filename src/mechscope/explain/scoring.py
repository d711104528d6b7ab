"""Scoring explanations: how well does the explanation alone predict where the feature fires?

Each scorer asks a :class:`~mechscope.explain.Simulator` (offline :class:`PatternSimulator` or
:class:`LLMSimulator`), which sees the explanation and tokens but never the true activations.
Pass **held-out** examples (not the ones the explanation was written from).

* :func:`detection` (delphi): shuffle activating and non-activating windows (seeded) and ask for
  each whether the feature fires in it. Value: **balanced accuracy** (mean of recall on the
  activating and on the non-activating windows); 0.5 is chance, 1.0 perfect.
* :func:`fuzzing` (delphi): for each activating window make two copies, one with its truly active
  tokens marked, one with as many random inactive tokens marked (seeded), shuffle, and ask whether
  the marking is right. Value: **balanced accuracy**; 0.5 is chance. It tests whether the
  explanation pins down *which* tokens fire, not just which texts.
* :func:`simulation` (Bills et al. 2023, OpenAI's "all at once" scoring): predict every token's
  activation and take the **Pearson correlation** between predicted and true activations over all
  tokens of all examples together; 1.0 perfect, 0 unrelated. When either side is constant the
  correlation is undefined: the value is 0.0 and ``details["note"]`` says why.

Each returns a :class:`~mechscope.explain.Score` holding the seed, the simulator's name and
settings, the counts, and every LLM exchange (``prompts``; empty offline).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Example, ExplainError, Explanation, Judged, Score, Simulator


def detection(explanation: Explanation, positives: Sequence[Example], negatives: Sequence[Example],
              simulator: Simulator, seed: int = 0) -> Score:  # fmt: skip
    """Balanced accuracy of "does the feature fire in this window?" (see the module docstring)."""
    if not positives or not negatives:
        raise ExplainError(f"detection needs activating and non-activating windows, got "
                           f"{len(positives)} and {len(negatives)}")  # fmt: skip
    _check_labels(positives, negatives)
    items = [(ex, True) for ex in positives] + [(ex, False) for ex in negatives]
    random.Random(seed).shuffle(items)
    judged = [simulator.detect(explanation, ex.tokens) for ex, _ in items]
    details = binary_metrics([j.value for j in judged], [label for _, label in items])
    return _score(explanation, "detection", details["balanced_accuracy"], details, seed, simulator, judged)


def fuzzing(
    explanation: Explanation, positives: Sequence[Example], simulator: Simulator, seed: int = 0
) -> Score:
    """Balanced accuracy of "are the marked tokens the right ones?" (see the module docstring).

    Windows with no active token, or fewer inactive tokens than active ones, are skipped
    (``details["skipped"]``).
    """
    rng = random.Random(seed)
    items: list[tuple[tuple[str, ...], list[int], bool]] = []
    skipped = 0
    for ex in positives:
        active = ex.active_positions()
        inactive = [i for i in range(len(ex.tokens)) if i not in set(active)]
        if not active or len(inactive) < len(active):
            skipped += 1
            continue
        items.append((ex.tokens, active, True))
        items.append((ex.tokens, sorted(rng.sample(inactive, len(active))), False))
    if not items:
        raise ExplainError(f"fuzzing: none of the {len(positives)} windows has active tokens to mark")
    rng.shuffle(items)
    judged = [simulator.judge_marking(explanation, tokens, marked) for tokens, marked, _ in items]
    details = binary_metrics([j.value for j in judged], [label for _, _, label in items])
    details["skipped"] = skipped
    return _score(explanation, "fuzzing", details["balanced_accuracy"], details, seed, simulator, judged)


def simulation(explanation: Explanation, examples: Sequence[Example], simulator: Simulator) -> Score:
    """Pearson r between simulated and true activations over all tokens (see the module docstring).

    Nothing is drawn at random, so the Score's seed is 0.
    """
    if not examples:
        raise ExplainError("simulation needs at least one example")
    judged = [simulator.simulate(explanation, ex.tokens) for ex in examples]
    for n, (ex, j) in enumerate(zip(examples, judged)):
        if len(j.value) != len(ex.tokens):
            raise ExplainError(f"simulator {simulator.name!r} gave {len(j.value)} values for example {n} "
                               f"of {len(ex.tokens)} tokens")  # fmt: skip
    sim = np.array([v for j in judged for v in j.value], dtype=np.float64)  # [all tokens]
    true = np.array([a for ex in examples for a in ex.activations], dtype=np.float64)  # [all tokens]
    details: dict[str, Any] = {"n_examples": len(examples), "n_tokens": int(true.size)}
    if sim.std() == 0 or true.std() == 0:
        which = "simulated" if sim.std() == 0 else "true"
        details["note"] = (
            f"the {which} activations are constant, so the correlation is undefined; reported as 0"
        )
        r = 0.0
    else:
        r = float(np.corrcoef(sim, true)[0, 1])
    return _score(explanation, "simulation", r, details, 0, simulator, judged)


def binary_metrics(predicted: Sequence[bool], actual: Sequence[bool]) -> dict[str, Any]:
    """Counts, accuracy, balanced accuracy, precision, recall and F1 of yes/no answers.

    An undefined ratio (no predicted positives, say) is 0.0.
    """
    tp = sum(p and a for p, a in zip(predicted, actual))
    fp = sum(p and not a for p, a in zip(predicted, actual))
    fn = sum(a and not p for p, a in zip(predicted, actual))
    tn = len(actual) - tp - fp - fn
    recall = tp / (tp + fn) if tp + fn else 0.0
    specificity = tn / (tn + fp) if tn + fp else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": len(actual), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "accuracy": (tp + tn) / len(actual) if actual else 0.0,
            "balanced_accuracy": (recall + specificity) / 2, "precision": precision, "recall": recall,
            "f1": f1}  # fmt: skip


def _check_labels(positives: Sequence[Example], negatives: Sequence[Example]) -> None:
    """Activating windows must have an active token, non-activating ones none."""
    bad = [f"positive {i}" for i, ex in enumerate(positives) if not ex.active_positions()]
    bad += [f"negative {i}" for i, ex in enumerate(negatives) if ex.active_positions()]
    if bad:
        raise ExplainError(
            f"detection: mislabelled windows ({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}): positives "
            "need an activation > 0, negatives none"
        )


def _score(explanation: Explanation, scorer: str, value: float, details: dict[str, Any], seed: int,
           simulator: Simulator, judged: Sequence[Judged[Any]]) -> Score:  # fmt: skip
    details = {**details, "simulator": simulator.name, "simulator_settings": simulator.settings(),
               "explainer": explanation.explainer}  # fmt: skip
    prompts = [{"messages": j.prompt, "reply": j.reply} for j in judged if j.prompt is not None]
    return Score(explanation.feature, scorer, float(value), details, seed, prompts, explanation.text)
