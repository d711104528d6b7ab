"""Metrics on next-token logits, per example and differentiable.

Every metric maps final-position logits ``[rows d_vocab]`` to per-example values
``[rows]``. ``rows`` may be any multiple ``m * n`` of the task's ``n`` examples (patching
runs many variants of the task in one batch, variant-major): the task's answers are tiled
to match. Reduce with ``.mean()`` (or per variant with ``.view(m, n).mean(1)``).

* ``logit_diff``: mean logit of the correct answers minus mean logit of the wrong ones.
* ``normalized_logit_diff``: ``(LD - LD_corrupted) / (LD_clean - LD_corrupted)``, 1 at the
  clean run and 0 at the corrupted run (baselines are task means).
* ``answer_prob``: total probability of the correct answers.
* ``prob_diff``: total probability of the correct answers minus that of the wrong ones
  (greater-than's metric).
* ``kl_to_clean``: KL(clean || run) of the next-token distribution.
* ``loss``: cross-entropy of the first correct answer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from ..models import HookedModel
from .base import PreparedTask, TaskError


def _tile(t: Tensor, rows: int) -> Tensor:
    n = t.shape[0]
    if rows % n:
        raise TaskError(f"metric got {rows} rows of logits for a task of {n} examples")
    return t.repeat(rows // n, *([1] * (t.dim() - 1))) if rows != n else t


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum(-1) / mask.sum(-1)


class Metric(ABC):
    """A function of final-position logits ``[rows d_vocab]`` returning ``[rows]``."""

    name: str = "metric"
    higher_is_clean: bool = True
    """Whether the clean run scores higher than the corrupted one (False for loss and KL)."""
    reads_only_answers: bool = False
    """True when only the answer and wrong-answer logits matter (then callers may compute just those)."""

    @abstractmethod
    def __call__(self, logits: Tensor, data: PreparedTask) -> Tensor: ...


class LogitDiff(Metric):
    """Mean correct-answer logit minus mean wrong-answer logit."""

    name = "logit_diff"
    reads_only_answers = True

    def __call__(self, logits: Tensor, data: PreparedTask) -> Tensor:
        rows = logits.shape[0]
        good = logits.gather(-1, _tile(data.answer_ids, rows))
        bad = logits.gather(-1, _tile(data.wrong_ids, rows))
        return _masked_mean(good, _tile(data.answer_mask, rows)) - _masked_mean(
            bad, _tile(data.wrong_mask, rows)
        )


@dataclass
class NormalizedLogitDiff(Metric):
    """Logit difference rescaled so the clean run scores 1 and the corrupted run 0."""

    clean: float
    """Mean logit difference of the clean run."""
    corrupted: float
    """Mean logit difference of the corrupted run."""
    name = "normalized_logit_diff"
    reads_only_answers = True

    def __post_init__(self) -> None:
        if abs(self.clean - self.corrupted) < 1e-6:
            raise TaskError("clean and corrupted logit differences are equal: nothing to normalise against")

    def __call__(self, logits: Tensor, data: PreparedTask) -> Tensor:
        return (LogitDiff()(logits, data) - self.corrupted) / (self.clean - self.corrupted)


class AnswerProb(Metric):
    """Total probability of the correct answers."""

    name = "answer_prob"

    def __call__(self, logits: Tensor, data: PreparedTask) -> Tensor:
        rows = logits.shape[0]
        probs = torch.softmax(logits.float(), -1).gather(-1, _tile(data.answer_ids, rows))
        return (probs * _tile(data.answer_mask, rows)).sum(-1)


class ProbDiff(Metric):
    """Probability of the correct answers minus probability of the wrong ones."""

    name = "prob_diff"

    def __call__(self, logits: Tensor, data: PreparedTask) -> Tensor:
        rows = logits.shape[0]
        probs = torch.softmax(logits.float(), -1)
        good = (probs.gather(-1, _tile(data.answer_ids, rows)) * _tile(data.answer_mask, rows)).sum(-1)
        bad = (probs.gather(-1, _tile(data.wrong_ids, rows)) * _tile(data.wrong_mask, rows)).sum(-1)
        return good - bad


@dataclass
class KLToClean(Metric):
    """KL divergence from the clean run's next-token distribution, ``KL(clean || run)``."""

    clean_logits: Tensor
    """The clean run's final-position logits ``[n d_vocab]``."""
    name = "kl_to_clean"
    higher_is_clean = False

    def __call__(self, logits: Tensor, data: PreparedTask) -> Tensor:
        ref = torch.log_softmax(_tile(self.clean_logits, logits.shape[0]).float(), -1)
        return (ref.exp() * (ref - torch.log_softmax(logits.float(), -1))).sum(-1)


