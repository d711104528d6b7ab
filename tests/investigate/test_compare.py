"""mechscope compare: two investigation runs side by side, built from copies of the tiny run
whose JSON is edited so every expected difference is known exactly."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from mechscope.cli import main
from mechscope.errors import MechscopeError
from mechscope.investigate.compare import compare_runs, format_comparison, render_comparison


def _copy(run: Path, tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(run, dst)
    return dst


def _load(path: Path) -> Any:
    return json.loads(path.read_text())


def _save(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data))


def _circuit_summary(run: Path) -> Path:
    src = _load(run / "summary.json")["circuit"]["cmd"]["source"]
    return run / src


def test_identical_runs_have_no_differences(tiny_run, tmp_path):
    a, b = _copy(tiny_run, tmp_path, "a"), _copy(tiny_run, tmp_path, "b")
    cmp = compare_runs(a, b)
    json.dumps(cmp)  # JSON-able
    summary = _load(a / "summary.json")
    assert cmp["same_model"] and cmp["same_task"] and cmp["same_seed"]
    assert cmp["config_diff"] == []
    assert cmp["n_differences"] == 0 and "identical" in cmp["verdict"]
    assert cmp["behaviour"]["rows"] and all(r["diff"] == 0 for r in cmp["behaviour"]["rows"])
    rows = cmp["components"]["rows"]
    assert len(rows) == len(summary["components"]) and {r["status"] for r in rows} == {"both"}
    assert all(r["effect_diff"] in (0, None) and r["score_diff"] in (0, None) for r in rows)
    top = cmp["components"]["top_k"]
    assert top["k"] == len(rows) and top["shared"] == top["k"] and top["jaccard"] == 1.0
    circ = cmp["circuit"]
    n_edges = len(_load(_circuit_summary(a))["top_edges"])
    assert n_edges > len(summary["circuit"]["top_edges"])  # read the circuit's own, longer list
    assert circ["top_k"] == n_edges and circ["edges_jaccard"] == 1.0
    assert circ["only_a"] == [] and circ["only_b"] == []
    hooks = cmp["features"]["hooks"]
    assert hooks and all(h["comparable"] for h in hooks)
    assert all(r["status"] == "both" and r["diff"] == 0 for h in hooks for r in h["rows"])
    assert sum(len(h["rows"]) for h in hooks) == len(summary["features"])
    assert cmp["checks"]["rows"] and all(r["same"] for r in cmp["checks"]["rows"])


def _edit_run_b(b: Path) -> dict[str, Any]:
    """Known edits to run B; returns what was changed."""
    s = _load(b / "summary.json")
    heads = [c for c in s["components"] if c.get("normalised_effect")]
    changed, dropped = heads[0], heads[-1]
    changed["normalised_effect"]["value"] += 0.5
    s["components"].remove(dropped)
    s["components"].append({"component": "a9.h9", "evidence": "made up",
                            "normalised_effect": {"value": 0.01, "source": "localise/heads/values.safetensors"}})  # fmt: skip
    s["seed"] = 1
    s["behaviour"]["clean_metric"]["value"] += 0.25
    s["check_counts"]["passed"] -= 1
    s["check_counts"]["failed"] += 1
    first = s["checks"][0]
    first["verdict"] = "failed" if first["verdict"] != "failed" else "passed"
    feature = s["features"][0]
    feature["attribution"]["value"] += 1.0
    _save(b / "summary.json", s)
    cfg = _load(b / "config.json")
    cfg["seed"] = 1
    cfg["stages"]["circuit"]["settings"]["steps"] += 2
    _save(b / "config.json", cfg)
    path = _circuit_summary(b)
    circ = _load(path)
    old_edge = circ["top_edges"][-1][0]
    circ["top_edges"][-1][0] = "x->y"
    _save(path, circ)
    return {"changed": changed["component"], "dropped": dropped["component"], "old_edge": old_edge,
            "n_edges": len(circ["top_edges"]), "n_components": len(s["components"]),
            "check": first["name"], "feature": (feature["hook"], feature["feature"])}  # fmt: skip


def test_known_differences_are_found_exactly(tiny_run, tmp_path):
    b = _copy(tiny_run, tmp_path, "b")
    e = _edit_run_b(b)
    cfg = _load(tiny_run / "config.json")
    cmp = compare_runs(tiny_run, b)
    steps = cfg["stages"]["circuit"]["settings"]["steps"]
    assert cmp["config_diff"] == [
        {"field": "seed", "a": 0, "b": 1, "status": "both"},
        {"field": "stages.circuit.settings.steps", "a": steps, "b": steps + 2, "status": "both"},
    ]
    assert cmp["same_model"] and cmp["same_task"] and not cmp["same_seed"]
    assert cmp["verdict"].startswith("same model and task, seeds 0 vs 1: ")
    beh = {r["measure"]: r["diff"] for r in cmp["behaviour"]["rows"]}
    assert beh.pop("clean_metric") == pytest.approx(0.25) and set(beh.values()) == {0}
    rows = {r["component"]: r for r in cmp["components"]["rows"]}
    assert rows[e["changed"]]["effect_diff"] == pytest.approx(0.5) and rows[e["changed"]]["status"] == "both"
    assert rows[e["dropped"]]["status"] == "only A" and rows[e["dropped"]]["effect_b"] is None
    assert rows["a9.h9"]["status"] == "only B" and rows["a9.h9"]["effect_a"] is None
    others = [r for n, r in rows.items() if n not in (e["changed"], e["dropped"], "a9.h9")]
    assert all(r["status"] == "both" and r["effect_diff"] in (0, None) for r in others)
    mags = [max(abs(r[k]["value"]) for k in ("effect_a", "effect_b") if r[k]) for r in rows.values()
            if r["effect_a"] or r["effect_b"]]  # fmt: skip
    ordered = [r for r in cmp["components"]["rows"] if r["effect_a"] or r["effect_b"]]
    assert [max(abs(r[k]["value"]) for k in ("effect_a", "effect_b") if r[k]) for r in ordered] == sorted(
        mags, reverse=True
    )
    n = e["n_components"]
    assert cmp["components"]["top_k"]["k"] == n
    assert cmp["components"]["top_k"]["jaccard"] == pytest.approx((n - 1) / (n + 1))
    circ = cmp["circuit"]
    assert circ["only_a"] == [e["old_edge"]] and circ["only_b"] == ["x->y"]
    assert circ["edges_jaccard"] == pytest.approx((e["n_edges"] - 1) / (e["n_edges"] + 1))
    assert all(r["diff"] == 0 for r in circ["rows"])
    hook = next(h for h in cmp["features"]["hooks"] if h["hook"] == e["feature"][0])
    assert hook["comparable"]
    frow = {r["feature"]: r["diff"] for r in hook["rows"]}
    assert frow.pop(e["feature"][1]) == pytest.approx(1.0) and set(frow.values()) <= {0}
    counts = {r["count"]: r["diff"] for r in cmp["checks"]["counts"]}
    assert counts == {"passed": -1, "weak": 0, "failed": 1, "inconclusive": 0}
    assert [r["name"] for r in cmp["checks"]["rows"] if not r["same"]] == [e["check"]]
    # config 2 + behaviour 1 + components 3 + edges 2 + features 1 + counts 2 + checks 1
    assert cmp["n_differences"] == 12


def test_different_dictionaries_are_not_compared_by_index(tiny_run, tmp_path):
    b = _copy(tiny_run, tmp_path, "b")
    s = _load(b / "summary.json")
    weights = b / s["dictionaries"][0]["path"] / "weights.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")
    hook = s["dictionaries"][0]["hook"]
    feats = [f for f in s["features"] if f["hook"] == hook]
    feats[0]["explanation"] = "something else entirely"
    _save(b / "summary.json", s)
    cmp = compare_runs(tiny_run, b)
    entry = next(h for h in cmp["features"]["hooks"] if h["hook"] == hook)
    assert not entry["comparable"] and "not comparable by index" in entry["reason"]
    assert "rows" not in entry
    assert [f["feature"] for f in entry["features_b"]] == [f["feature"] for f in feats]
    pairs = {(p["feature_a"], p["feature_b"]) for p in entry["pairs"]}
    assert (feats[0]["feature"], feats[0]["feature"]) not in pairs
    assert all((f["feature"], f["feature"]) in pairs for f in feats[1:] if f["explanation"])
    assert "not comparable by index" in cmp["verdict"]
    assert "not comparable by index" in format_comparison(cmp)


@pytest.mark.parametrize(("loaded_b", "comparable"), [("/dicts/x", True), ("/dicts/y", False)])
def test_loaded_from_decides_without_weights(tiny_run, tmp_path, loaded_b, comparable):
    runs = []
    for name, loaded in (("a", "/dicts/x"), ("b", loaded_b)):
        run = _copy(tiny_run, tmp_path, name)
        s = _load(run / "summary.json")
        (run / s["dictionaries"][0]["path"] / "weights.safetensors").unlink()
        stage = _load(run / "dictionaries" / "stage.json")
        stage["summary"]["dictionaries"][0]["loaded_from"] = loaded
        _save(run / "dictionaries" / "stage.json", stage)
        runs.append(run)
    cmp = compare_runs(*runs)
    assert [h["comparable"] for h in cmp["features"]["hooks"]] == [comparable]


def test_text_and_html_views(tiny_run, tmp_path):
    b = _copy(tiny_run, tmp_path, "b")
    _edit_run_b(b)
    s = _load(b / "summary.json")
    hostile = '<script>alert("x")</script> & ' + "long " * 60
    s["features"][0]["explanation"] = hostile
    _save(b / "summary.json", s)
    cmp = compare_runs(tiny_run, b)
    text = format_comparison(cmp)
    lines = text.splitlines()
    assert lines[0] == cmp["verdict"] and len(cmp["verdict"]) <= 100
    assert max(len(line) for line in lines) <= 100
    assert "x->y" in text and "a9.h9" in text and "only B" in text and "stages.circuit.settings.steps" in text
    page = render_comparison(cmp)
    assert '<link rel="icon" href="data:,">' in page
    assert "<script" not in page and html.escape(hostile.strip()) in page
    assert "http://" not in page and "https://" not in page and " src=" not in page
    assert html.escape(str(tiny_run)) in page and html.escape(str(b)) in page
    assert f'title="{html.escape(str(b))}/evaluate/eval.json"' in page
    assert "x-&gt;y" in page and "a9.h9" in page


def test_cli_compare_writes_page(tiny_run, tmp_path, capsys):
    a, b = _copy(tiny_run, tmp_path, "a"), _copy(tiny_run, tmp_path, "b")
    out = tmp_path / "cmp" / "compare.html"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    verdict = compare_runs(a, b)["verdict"]
    assert printed.splitlines()[0] == verdict
    assert f"wrote {out}" in printed
    assert html.escape(verdict) in out.read_text()


def _not_a_run(run: Path) -> Path:
    (run / "summary.json").unlink()
    return run / "summary.json"


def _corrupt(name: str) -> Any:
    def edit(run: Path) -> Path:
        (run / name).write_text('{"kind": "mechscope.investigate.summary", ')
        return run / name

    return edit


def _wrong_kind(run: Path) -> Path:
    _save(run / "summary.json", {"kind": "mechscope.something.else"})
    return run / "summary.json"


@pytest.mark.parametrize("spoil", [_not_a_run, _corrupt("summary.json"), _corrupt("config.json"), _wrong_kind],
                         ids=["no-summary", "corrupt-summary", "corrupt-config", "wrong-kind"])  # fmt: skip
def test_bad_runs_exit_2_naming_the_file(tiny_run, tmp_path, capsys, spoil):
    bad = _copy(tiny_run, tmp_path, "bad")
    path = spoil(bad)
    with pytest.raises(MechscopeError, match=re.escape(path.name)):
        compare_runs(tiny_run, bad)
    assert main(["compare", str(tiny_run), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(path) in err


def test_empty_directory_is_not_a_run(tiny_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(empty), str(tiny_run)]) == 2
    err = capsys.readouterr().err
    assert "not an investigation run" in err and str(empty / "summary.json") in err
