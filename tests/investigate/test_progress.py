"""The live progress view: stage, step, time estimates, and the closing table."""

from __future__ import annotations

import io
import json

from mechscope.investigate.progress import LiveProgress, clock


def test_clock():
    assert (clock(0), clock(59.6), clock(61), clock(3725)) == ("0:00", "1:00", "1:01", "1:02:05")


def test_lines_with_estimates_from_the_steps_and_the_previous_run(tmp_path, monkeypatch):
    previous = tmp_path / "timings.json"
    previous.write_text(json.dumps({"stages": [
        {"name": "a", "status": "ran", "wall_s": 10.0},
        {"name": "b", "status": "ran", "wall_s": 30.0},
        {"name": "c", "status": "ran", "wall_s": 60.0},
    ]}))  # fmt: skip
    now = [100.0]
    monkeypatch.setattr("mechscope.investigate.progress.time.perf_counter", lambda: now[0])
    out = io.StringIO()
    view = LiveProgress(out, tty=False)
    view.begin(["a", "b", "c"], previous=previous)
    view.event("b", 0, 4, "running")
    now[0] += 20.0
    view.event("b", 1, 4, "step one")
    view.event("", 3, 3, "the table")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[2/3 b 0:00] 0/4 running") and "run ~1:00 after this stage" in lines[0]
    assert lines[1].startswith("[2/3 b 0:20] 1/4 step one · stage ~1:00 left")  # 20 s per step, 3 to go
    assert lines[1].endswith("total 0:20") and lines[2] == "the table"


def test_a_terminal_gets_one_redrawn_line(tmp_path):
    out = io.StringIO()
    view = LiveProgress(out, tty=True)
    view.begin(["a"])
    view.event("a", 0, 2, "running")
    view.event("a", 1, 2, "half")
    view.event("a", 1, 1, "done in 1.00 s")
    text = out.getvalue()
    assert (
        text.count("\r\x1b[2K") == 3
        and text.count("\n") == 1
        and text.endswith("done in 1.00 s · total 0:00\n")
    )
