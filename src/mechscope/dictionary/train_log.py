"""Where training metrics go: a tqdm bar, a JSON-lines history, TensorBoard or W&B.

The history file ``metrics.jsonl`` in the output directory has one JSON object per logged
step and dictionary: ``{"step", "tokens", "dictionary", "lr", "sparsity_coefficient",
"loss", "<term>" ..., "l0", "fvu", "dead_fraction", "grad_norm", "elapsed_s"}``. ``step``
counts completed optimiser steps. On resume, lines after the checkpoint's step are dropped
so the history matches the resumed run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._fs import atomic_write_text
from ..errors import MechscopeError

LOGGERS = ("none", "tensorboard", "wandb")
"""Optional logging backends (``TrainConfig.logging``)."""


class MetricsLog:
    """Progress bar, JSONL history and an optional TensorBoard / W&B backend."""

    def __init__(
        self,
        path: Path | None,
        *,
        backend: str,
        total_steps: int,
        start_step: int,
        progress: bool,
        run_config: dict[str, Any],
    ) -> None:
        if backend not in LOGGERS:
            raise MechscopeError(f"logging must be one of {', '.join(LOGGERS)}, not {backend!r}")
        self.path = path
        self._backend: Any = None
        self._kind = backend
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _truncate_history(path, start_step)
            if backend == "tensorboard":
                self._backend = _tensorboard(path.parent / "tensorboard")
            elif backend == "wandb":
                self._backend = _wandb(path.parent, run_config)
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=total_steps, initial=start_step, disable=not progress, unit="step", dynamic_ncols=True
        )

    def step(self) -> None:
        """Advance the bar by one step."""
        self.bar.update(1)

    def log(self, records: list[dict[str, Any]]) -> None:
        """Write one record per dictionary (same step) and show the first ones on the bar."""
        if self.path is not None:
            with open(self.path, "a") as f:
                for r in records:
                    f.write(json.dumps(r, sort_keys=True) + "\n")
        for r in records:
            self._emit(r)
        keys = ("loss", "l0", "fvu", "dead_fraction")
        short = {"loss": "loss", "l0": "L0", "fvu": "FVU", "dead_fraction": "dead"}
        shown = records[:3]
        postfix = {
            short[k]: "/".join(f"{r[k]:.3g}" for r in shown) for k in keys if all(k in r for r in shown)
        }
        self.bar.set_postfix(postfix, refresh=False)

    def _emit(self, r: dict[str, Any]) -> None:
        if self._backend is None:
            return
        name = r["dictionary"]
        scalars = {f"{name}/{k}": v for k, v in r.items() if isinstance(v, (int, float)) and k != "step"}
        if self._kind == "tensorboard":
            for k, v in scalars.items():
                self._backend.add_scalar(k, v, r["step"])
        else:
            self._backend.log(scalars, step=r["step"])

    def close(self) -> None:
        """Close the bar and the backend."""
        self.bar.close()
        if self._backend is not None:
            if self._kind == "tensorboard":
                self._backend.close()
            else:
                self._backend.finish()


def _truncate_history(path: Path, start_step: int) -> None:
    """Keep only history lines with ``step <= start_step`` (all lines are dropped when starting at 0)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= start_step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a torn last line from a crash
    atomic_write_text(path, "".join(line + "\n" for line in kept) if start_step > 0 else "")


def _tensorboard(logdir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise MechscopeError(
            "logging='tensorboard' needs the tensorboard package: pip install tensorboard "
            f"(or use logging='none'); import failed with: {e}"
        ) from e
    return SummaryWriter(log_dir=str(logdir))


def _wandb(out_dir: Path, run_config: dict[str, Any]) -> Any:
    try:
        import wandb
    except ImportError as e:
        raise MechscopeError(
            "logging='wandb' needs the wandb package: pip install wandb (or use logging='none'); "
            f"import failed with: {e}"
        ) from e
    return wandb.init(project="mechscope", dir=str(out_dir), config=run_config, name=out_dir.name)
