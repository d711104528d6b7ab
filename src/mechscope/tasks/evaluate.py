"""How well does a model do a task, clean and corrupted?"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..models import HookedModel
from .base import PreparedTask, Task, prepare
from .metrics import Metric, binary_accuracy, final_logits, make_metric, top1_accuracy


@dataclass(frozen=True)
class TaskEval:
    """Accuracy and metric of a model on a task's clean and corrupted prompts."""

    task: str
    """Task name."""
    n: int
    """Number of examples."""
    metric: str
    """Name of the metric reported."""
    clean_accuracy: float
    """Fraction of clean prompts where a correct answer outscores every wrong one."""
    corrupted_accuracy: float
    """The same on the corrupted prompts (still judged against the clean answers)."""
    clean_top1: float
    """Fraction of clean prompts whose top next token is a correct answer."""
    corrupted_top1: float
    """The same on the corrupted prompts."""
    clean_metric: float
    """Mean metric on the clean prompts."""
    corrupted_metric: float
    """Mean metric on the corrupted prompts."""

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain values, for JSON."""
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.task} (n={self.n}): accuracy clean {self.clean_accuracy:.0%} / corrupted "
            f"{self.corrupted_accuracy:.0%}; top-1 clean {self.clean_top1:.0%} / corrupted {self.corrupted_top1:.0%}; "
            f"{self.metric} clean {self.clean_metric:.3f} / corrupted {self.corrupted_metric:.3f}"
        )


def evaluate(model: HookedModel, task: Task | PreparedTask, metric: str | Metric | None = None) -> TaskEval:
    """Clean and corrupted accuracy, top-1 accuracy and the metric of ``model`` on ``task``."""
    data = task if isinstance(task, PreparedTask) else prepare(model, task)
    m = make_metric(metric or data.task.metric, model, data)
    clean, corrupted = final_logits(model, data, "clean"), final_logits(model, data, "corrupted")
    return TaskEval(
        task=data.task.name,
        n=data.n,
        metric=m.name,
        clean_accuracy=float(binary_accuracy(clean, data).float().mean()),
        corrupted_accuracy=float(binary_accuracy(corrupted, data).float().mean()),
        clean_top1=float(top1_accuracy(clean, data).float().mean()),
        corrupted_top1=float(top1_accuracy(corrupted, data).float().mean()),
        clean_metric=float(m(clean, data).mean()),
        corrupted_metric=float(m(corrupted, data).mean()),
    )
