"""A live view of an investigation: the stage, the step within it, and time estimates.

On a terminal one status line is redrawn in place (``\\r``); elsewhere (logs, CI) a line is
printed whenever the stage or its step message changes. Estimates: within a stage, the time
per step so far times the steps left; for the whole run, the stages left at their wall time in
the previous run of the same directory (``timings.json``), when there was one.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TextIO

__all__ = ["LiveProgress", "clock"]


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``)."""
    s = round(max(seconds, 0.0))
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


class LiveProgress:
    """A :data:`~mechscope.investigate.runner.ProgressFn` that draws the run's progress."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.names: list[str] = []
        self.previous: dict[str, float] = {}
        self.t0 = time.perf_counter()
        self.stage_t0 = self.t0
        self.stage = ""
        self.last = ""

    def begin(self, names: list[str], previous: Path | None = None) -> None:
        """Start the view for stages ``names``; ``previous`` is an earlier run's ``timings.json``."""
        self.names, self.t0 = list(names), time.perf_counter()
        if previous is not None and previous.is_file():
            try:
                rows = json.loads(previous.read_text()).get("stages", [])
                self.previous = {r["name"]: float(r["wall_s"]) for r in rows if r.get("status") == "ran"}
            except (ValueError, KeyError, TypeError):
                self.previous = {}

    def note(self, message: str) -> None:
        """A free line (e.g. loading the model)."""
        self._line(message, final=True)

    def _remaining(self, stage: str) -> float | None:
        if stage not in self.names:
            return None
        later = self.names[self.names.index(stage) + 1 :]
        if not later or any(n not in self.previous for n in later):
            return None if later else 0.0
        return sum(self.previous[n] for n in later)

    def event(self, stage: str, step: int, total: int, message: str) -> None:
        """Receive one runner event."""
        now = time.perf_counter()
        if not stage:  # the runner's closing table
            self._line(message, final=True)
            return
        if stage != self.stage:
            self.stage, self.stage_t0 = stage, now
        idx = self.names.index(stage) + 1 if stage in self.names else 0
        head = f"[{idx}/{len(self.names)} {stage} {clock(now - self.stage_t0)}]"
        eta = ""
        if 0 < step < total:
            eta = f" · stage ~{clock((now - self.stage_t0) / step * (total - step))} left"
        rest = self._remaining(stage)
        if rest is not None and rest > 0:
            eta += f" · run ~{clock(rest)} after this stage (last time)"
        done = message.startswith(("done", "skipped"))
        self._line(f"{head} {step}/{total} {message}{eta} · total {clock(now - self.t0)}", final=done)

    def _line(self, text: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
        elif text != self.last:
            self.stream.write(text + "\n")
        self.last = text
        self.stream.flush()
