"""A resumable, content-hashed stage runner: the engine under ``mechscope investigate``.

1. Check the stage list: unique, directory-safe names, and every ``depends_on`` entry a
   stage that comes earlier in the list (else :class:`RunnerError`, before any work).
2. For each stage in order, its input hash is sha256 of its ``config_hash`` and the input
   hashes of the stages it depends on, so a change anywhere upstream changes every hash
   downstream of it, transitively.
3. If ``RUN/<name>/stage.json`` exists, says ``complete: true``, holds the same input hash and
   was built from the very builds of its upstream stages that are on disk now (each build
   gets a random ``build_id``; ``upstream_builds`` records those it read), the stage is
   skipped and its files are left untouched. So a stage whose upstream was rebuilt for any
   reason (deleted by hand, a crash) reruns too, even if its stages are not deterministic.
4. Otherwise any stale ``RUN/<name>/`` (and any leftover temporary build of it) is deleted and
   the stage runs in a temporary directory that is renamed to ``RUN/<name>/`` only after its
   ``stage.json`` has been written, last (:func:`mechscope._fs.atomic_dir`). An exception or
   KeyboardInterrupt inside a stage leaves nothing of it, and the next run resumes there.
5. ``RUN/timings.json`` (per stage: ran, skipped or failed, wall time, memory) is written
   atomically at the end, also when a stage fails, and a table goes to ``progress``.

Memory: ``peak_rss_mb`` is the process's peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``) after the stage, a high-water mark that never falls;
``rss_growth_mb`` is how much the stage raised it (0 when it stayed under an earlier peak).
``peak_gpu_mb`` is ``torch.cuda.max_memory_allocated`` during the stage, when torch is
imported and CUDA initialised, else None. The runner never imports torch itself.

A run directory belongs to one runner at a time (there is no lock).
"""

from __future__ import annotations

import hashlib
import json
import re
import resource
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._fs import atomic_dir, atomic_write_json
from .._version import __version__
from ..errors import MechscopeError

STAGE_KIND = "mechscope.investigate.stage"
TIMINGS_KIND = "mechscope.investigate.timings"
SCHEMA_VERSION = 1

ProgressFn = Callable[[str, int, int, str], None]
"""``progress(stage, step, total, message)``; ``stage`` is ``""`` for the runner's own lines."""

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class RunnerError(MechscopeError):
    """A stage list the runner cannot run (bad names or dependency order), or a bad stage result."""


@dataclass(frozen=True)
class StageContext:
    """What a stage gets: where to write, where its inputs are, and a progress callback."""

    name: str
    """The stage's name."""
    out_dir: Path
    """A temporary directory to write into; it becomes ``RUN/<name>/`` only on success."""
    upstream: Mapping[str, Path]
    """The output directory of each stage in ``depends_on``, by name."""
    run_dir: Path
    """The run directory ``RUN``."""
    _progress: ProgressFn | None = field(default=None, repr=False)

    def progress(self, step: int, total: int, message: str = "") -> None:
        """Report progress within this stage (a no-op without a runner callback)."""
        if self._progress is not None:
            self._progress(self.name, step, total, message)


@dataclass(frozen=True)
class Stage:
    """One step of an investigation."""

    name: str
    """Its name, also the name of its output directory ``RUN/<name>/``."""
    run: Callable[[StageContext], dict[str, Any]]
    """Does the work, writing into ``ctx.out_dir``; returns a JSON-able summary."""
    depends_on: tuple[str, ...] = ()
    """Stages whose outputs it reads; each must come earlier in the stage list."""
    config_hash: str = ""
    """Hash of the config it reads (``section_hash``); a change reruns it and all downstream."""


@dataclass(frozen=True)
class StageRecord:
    """What happened to one stage in one run."""

    name: str
    """The stage's name."""
    status: str
    """``ran``, ``skipped`` (up to date) or ``failed``."""
    input_hash: str
    """Its input hash (config hash chained with the upstream input hashes)."""
    wall_s: float = 0.0
    """Seconds inside the stage's ``run`` in this run (0 when skipped)."""
    peak_rss_mb: float | None = None
    """Process peak RSS after the stage, MB (None when skipped)."""
    rss_growth_mb: float | None = None
    """How much the stage raised the process's peak RSS, MB."""
    peak_gpu_mb: float | None = None
    """Peak CUDA memory allocated during the stage, MB (None without CUDA)."""
    summary: dict[str, Any] = field(default_factory=dict)
    """The stage's summary (read back from ``stage.json`` when skipped)."""


