"""Behaviours: clean/corrupted prompt pairs, answers and metrics."""

from .base import PreparedTask, Task, TaskError, aligned_groups, aligned_subset, prepare
from .builtin import BUILTIN_TASKS, factual_recall, greater_than, induction, ioi, make_task
from .evaluate import TaskEval, evaluate
from .jsonl import load_jsonl, save_jsonl
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
    "BUILTIN_TASKS",
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
    "aligned_groups",
    "aligned_subset",
    "binary_accuracy",
    "evaluate",
    "factual_recall",
    "final_logits",
    "greater_than",
    "induction",
    "ioi",
    "load_jsonl",
    "make_metric",
    "make_task",
    "prepare",
    "save_jsonl",
    "top1_accuracy",
]
