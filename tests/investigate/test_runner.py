"""The stage runner: skips what is up to date, reruns what changed and everything downstream,
and leaves nothing of a stage that failed, so a resumed run equals an uninterrupted one."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mechscope.investigate import (
    InvestigationConfig,
    RunnerError,
    Stage,
    StageContext,
    StageSection,
    parse_config,
    read_stage_json,
    run_stages,
    section_hash,
)

ORDER = ["evaluate", "localise", "circuit"]


def make_config(
    evaluate: dict[str, Any] | None = None, localise: dict[str, Any] | None = None
) -> InvestigationConfig:
    return parse_config(
        {
            "model": {"name": "toy/numbers"},
            "behaviour": {"task": "ioi"},
            "seed": 7,
            "stages": {
                "evaluate": {"settings": evaluate or {"count": 10}},
                "localise": {"settings": localise or {"scale": 2}},
                "circuit": {"settings": {"label": "total"}},
            },
        },
        settings_schema=None,  # the toy stages' own settings
    )


class Toy:
    """Three toy stages: write seeded numbers -> scale them -> sum them (circuit reads only localise)."""

    def __init__(self, config: InvestigationConfig) -> None:
        self.config = config
        self.calls: Counter[str] = Counter()
        self.fail: dict[str, BaseException] = {}

    def settings(self, name: str) -> dict[str, Any]:
        return self.config.stages.get(name).settings

    def numbers(self, ctx: StageContext) -> dict[str, Any]:
        self.calls["evaluate"] += 1
        rng = random.Random(self.config.seed)
        values = [rng.randint(0, 1000) for _ in range(self.settings("evaluate")["count"])]
        (ctx.out_dir / "numbers.json").write_text(json.dumps(values))
        return {"count": len(values)}

    def scale(self, ctx: StageContext) -> dict[str, Any]:
        self.calls["localise"] += 1
        values = json.loads((ctx.upstream["evaluate"] / "numbers.json").read_text())
        scaled = [v * self.settings("localise")["scale"] for v in values]
        for i, v in enumerate(scaled):
            (ctx.out_dir / f"part{i}.txt").write_text(str(v))
            ctx.progress(i + 1, len(scaled), f"wrote part{i}")
            if i == 3 and "localise" in self.fail:
                raise self.fail.pop("localise")
        (ctx.out_dir / "scaled.json").write_text(json.dumps(scaled))
        return {"max": max(scaled)}

    def total(self, ctx: StageContext) -> dict[str, Any]:
        self.calls["circuit"] += 1
        scaled = json.loads((ctx.upstream["localise"] / "scaled.json").read_text())
        (ctx.out_dir / "total.txt").write_text(f"{self.settings('circuit')['label']}={sum(scaled)}\n")
        return {"total": sum(scaled)}

    def stages(self) -> list[Stage]:
        runs = {"evaluate": self.numbers, "localise": self.scale, "circuit": self.total}
        deps = {"evaluate": (), "localise": ("evaluate",), "circuit": ("localise",)}
        return [Stage(n, runs[n], deps[n], section_hash(self.config, n)) for n in ORDER]


def files(run: Path) -> dict[str, bytes]:
    """Every output file under a run (timings.json aside)."""
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name not in ("timings.json", "stage.json")
    }


def mtimes(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*") if p.name != "timings.json"}


def stable_meta(run: Path, name: str) -> dict[str, Any]:
    meta = read_stage_json(run / name)
    assert meta is not None
    return {k: meta[k] for k in ("input_hash", "config_hash", "summary", "complete")}


def test_first_run_runs_every_stage_and_records_it(tmp_path):
    toy = Toy(make_config())
    report = run_stages(tmp_path / "run", toy.stages())
    assert report.ran == ORDER and report.skipped == []
    assert toy.calls == Counter(dict.fromkeys(ORDER, 1))
    meta = read_stage_json(tmp_path / "run" / "circuit")
    assert meta is not None and meta["complete"] is True and meta["schema_version"] == 1
    assert meta["summary"] == {"total": int((tmp_path / "run/circuit/total.txt").read_text().split("=")[1])}
    upstream = read_stage_json(tmp_path / "run" / "localise")
    assert upstream is not None and meta["upstream_builds"] == {"localise": upstream["build_id"]}
    timings = json.loads((tmp_path / "run" / "timings.json").read_text())
    assert timings["kind"] == "mechscope.investigate.timings"
    assert [s["status"] for s in timings["stages"]] == ["ran"] * 3
    assert all(s["wall_s"] > 0 and s["peak_rss_mb"] > 0 for s in timings["stages"])
    assert 0 <= report.overhead_s <= report.total_s and timings["overhead_s"] == report.overhead_s


def test_rerun_skips_everything_and_touches_no_file(tmp_path):
    toy = Toy(make_config())
    first = run_stages(tmp_path, toy.stages())
    before = mtimes(tmp_path)
    report = run_stages(tmp_path, toy.stages())
    assert report.skipped == ORDER and report.ran == []
    assert toy.calls == Counter(dict.fromkeys(ORDER, 1))
    assert mtimes(tmp_path) == before
    assert [r.summary for r in report.stages] == [r.summary for r in first.stages]
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert [s["status"] for s in timings["stages"]] == ["skipped"] * 3


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        ({"localise": {"scale": 3}}, {"evaluate": 1, "localise": 2, "circuit": 2}),
        ({"evaluate": {"count": 5}}, {"evaluate": 2, "localise": 2, "circuit": 2}),  # transitive
    ],
)
def test_changed_settings_rerun_that_stage_and_everything_downstream(tmp_path, changed, expected):
    first = run_stages(tmp_path, Toy(make_config()).stages())
    toy = Toy(make_config(**changed))
    toy.calls.update(dict.fromkeys(ORDER, 1))
    report = run_stages(tmp_path, toy.stages())
    assert toy.calls == Counter(expected)
    assert report.ran == [n for n in ORDER if expected[n] == 2]
    new_hash = [a.input_hash != b.input_hash for a, b in zip(first.stages, report.stages)]
    assert new_hash == [expected[n] == 2 for n in ORDER]  # the hash chain alone marks them
    fresh = tmp_path.parent / "fresh"
    run_stages(fresh, Toy(make_config(**changed)).stages())
    assert files(tmp_path) == files(fresh)


def test_changing_the_last_stage_reruns_only_it(tmp_path):
    config = make_config()
    run_stages(tmp_path, Toy(config).stages())
    stages = dataclasses.replace(config.stages, circuit=StageSection(settings={"label": "sum"}))
    toy = Toy(dataclasses.replace(config, stages=stages))
    report = run_stages(tmp_path, toy.stages())
    assert report.ran == ["circuit"] and toy.calls == Counter({"circuit": 1})
    assert (tmp_path / "circuit" / "total.txt").read_text().startswith("sum=")


@pytest.mark.parametrize(
    "error", [RuntimeError("disk on fire"), KeyboardInterrupt()], ids=["error", "ctrl-c"]
)
def test_a_failed_stage_leaves_nothing_and_resume_is_exact(tmp_path, error):
    run, reference = tmp_path / "run", tmp_path / "reference"
    toy = Toy(make_config())
    toy.fail["localise"] = error
    with pytest.raises(type(error)):
        run_stages(run, toy.stages())
    assert (run / "evaluate" / "stage.json").is_file()
    assert not (run / "localise").exists() and not (run / "circuit").exists()
    assert sorted(p.name for p in run.iterdir()) == ["evaluate", "timings.json"]  # no temporary build left
    timings = json.loads((run / "timings.json").read_text())
    assert [s["status"] for s in timings["stages"]] == ["ran", "failed"]

    report = run_stages(run, toy.stages())
    assert report.skipped == ["evaluate"] and report.ran == ["localise", "circuit"]
    assert toy.calls == Counter({"evaluate": 1, "localise": 2, "circuit": 1})
    run_stages(reference, Toy(make_config()).stages())
    assert files(run) == files(reference) and len(files(run)) == 13
    for name in ORDER:
        assert stable_meta(run, name) == stable_meta(reference, name)


def test_stale_outputs_and_leftover_builds_are_removed(tmp_path):
    config = make_config()
    run_stages(tmp_path, Toy(config).stages())
    (tmp_path / "localise" / "junk.txt").write_text("from an older config")
    leftover = tmp_path / ".localise.tmp-deadbeef"  # what a SIGKILL'd build leaves
    leftover.mkdir()
    (tmp_path / "circuit" / "stage.json").unlink()  # not complete: must rerun
    toy = Toy(make_config(localise={"scale": 5}))
    report = run_stages(tmp_path, toy.stages())
    assert report.ran == ["localise", "circuit"]
    assert not (tmp_path / "localise" / "junk.txt").exists() and not leftover.exists()


def test_incomplete_stage_json_is_not_trusted_and_a_rebuild_reruns_downstream(tmp_path):
    toy = Toy(make_config())
    run_stages(tmp_path, toy.stages())
    meta_path = tmp_path / "localise" / "stage.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "complete": False}))
    assert run_stages(tmp_path, toy.stages()).ran == ["localise", "circuit"]
    shutil.rmtree(tmp_path / "evaluate")  # same inputs, but a new build: downstream reruns
    assert run_stages(tmp_path, toy.stages()).ran == ORDER
    assert run_stages(tmp_path, toy.stages()).ran == []


@pytest.mark.parametrize(
    ("deps", "match"),
    [
        ({"localise": ("circuit",)}, r"'localise' depends on 'circuit', which comes after it"),
        ({"circuit": ("nowhere",)}, r"'circuit' depends on 'nowhere', which is not in the stage list"),
        ({"localise": ("localise",)}, r"'localise' depends on 'localise'"),
    ],
)
def test_bad_dependency_order_fails_before_any_work(tmp_path, deps, match):
    toy = Toy(make_config())
    stages = [dataclasses.replace(s, depends_on=deps.get(s.name, s.depends_on)) for s in toy.stages()]
    with pytest.raises(RunnerError, match=match):
        run_stages(tmp_path / "run", stages)
    assert toy.calls == Counter() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("names", [["a", "a"], ["../up"], [".hidden"], ["timings.json"]])
def test_bad_stage_names_are_refused(tmp_path, names):
    with pytest.raises(RunnerError):
        run_stages(tmp_path / "run", [Stage(n, lambda ctx: {}) for n in names])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("summary", [[1, 2], {"x": object()}], ids=["not-a-dict", "not-json"])
def test_a_bad_summary_is_an_error_and_leaves_nothing(tmp_path, summary):
    with pytest.raises(RunnerError, match="'bad'"):
        run_stages(tmp_path, [Stage("bad", lambda ctx: summary)])
    assert not (tmp_path / "bad").exists()


def test_progress_reports_steps_and_a_final_table(tmp_path):
    events: list[tuple[str, int, int, str]] = []
    report = run_stages(tmp_path, Toy(make_config()).stages(), progress=lambda *e: events.append(e))
    assert ("localise", 10, 10, "wrote part9") in events
    stage, step, total, table = events[-1]
    assert (stage, step, total) == ("", 3, 3)
    assert table.splitlines()[0].split() == ["stage", "status", "wall_s", "peak_rss_mb", "peak_gpu_mb"]
    assert [line.split()[:2] for line in table.splitlines()[1:4]] == [[n, "ran"] for n in ORDER]
    assert f"overhead {report.overhead_s:.3f} s" in table


def test_a_missing_upstream_stage_is_named(tmp_path):
    from mechscope.investigate.runner import read_stage_summary

    with pytest.raises(RunnerError, match=r"holds no complete stage"):
        read_stage_summary(tmp_path / "localise")
    (tmp_path / "localise").mkdir()
    (tmp_path / "localise" / "stage.json").write_text("{not json")
    with pytest.raises(RunnerError, match=str(tmp_path / "localise")):
        read_stage_summary(tmp_path / "localise")
