"""``mechscope investigate``: one resumable run from a behaviour to a validated explanation.

1. Validate the config (``config.py``), then :func:`~.session.preflight`: load the model and
   build the task, so a model that cannot be found, a task with a multi-token answer or a stage
   that needs a disabled one fails before any stage starts, naming the config field.
2. Write ``RUN/config.toml`` (the validated config, every default filled in) and
   ``RUN/environment.json`` (versions, machine, seed).
3. Run the enabled stages with the content-hashed runner (``runner.py``): a stage whose inputs
   are unchanged is skipped, an interrupted run resumes at the first incomplete stage. Each
   stage seeds torch with ``seed`` before it starts, so a resumed stage computes what an
   uninterrupted run would have.
4. The ``report`` stage writes ``report/summary.json`` and the self-contained
   ``report/report.html``; both are copied to ``RUN/`` at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._fs import atomic_write_bytes, atomic_write_json, atomic_write_text
from .._version import __version__
from ..errors import MechscopeError
from .config import InvestigationConfig, load_config, section_hash, to_toml
from .progress import LiveProgress
from .runner import RunReport, Stage, StageContext, run_stages
from .session import Session, dependencies, enabled_stages, preflight

__all__ = ["BudgetExceeded", "Investigation", "environment", "investigate", "read_config"]

StageFn = Callable[[StageContext, Session], dict[str, Any]]


class BudgetExceeded(MechscopeError):
    """The investigation used up ``budgets.time_s``; completed stages are kept, a rerun resumes."""


@dataclass(frozen=True)
class Investigation:
    """What :func:`investigate` returns."""

    run_dir: Path
    """The run directory."""
    report: RunReport
    """What the runner did per stage (ran / skipped, wall time, memory)."""
    summary: dict[str, Any]
    """The findings summary (``RUN/summary.json``)."""
    preflight_s: float
    """Seconds spent validating before the first stage (model load and task build included)."""

    @property
    def report_path(self) -> Path:
        """``RUN/report.html``."""
        return self.run_dir / "report.html"


def read_config(path: str | Path, **kwargs: Any) -> InvestigationConfig:
    """Load and validate a config file against the built-in models and tasks."""
    from ..models.zoo import BUILTIN
    from .session import known_tasks

    return load_config(path, known_models=tuple(BUILTIN), known_tasks=known_tasks(), **kwargs)


def _stage_functions() -> dict[str, StageFn]:
    from .stages_behaviour import circuit_stage, evaluate_stage, localise_stage
    from .stages_checks import checks_stage
    from .stages_features import dictionaries_stage, explain_stage, features_stage

    return {"evaluate": evaluate_stage, "localise": localise_stage, "circuit": circuit_stage,
            "dictionaries": dictionaries_stage, "features": features_stage, "explain": explain_stage,
            "checks": checks_stage, "report": report_stage}  # fmt: skip


def environment(config: InvestigationConfig) -> dict[str, Any]:
    """Versions, machine and seed, for ``environment.json`` and the report."""
    import importlib.metadata

    import torch

    from ..models.zoo import builtin_revision

    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "mechscope": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "transformers": version("transformers"), "safetensors": version("safetensors"),
        "platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(), "gpu": gpu,
        "device": config.model.device, "seed": config.seed, "model_revision": builtin_revision(config.model.name),
    }  # fmt: skip


def report_stage(ctx: StageContext, session: Session) -> dict[str, Any]:
    """``summary.json`` from the upstream stages, and the self-contained ``report.html``."""
    from .report_html import render_report
    from .summary import build_summary

    config = json.loads((ctx.run_dir / "config.json").read_text())
    env = json.loads((ctx.run_dir / "environment.json").read_text())
    summary = build_summary(ctx.run_dir, config, env)
    atomic_write_json(ctx.out_dir / "summary.json", summary)
    ctx.progress(1, 2, "rendering report.html")
    title = session.settings("report")["title"] or f"{summary['model']}: {summary['task']}"
    html = render_report(
        ctx.run_dir, summary, config_toml=(ctx.run_dir / "config.toml").read_text(), title=title
    )
    atomic_write_text(ctx.out_dir / "report.html", html)
    ctx.progress(2, 2, "done")
    return {"summary": "report/summary.json", "report": "report/report.html", "headline": summary["headline"]}


def _seeded(fn: StageFn, session: Session, start: float) -> Callable[[StageContext], dict[str, Any]]:
    def run(ctx: StageContext) -> dict[str, Any]:
        import torch

        budget = session.config.budgets.time_s
        if budget is not None and time.perf_counter() - start > budget:
            raise BudgetExceeded(
                f"budgets.time_s = {budget:g} s used up before stage {ctx.name!r}; completed stages are kept, "
                "rerun the same command (with a larger budget) to resume"
            )
        torch.manual_seed(session.config.seed)
        summary = fn(ctx, session)
        peak_gb = _peak_memory_gb()
        limit = session.config.budgets.memory_gb
        if limit is not None and peak_gb > limit:
            warning = (
                f"stage {ctx.name!r}: peak memory {peak_gb:.2f} GB is over budgets.memory_gb = {limit:g}"
            )
            session.say(f"warning: {warning}")
            summary = {**summary, "memory_warning": warning}
        return summary

    return run


def _peak_memory_gb() -> float:
    """The process's peak resident memory, or the accelerator's peak allocation when larger, in GB."""
    import resource

    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
        1024**2 if sys.platform != "darwin" else 1024**3
    )
    gpu = (
        torch.cuda.max_memory_allocated() / 1024**3
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else 0.0
    )
    return max(rss, gpu)


def investigate(
    config: InvestigationConfig,
    out: str | Path,
    *,
    progress: Callable[[str, int, int, str], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> Investigation:
    """Run the investigation ``config`` into the run directory ``out`` (created or resumed)."""
    start = time.perf_counter()
    live = LiveProgress() if progress is None else None
    emit = progress or (live.event if live is not None else None)
    note = say or (live.note if live is not None else print)
    session = Session(config, say=note)
    preflight(config, session)
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.toml", to_toml(config))
    atomic_write_json(run_dir / "config.json", dataclasses.asdict(config))
    atomic_write_json(run_dir / "environment.json", environment(config))
    fns = _stage_functions()
    stages = [
        Stage(
            name, _seeded(fns[name], session, start), dependencies(config, name), section_hash(config, name)
        )
        for name in enabled_stages(config)
    ]
    preflight_s = time.perf_counter() - start
    if live is not None:
        live.begin([s.name for s in stages], previous=run_dir / "timings.json")
    report = run_stages(run_dir, stages, emit)
    summary: dict[str, Any] = {}
    if (run_dir / "report" / "summary.json").is_file():
        for name in ("summary.json", "report.html"):
            atomic_write_bytes(run_dir / name, (run_dir / "report" / name).read_bytes())
        summary = json.loads((run_dir / "summary.json").read_text())
    return Investigation(run_dir, report, summary, preflight_s)