@dataclass(frozen=True)
class RunReport:
    """The result of :func:`run_stages`."""

    run_dir: Path
    """The run directory."""
    stages: tuple[StageRecord, ...]
    """One record per stage, in order."""
    total_s: float
    """Wall time of the whole call."""
    overhead_s: float
    """``total_s`` minus the time inside the stages: hashing, checking and writing ``stage.json``,
    deleting stale outputs, renames (all but the final ``timings.json`` write)."""

    @property
    def ran(self) -> list[str]:
        """Names of the stages that ran."""
        return [r.name for r in self.stages if r.status == "ran"]

    @property
    def skipped(self) -> list[str]:
        """Names of the stages that were up to date."""
        return [r.name for r in self.stages if r.status == "skipped"]

    @property
    def overhead_fraction(self) -> float:
        """``overhead_s / total_s`` (0 for an empty run)."""
        return self.overhead_s / self.total_s if self.total_s > 0 else 0.0


def input_hash(config_hash: str, upstream_hashes: Sequence[str]) -> str:
    """sha256 of a stage's config hash followed by its upstream stages' input hashes."""
    payload = json.dumps([config_hash, list(upstream_hashes)], separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def check_stages(stages: Sequence[Stage]) -> None:
    """Raise :class:`RunnerError` unless names are unique and dependencies come first."""
    seen: set[str] = set()
    for stage in stages:
        if not _NAME.fullmatch(stage.name) or stage.name == "timings.json":
            raise RunnerError(f"stage name {stage.name!r} is not a plain directory name")
        if stage.name in seen:
            raise RunnerError(f"two stages are called {stage.name!r}")
        for dep in stage.depends_on:
            if dep not in seen:
                where = "comes after it" if dep in {s.name for s in stages} else "is not in the stage list"
                raise RunnerError(
                    f"stage {stage.name!r} depends on {dep!r}, which {where}; "
                    "list every stage after the stages it depends on"
                )
        seen.add(stage.name)


def read_stage_json(stage_dir: Path) -> dict[str, Any] | None:
    """``stage.json`` of a finished stage directory, or None if absent or unreadable."""
    try:
        meta = json.loads((stage_dir / "stage.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("kind") == STAGE_KIND else None


def read_stage_summary(stage_dir: Path) -> dict[str, Any]:
    """The ``summary`` of a finished stage (what a downstream stage reads); :class:`RunnerError`
    naming the directory when it holds no complete stage."""
    meta = read_stage_json(stage_dir)
    if meta is None or not meta.get("complete") or not isinstance(meta.get("summary"), dict):
        raise RunnerError(f"{stage_dir} holds no complete stage (its stage.json is missing or unreadable)")
    return dict(meta["summary"])


def run_stages(run_dir: str | Path, stages: Sequence[Stage], progress: ProgressFn | None = None) -> RunReport:
    """Run ``stages`` in order into ``run_dir``, skipping those whose outputs are up to date."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    check_stages(stages)
    run_dir.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    builds: dict[str, str] = {}
    records: list[StageRecord] = []
    try:
        for stage in stages:
            ihash = input_hash(stage.config_hash, [hashes[d] for d in stage.depends_on])
            hashes[stage.name] = ihash
            upstream = {d: builds[d] for d in stage.depends_on}
            meta = read_stage_json(run_dir / stage.name)
            build = _current_build(meta, ihash, upstream)
            if meta is not None and build is not None:
                builds[stage.name] = build
                records.append(StageRecord(stage.name, "skipped", ihash, summary=meta.get("summary", {})))
                _emit(progress, stage.name, 1, 1, "skipped (up to date)")
                continue
            _emit(progress, stage.name, 0, 1, "running")
            builds[stage.name] = uuid.uuid4().hex
            record = _run_one(run_dir, stage, ihash, builds[stage.name], upstream, progress, records)
            records.append(record)
            _emit(progress, stage.name, 1, 1, f"done in {record.wall_s:.2f} s")
    finally:
        total = time.perf_counter() - start
        overhead = total - sum(r.wall_s for r in records)
        report = RunReport(run_dir, tuple(records), total, max(overhead, 0.0))
        _write_timings(report)
        _emit(progress, "", len(records), len(stages), format_table(report))
    return report


def _current_build(meta: dict[str, Any] | None, ihash: str, upstream: Mapping[str, str]) -> str | None:
    """The build id of a finished stage if its ``stage.json`` matches its inputs and upstream builds."""
    if meta is None or meta.get("complete") is not True or meta.get("input_hash") != ihash:
        return None
    build = meta.get("build_id")
    return build if isinstance(build, str) and meta.get("upstream_builds") == dict(upstream) else None


def _emit(progress: ProgressFn | None, stage: str, step: int, total: int, message: str) -> None:
    if progress is not None:
        progress(stage, step, total, message)


def _clear(run_dir: Path, name: str) -> None:
    """Delete a stale output directory of stage ``name`` and any leftover temporary build."""
    for path in [run_dir / name, *run_dir.glob(f".{name}.tmp-*")]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _run_one(
    run_dir: Path,
    stage: Stage,
    ihash: str,
    build_id: str,
    upstream: Mapping[str, str],
    progress: ProgressFn | None,
    records: list[StageRecord],
) -> StageRecord:
    """Run one stage into a temporary directory and publish it with its ``stage.json``.

    On failure a ``failed`` record (with the time spent) is appended to ``records`` before the
    exception propagates, so ``timings.json`` shows where the run stopped.
    """
    _clear(run_dir, stage.name)
    rss0, gpu = _rss_mb(), _GpuPeak()
    started = time.time()
    t0 = time.perf_counter()
    with atomic_dir(run_dir / stage.name) as tmp:
        ctx = StageContext(stage.name, tmp, {d: run_dir / d for d in stage.depends_on}, run_dir, progress)
        try:
            summary = stage.run(ctx)
        except BaseException:
            records.append(StageRecord(stage.name, "failed", ihash, time.perf_counter() - t0))
            raise
        wall = time.perf_counter() - t0
        rss1 = _rss_mb()
        record = StageRecord(stage.name, "ran", ihash, wall, rss1, rss1 - rss0, gpu.read(), summary)
        try:
            text = json.dumps(summary)
        except (TypeError, ValueError) as e:
            records.append(StageRecord(stage.name, "failed", ihash, wall))
            raise RunnerError(f"stage {stage.name!r} returned a summary that is not JSON: {e}") from e
        if not isinstance(summary, dict):
            records.append(StageRecord(stage.name, "failed", ihash, wall))
            raise RunnerError(f"stage {stage.name!r} returned {text[:60]}, not a dict summary")
        meta = {
            "kind": STAGE_KIND,
            "schema_version": SCHEMA_VERSION,
            "mechscope_version": __version__,
            "name": stage.name,
            "complete": True,
            "input_hash": ihash,
            "config_hash": stage.config_hash,
            "build_id": build_id,
            "upstream_builds": dict(upstream),
            "started_at": started,
            "wall_s": wall,
            "peak_rss_mb": record.peak_rss_mb,
            "rss_growth_mb": record.rss_growth_mb,
            "peak_gpu_mb": record.peak_gpu_mb,
            "summary": summary,
        }
        atomic_write_json(tmp / "stage.json", meta)
    return record


def _rss_mb() -> float:
    """The process's peak resident set size so far, in MB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class _GpuPeak:
    """Peak CUDA allocation over a stage, when torch is imported and CUDA initialised."""

    def __init__(self) -> None:
        self._torch = sys.modules.get("torch")
        if self._active():
            self._torch.cuda.reset_peak_memory_stats()  # type: ignore[union-attr]

    def _active(self) -> bool:
        cuda = getattr(self._torch, "cuda", None)
        return cuda is not None and bool(cuda.is_available()) and bool(cuda.is_initialized())

    def read(self) -> float | None:
        if self._torch is None:
            self._torch = sys.modules.get("torch")
        if not self._active():
            return None
        return float(self._torch.cuda.max_memory_allocated()) / 2**20  # type: ignore[union-attr]


def _write_timings(report: RunReport) -> None:
    atomic_write_json(
        report.run_dir / "timings.json",
        {
            "kind": TIMINGS_KIND,
            "schema_version": SCHEMA_VERSION,
            "mechscope_version": __version__,
            "total_s": report.total_s,
            "overhead_s": report.overhead_s,
            "overhead_fraction": report.overhead_fraction,
            "stages": [
                {
                    "name": r.name,
                    "status": r.status,
                    "input_hash": r.input_hash,
                    "wall_s": r.wall_s,
                    "peak_rss_mb": r.peak_rss_mb,
                    "rss_growth_mb": r.rss_growth_mb,
                    "peak_gpu_mb": r.peak_gpu_mb,
                }
                for r in report.stages
            ],
        },
    )


def format_table(report: RunReport) -> str:
    """A plain-text table of the run: one row per stage, then the totals."""

    def mb(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    rows = [("stage", "status", "wall_s", "peak_rss_mb", "peak_gpu_mb")]
    for r in report.stages:
        rows.append((r.name, r.status, f"{r.wall_s:.3f}", mb(r.peak_rss_mb), mb(r.peak_gpu_mb)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append(
        f"total {report.total_s:.3f} s, runner overhead {report.overhead_s:.3f} s "
        f"({100 * report.overhead_fraction:.1f} %)"
    )
    return "\n".join(lines)


def print_progress(stage: str, step: int, total: int, message: str) -> None:
    """A :data:`ProgressFn` that prints one line per event (the final table as it is)."""
    print(message if not stage else f"[{stage}] {step}/{total} {message}", flush=True)