class Loss(Metric):
    """Cross-entropy of the first correct answer."""

    name = "loss"
    higher_is_clean = False

    def __call__(self, logits: Tensor, data: PreparedTask) -> Tensor:
        target = _tile(data.answer_ids[:, 0], logits.shape[0])
        return torch.nn.functional.cross_entropy(logits.float(), target, reduction="none")


METRICS = ("logit_diff", "normalized_logit_diff", "answer_prob", "prob_diff", "kl_to_clean", "loss")
"""Names accepted by :func:`make_metric`."""


def final_logits(model: HookedModel, data: PreparedTask, which: str) -> Tensor:
    """Next-token logits ``[n d_vocab]`` of the clean or corrupted prompts."""
    batch = data.clean if which == "clean" else data.corrupted
    with torch.no_grad():
        return model(batch, logits_to_keep=1)[:, -1]


def make_metric(name: str | Metric, model: HookedModel, data: PreparedTask) -> Metric:
    """The metric called ``name`` for this task (baselines computed where it needs them)."""
    if isinstance(name, Metric):
        return name
    simple: dict[str, type[Metric]] = {
        "logit_diff": LogitDiff,
        "answer_prob": AnswerProb,
        "prob_diff": ProbDiff,
        "loss": Loss,
    }
    if name in simple:
        return simple[name]()
    if name == "normalized_logit_diff":
        ld = LogitDiff()
        clean = float(ld(final_logits(model, data, "clean"), data).mean())
        corrupted = float(ld(final_logits(model, data, "corrupted"), data).mean())
        return NormalizedLogitDiff(clean, corrupted)
    if name == "kl_to_clean":
        return KLToClean(final_logits(model, data, "clean"))
    raise TaskError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")


def answer_token_ids(data: PreparedTask) -> Tensor:
    """Every token id a ``reads_only_answers`` metric looks at, ``[k]`` (sorted, unique)."""
    return torch.cat([data.answer_ids[data.answer_mask], data.wrong_ids[data.wrong_mask]]).unique()


def scatter_logits(partial: Tensor, token_ids: Tensor, d_vocab: int) -> Tensor:
    """Full-vocabulary logits ``[rows d_vocab]`` from ``partial`` ``[rows k]`` at ``token_ids``; -inf elsewhere."""
    full = partial.new_full((partial.shape[0], d_vocab), float("-inf"))
    full[:, token_ids] = partial
    return full


def binary_accuracy(logits: Tensor, data: PreparedTask) -> Tensor:
    """Per example: is the best correct answer's logit above every wrong answer's? ``[rows]`` (bool)."""
    rows = logits.shape[0]
    neg = torch.finfo(logits.dtype).min
    good = logits.gather(-1, _tile(data.answer_ids, rows)).masked_fill(~_tile(data.answer_mask, rows), neg)
    bad = logits.gather(-1, _tile(data.wrong_ids, rows)).masked_fill(~_tile(data.wrong_mask, rows), neg)
    return good.max(-1).values > bad.max(-1).values


def top1_accuracy(logits: Tensor, data: PreparedTask) -> Tensor:
    """Per example: is the model's top next token one of the correct answers? ``[rows]`` (bool)."""
    rows = logits.shape[0]
    top = logits.argmax(-1, keepdim=True)
    return ((top == _tile(data.answer_ids, rows)) & _tile(data.answer_mask, rows)).any(-1)
