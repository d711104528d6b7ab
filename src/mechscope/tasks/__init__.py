"""Behaviours: clean/corrupted prompt pairs, answers and metrics."""

from .base import PreparedTask, Task, TaskError, prepare
from .evaluate import TaskEval, evaluate
from .metrics import (
    METRICS,
    AnswerProb,
    KLToClean,
    LogitDiff,
    Loss,
    Metric,
    NormalizedLogitDiff,
    ProbDiff,
    binary_accuracy,
    final_logits,
    make_metric,
    top1_accuracy,
)

__all__ = [
    "METRICS",
    "AnswerProb",
    "KLToClean",
    "LogitDiff",
    "Loss",
    "Metric",
    "NormalizedLogitDiff",
    "PreparedTask",
    "ProbDiff",
    "Task",
    "TaskError",
    "TaskEval",
    "binary_accuracy",
    "evaluate",
    "final_logits",
    "make_metric",
    "prepare",
    "top1_accuracy",
]
