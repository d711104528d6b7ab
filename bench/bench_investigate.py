"""``make demo`` (``mechscope investigate --demo``): total and per-stage wall time, peak memory,
and the orchestration's share of the run.

What is measured
----------------
The demo runs from scratch into ``--out`` (deleted first): SmolLM2-135M on IOI, then factual
recall loading IOI's dictionaries, then the comparison. Reported per investigation and stage,
from each run's ``timings.json``: wall time, status, the process's peak RSS after the stage
(a high-water mark) and how much the stage raised it. Then the demo runs a second time into the
same directory, where every stage is up to date (the resume path: validation, model load from
the cache, hashing, skipping).

Orchestration is everything that is not a library call of the stages: the runner's own time
(hashing, ``stage.json``, renames, clearing stale outputs; ``overhead_s``), the report stage
(summary and HTML), and what ``investigate`` does around the runner (writing the config and
environment, copying the report). Its share of the total is the figure the issue bounds at 5 %.
There is no peer: no other tool runs this pipeline as one program.

Run: ``.venv/bin/python bench/bench_investigate.py [--out runs/bench-demo]``; results go to
stdout and ``bench/results/investigate_demo.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from mechscope.investigate.demo import run_demo_investigation


def _quiet(*_a: Any) -> None:
    return None


def _rows(result: Any) -> list[dict[str, Any]]:
    return [
        {"stage": r.name, "status": r.status, "wall_s": round(r.wall_s, 2),
         "peak_rss_mb": r.peak_rss_mb, "rss_growth_mb": r.rss_growth_mb}
        for r in result.report.stages
    ]  # fmt: skip


def _orchestration(result: Any, wall: float) -> dict[str, float]:
    runner = result.report
    report_stage = next((r.wall_s for r in runner.stages if r.name == "report"), 0.0)
    around = max(0.0, wall - runner.total_s - result.preflight_s)
    total = runner.overhead_s + report_stage + around
    return {"runner_s": round(runner.overhead_s, 4), "report_stage_s": round(report_stage, 4),
            "around_runner_s": round(around, 4), "total_s": round(total, 4),
            "fraction": round(total / wall, 5)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-demo"))
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    results: dict[str, Any] = {"machine": platform.platform(), "command": "bench/bench_investigate.py"}
    for label in ("fresh", "up to date"):
        t0 = time.perf_counter()
        runs, walls = [], []
        ioi, factual, _ = run_demo_investigation(args.out, progress=_quiet, say=_quiet)
        total = time.perf_counter() - t0
        for name, res in (("ioi", ioi), ("factual", factual)):
            wall = res.report.total_s + res.preflight_s
            walls.append(wall)
            runs.append({"name": name, "wall_s": round(wall, 2), "preflight_s": round(res.preflight_s, 2),
                         "stages": _rows(res), "orchestration": _orchestration(res, wall)})  # fmt: skip
        results[label] = {"total_s": round(total, 2), "runs": runs}
        print(f"\n## demo, {label}: {total:.1f} s in all")
        for run in runs:
            o = run["orchestration"]
            print(f"\n{run['name']}: {run['wall_s']} s (validation and model load {run['preflight_s']} s); "
                  f"orchestration {o['total_s']:.3f} s = {100 * o['fraction']:.2f} % "
                  f"(runner {o['runner_s']:.3f} s, report stage {o['report_stage_s']:.3f} s, "
                  f"around the runner {o['around_runner_s']:.3f} s)")  # fmt: skip
            print("| stage | status | wall s | peak RSS MB | raised by MB |\n|---|---|---|---|---|")
            for r in run["stages"]:
                rss = "-" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}"
                grow = "-" if r["rss_growth_mb"] is None else f"{r['rss_growth_mb']:.0f}"
                print(f"| {r['stage']} | {r['status']} | {r['wall_s']:.1f} | {rss} | {grow} |")
    out = Path("bench/results/investigate_demo.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
