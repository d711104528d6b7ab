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


def _orchestration(results: list[Any], total: float) -> dict[str, float]:
    """Runner overhead + report stages + everything outside the runs' validation and runners
    (writing configs and environments, copying reports, the comparison), over the demo's total."""
    runner = sum(r.report.overhead_s for r in results)
    report = sum(s.wall_s for r in results for s in r.report.stages if s.name == "report")
    around = max(0.0, total - sum(r.report.total_s + r.preflight_s for r in results))
    overhead = runner + report + around
    return {"runner_s": round(runner, 4), "report_stages_s": round(report, 4), "around_runs_s": round(around, 4),
            "total_s": round(overhead, 4), "fraction": round(overhead / total, 5)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-demo"))
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    results: dict[str, Any] = {"machine": platform.platform(), "command": "bench/bench_investigate.py"}
    for label in ("fresh", "up to date"):
        t0 = time.perf_counter()
        runs = []
        ioi, factual, _ = run_demo_investigation(args.out, progress=_quiet, say=_quiet)
        total = time.perf_counter() - t0
        for name, res in (("ioi", ioi), ("factual", factual)):
            wall = res.report.total_s + res.preflight_s
            runs.append({"name": name, "wall_s": round(wall, 2), "preflight_s": round(res.preflight_s, 2),
                         "runner_overhead_s": round(res.report.overhead_s, 4), "stages": _rows(res)})  # fmt: skip
        o = _orchestration([ioi, factual], total)
        results[label] = {"total_s": round(total, 2), "orchestration": o, "runs": runs}
        print(f"\n## demo, {label}: {total:.1f} s in all; orchestration {o['total_s']:.3f} s = "
              f"{100 * o['fraction']:.2f} % (runners {o['runner_s']:.3f} s, report stages {o['report_stages_s']:.3f} s, "
              f"outside the runs {o['around_runs_s']:.3f} s)")  # fmt: skip
        for run in runs:
            print(f"\n{run['name']}: {run['wall_s']} s (validation and model load {run['preflight_s']} s)")
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
