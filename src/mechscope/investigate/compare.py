"""``mechscope compare RUN_A RUN_B``: two investigation runs side by side (docs/compare.md).

Reads JSON files only (``summary.json``, ``config.json``, ``dictionaries/stage.json``, the
circuit's own ``summary.json``) and hashes dictionary weights files; no model is loaded.
Every difference is B minus A. Numbers keep their ``{"value", "source"}`` form so the text
and HTML views can say which artifact each came from.
"""

from __future__ import annotations

import hashlib
import html
import json
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ArtifactError
from .summary import BEHAVIOUR_KEYS
from .summary import KIND as SUMMARY_KIND

__all__ = ["KIND", "SCHEMA_VERSION", "compare_runs", "format_comparison", "render_comparison"]

KIND = "mechscope.investigate.comparison"
SCHEMA_VERSION = 1
WIDTH = 100
CHECK_COUNTS = ("passed", "weak", "failed", "inconclusive")
_MISSING = object()

Row = list[tuple[str, str | None]]  # cells: (text, source path shown as a tooltip or None)
Section = tuple[str, list[str], list[Row], list[str]]  # title, headers, rows, notes


# --------------------------------------------------------------------------- reading runs


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: cannot be read ({e})") from e
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: corrupt JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e


def _optional_json(path: Path) -> Any:
    return _read_json(path) if path.is_file() else None


def _load_run(run: Path) -> dict[str, Any]:
    run = Path(run)
    path = run / "summary.json"
    if not path.is_file():
        raise ArtifactError(
            f"{run} is not an investigation run: {path} does not exist "
            "(give a directory written by mechscope investigate --out)"
        )
    summary = _read_json(path)
    kind = summary.get("kind") if isinstance(summary, dict) else type(summary).__name__
    if kind != SUMMARY_KIND:
        raise ArtifactError(
            f"{path} is not an investigation summary (kind {kind!r}, expected {SUMMARY_KIND!r})"
        )
    config = _optional_json(run / "config.json")
    if config is not None and not isinstance(config, dict):
        raise ArtifactError(f"{run / 'config.json'}: expected a JSON object")
    stage = _optional_json(run / "dictionaries" / "stage.json")
    loaded = {}
    if isinstance(stage, dict):
        for d in (stage.get("summary") or {}).get("dictionaries") or []:
            if isinstance(d, dict) and d.get("loaded_from"):
                loaded[str(d.get("name"))] = str(d["loaded_from"])
    return {"dir": run, "summary": summary, "config": config or {}, "loaded_from": loaded}


# --------------------------------------------------------------------------- small helpers


def _num(m: Any) -> float | None:
    """The value of a measurement (or a bare number); None when absent or not a number."""
    v = m.get("value") if isinstance(m, dict) else m
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _diff(a: Any, b: Any) -> float | None:
    va, vb = _num(a), _num(b)
    return None if va is None or vb is None else vb - va


def _larger(*ms: Any) -> float | None:
    vals = [abs(v) for v in map(_num, ms) if v is not None]
    return max(vals) if vals else None


def _status(in_a: bool, in_b: bool) -> str:
    return "both" if in_a and in_b else ("only A" if in_a else "only B")


def _jaccard(a: set[str], b: set[str]) -> float | None:
    return len(a & b) / len(a | b) if a | b else None


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj} if prefix else {}


def _side(a: Any, b: Any) -> dict[str, Any]:
    return {"a": a, "b": b, "same": a == b}


def _by_magnitude(*keys: str) -> Any:
    """Sort key: larger |value| over ``keys`` first, rows without a value last."""

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        out: list[Any] = []
        for group in keys:
            m = _larger(*(row.get(k) for k in group.split(",")))
            out += [m is None, -(m or 0.0)]
        return (*out, str(row.get("component", row.get("edge", row.get("feature", "")))))

    return key


# --------------------------------------------------------------------------- sections


def _config_diff(ca: dict[str, Any], cb: dict[str, Any]) -> list[dict[str, Any]]:
    fa, fb = _flatten(ca), _flatten(cb)
    out = []
    for field in sorted(set(fa) | set(fb)):
        a, b = fa.get(field, _MISSING), fb.get(field, _MISSING)
        if a is _MISSING or b is _MISSING or json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            out.append({"field": field, "a": None if a is _MISSING else a, "b": None if b is _MISSING else b,
                        "status": _status(a is not _MISSING, b is not _MISSING)})  # fmt: skip
    return out


def _behaviour(sa: dict[str, Any], sb: dict[str, Any]) -> dict[str, Any]:
    ba, bb = sa.get("behaviour") or {}, sb.get("behaviour") or {}
    rows = [{"measure": k, "a": ba.get(k), "b": bb.get(k), "diff": _diff(ba.get(k), bb.get(k))}
            for k in BEHAVIOUR_KEYS if ba.get(k) is not None or bb.get(k) is not None]  # fmt: skip
    return {"meta": {k: _side(ba.get(k), bb.get(k)) for k in ("task", "n", "metric")}, "rows": rows}


def _component_index(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for c in s.get("components") or []:
        if isinstance(c, dict) and c.get("component") is not None:
            out.setdefault(str(c["component"]), c)
    return out


def _ranked(comps: dict[str, dict[str, Any]]) -> list[str]:
    rows = [
        {"component": n, "e": c.get("normalised_effect"), "s": c.get("circuit_score")}
        for n, c in comps.items()
    ]
    return [str(r["component"]) for r in sorted(rows, key=_by_magnitude("e", "s"))]


def _components(sa: dict[str, Any], sb: dict[str, Any]) -> dict[str, Any]:
    ca, cb = _component_index(sa), _component_index(sb)
    rows = []
    for name in set(ca) | set(cb):
        a, b = ca.get(name, {}), cb.get(name, {})
        ea, eb, xa, xb = (
            a.get("normalised_effect"),
            b.get("normalised_effect"),
            a.get("circuit_score"),
            b.get("circuit_score"),
        )
        rows.append({"component": name, "status": _status(name in ca, name in cb),
                     "effect_a": ea, "effect_b": eb, "effect_diff": _diff(ea, eb),
                     "score_a": xa, "score_b": xb, "score_diff": _diff(xa, xb)})  # fmt: skip
    rows.sort(key=_by_magnitude("effect_a,effect_b", "score_a,score_b"))
    k = min(len(ca), len(cb))
    top_a, top_b = _ranked(ca)[:k], _ranked(cb)[:k]
    top = {"k": k, "shared": len(set(top_a) & set(top_b)), "jaccard": _jaccard(set(top_a), set(top_b)),
           "top_a": top_a, "top_b": top_b}  # fmt: skip
    return {"rows": rows, "top_k": top}


def _edges(run: Path, c: dict[str, Any]) -> list[dict[str, Any]]:
    """The circuit's top edges: the circuit's own summary.json (20) when present, else summary.json's."""
    edges = [e for e in c.get("top_edges") or [] if isinstance(e, dict) and "edge" in e]
    measures = (c.get("cpr"), c.get("cmd"), c.get("circuit_edges"))
    srcs = [m["source"] for m in measures if isinstance(m, dict) and isinstance(m.get("source"), str)]
    if not srcs:
        return edges
    rel = Path(srcs[0]).parent
    own = _optional_json(run / rel / "summary.json")
    top = own.get("top_edges") if isinstance(own, dict) else None
    if isinstance(top, list) and len(top) > len(edges):
        src = (rel / "scores.safetensors").as_posix()
        edges = [{"edge": str(e[0]), "score": {"value": e[1], "source": src}}
                 for e in top if isinstance(e, list | tuple) and len(e) == 2]  # fmt: skip
    return edges


def _circuit(ra: dict[str, Any], rb: dict[str, Any]) -> dict[str, Any]:
    ca, cb = ra["summary"].get("circuit") or {}, rb["summary"].get("circuit") or {}
    xa, xb = ca.get("exact_check") or {}, cb.get("exact_check") or {}
    pairs = {k: (ca.get(k), cb.get(k)) for k in ("circuit_edges", "cpr", "cmd")}
    pairs["exact_check_pearson"] = (xa.get("pearson"), xb.get("pearson"))
    rows = [{"measure": k, "a": a, "b": b, "diff": _diff(a, b)} for k, (a, b) in pairs.items() if a or b]
    ea, eb = _edges(ra["dir"], ca), _edges(rb["dir"], cb)
    k = min(len(ea), len(eb))
    sa, sb = {e["edge"]: e["score"] for e in ea[:k]}, {e["edge"]: e["score"] for e in eb[:k]}
    edges = [{"edge": n, "status": _status(n in sa, n in sb), "score_a": sa.get(n), "score_b": sb.get(n)}
             for n in set(sa) | set(sb)]  # fmt: skip
    edges.sort(key=_by_magnitude("score_a,score_b"))
    return {
        "present": _side(bool(ca), bool(cb)),
        "meta": {k: _side(ca.get(k), cb.get(k)) for k in ("method", "graph", "n_edges")},
        "rows": rows, "top_k": k, "edges_jaccard": _jaccard(set(sa), set(sb)) if k else None,
        "edges": edges, "only_a": [e["edge"] for e in edges if e["status"] == "only A"],
        "only_b": [e["edge"] for e in edges if e["status"] == "only B"],
    }  # fmt: skip


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise ArtifactError(f"{path}: cannot be read ({e})") from e
    return h.hexdigest()


def _dictionaries(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """hook -> the run's dictionary there: name, path, sha256 of its weights, loaded_from."""
    out: dict[str, dict[str, Any]] = {}
    for d in r["summary"].get("dictionaries") or []:
        if not isinstance(d, dict) or d.get("hook") is None:
            continue
        weights = r["dir"] / str(d.get("path")) / "weights.safetensors"
        out.setdefault(str(d["hook"]), {"name": d.get("name"), "path": d.get("path"),
                                        "sha256": _sha256(weights) if weights.is_file() else None,
                                        "loaded_from": r["loaded_from"].get(str(d.get("name")))})  # fmt: skip
    return out


def _same_dictionary(a: dict[str, Any] | None, b: dict[str, Any] | None) -> tuple[bool, str]:
    if a is None or b is None:
        return False, "only in A" if b is None else "only in B"
    if a["sha256"] and b["sha256"]:
        if a["sha256"] == b["sha256"]:
            return True, f"same dictionary weights (sha256 {a['sha256'][:12]})"
        return False, "different dictionaries: features are not comparable by index"
    if a["loaded_from"] and a["loaded_from"] == b["loaded_from"]:
        return True, f"same dictionary (both loaded from {a['loaded_from']})"
    return False, "dictionaries not known to be the same: features are not comparable by index"


def _feature_rows(fa: list[dict[str, Any]], fb: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ia, ib = {f.get("feature"): f for f in fa}, {f.get("feature"): f for f in fb}
    rows = []
    for idx in set(ia) | set(ib):
        a, b = ia.get(idx, {}), ib.get(idx, {})
        rows.append({"feature": idx, "status": _status(idx in ia, idx in ib),
                     "attribution_a": a.get("attribution"), "attribution_b": b.get("attribution"),
                     "diff": _diff(a.get("attribution"), b.get("attribution")),
                     "explanation_a": a.get("explanation"), "explanation_b": b.get("explanation"),
                     "verdict_a": a.get("verdict"), "verdict_b": b.get("verdict")})  # fmt: skip
    rows.sort(key=_by_magnitude("attribution_a,attribution_b"))
    return rows


def _brief(fs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: f.get(k) for k in ("feature", "attribution", "explanation", "verdict")} for f in fs]


def _same_explanations(fa: list[dict[str, Any]], fb: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pairs of features (A, B) whose explanations are textually identical (ends stripped)."""

    def text(f: dict[str, Any]) -> str:
        return str(f.get("explanation") or "").strip()

    in_b: dict[str, list[Any]] = {}
    for f in fb:
        if text(f):
            in_b.setdefault(text(f), []).append(f.get("feature"))
    return [{"explanation": text(f), "feature_a": f.get("feature"), "feature_b": g}
            for f in fa if text(f) for g in in_b.get(text(f), [])]  # fmt: skip


def _features(ra: dict[str, Any], rb: dict[str, Any]) -> dict[str, Any]:
    da, db = _dictionaries(ra), _dictionaries(rb)
    feats: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for side, r in enumerate((ra, rb)):
        for f in r["summary"].get("features") or []:
            if isinstance(f, dict):
                feats.setdefault(str(f.get("hook")), ([], []))[side].append(f)
    hooks = []
    for hook in sorted(set(da) | set(db) | set(feats)):
        fa, fb = feats.get(hook, ([], []))
        ok, reason = _same_dictionary(da.get(hook), db.get(hook))
        entry: dict[str, Any] = {"hook": hook, "dictionary_a": da.get(hook), "dictionary_b": db.get(hook),
                                 "comparable": ok, "reason": reason}  # fmt: skip
        if ok:
            entry["rows"] = _feature_rows(fa, fb)
        else:
            entry.update(features_a=_brief(fa), features_b=_brief(fb), pairs=_same_explanations(fa, fb))
        hooks.append(entry)
    return {"hooks": hooks}


def _checks(sa: dict[str, Any], sb: dict[str, Any]) -> dict[str, Any]:
    ka, kb = sa.get("check_counts") or {}, sb.get("check_counts") or {}
    counts = [
        {"count": k, "a": ka.get(k), "b": kb.get(k), "diff": _diff(ka.get(k), kb.get(k))}
        for k in CHECK_COUNTS
    ]
    named: list[dict[str, dict[str, Any]]] = [{}, {}]
    for side, s in enumerate((sa, sb)):
        for c in s.get("checks") or []:
            if isinstance(c, dict):
                name, i = str(c.get("name")), 2
                while name in named[side]:  # a repeated name keeps both rows
                    name, i = f"{c.get('name')} ({i})", i + 1
                named[side][name] = c
    order = list(named[0]) + [n for n in named[1] if n not in named[0]]
    rows = []
    for name in order:
        a, b = named[0].get(name, {}), named[1].get(name, {})
        rows.append({"name": name, "status": _status(name in named[0], name in named[1]),
                     "verdict_a": a.get("verdict"), "verdict_b": b.get("verdict"),
                     "measured_a": a.get("measured"), "measured_b": b.get("measured"),
                     "same": a.get("verdict") == b.get("verdict")})  # fmt: skip
    return {"counts": counts, "rows": rows}


def _n_differences(cmp: dict[str, Any]) -> int:
    """How many compared items differ (0 for two copies of one run)."""
    n = len(cmp["config_diff"])
    n += sum(r["diff"] != 0 for r in cmp["behaviour"]["rows"])
    n += sum(r["status"] != "both" or r["effect_diff"] not in (0, None) or r["score_diff"] not in (0, None)
             for r in cmp["components"]["rows"])  # fmt: skip
    c = cmp["circuit"]
    n += sum(r["diff"] != 0 for r in c["rows"]) + len(c["only_a"]) + len(c["only_b"])
    for h in cmp["features"]["hooks"]:
        rows = h.get("rows")
        n += 1 if rows is None else sum(r["status"] != "both" or r["diff"] not in (0, None) for r in rows)
    ch = cmp["checks"]
    return n + sum(r["diff"] not in (0, None) for r in ch["counts"]) + sum(not r["same"] for r in ch["rows"])


def _short(x: Any) -> str:
    return Path(str(x)).name or str(x)


def _verdict(cmp: dict[str, Any]) -> str:
    r = cmp["runs"]
    head = []
    same_mt = cmp["same_model"] and cmp["same_task"]
    if same_mt:
        head.append("same model and task")
    else:
        for key, word in (("model", "model"), ("task", "task")):
            a, b = _short(r["a"][key]), _short(r["b"][key])
            head.append(f"same {word}" if cmp[f"same_{word}"] else f"{word}s {a} vs {b}")
    head.append(
        f"seed {r['a']['seed']}" if cmp["same_seed"] else f"seeds {r['a']['seed']} vs {r['b']['seed']}"
    )
    top = cmp["components"]["top_k"]
    parts = [f"{top['shared']}/{top['k']} top components shared"]
    j = cmp["circuit"]["edges_jaccard"]
    if j is not None:
        parts.append(f"edge Jaccard {j:.2f}")
    hooks = cmp["features"]["hooks"]
    apart = sum(not h["comparable"] for h in hooks)
    if apart:
        parts.append(f"features not comparable by index at {apart} of {len(hooks)} hooks")
    n = cmp["n_differences"]
    parts.append("identical" if n == 0 else f"{n} differences")
    return ", ".join(head) + ": " + ", ".join(parts)


def compare_runs(run_a: Path, run_b: Path) -> dict[str, Any]:
    """Compare two investigation run directories; a JSON-able dict (differences are B - A)."""
    ra, rb = _load_run(Path(run_a)), _load_run(Path(run_b))
    sa, sb = ra["summary"], rb["summary"]
    runs = {side: {"path": str(r["dir"]), **{k: r["summary"].get(k) for k in ("model", "task", "seed")}}
            for side, r in (("a", ra), ("b", rb))}  # fmt: skip
    cmp: dict[str, Any] = {
        "kind": KIND, "schema_version": SCHEMA_VERSION, "runs": runs,
        "same_model": sa.get("model") == sb.get("model"), "same_task": sa.get("task") == sb.get("task"),
        "same_seed": sa.get("seed") == sb.get("seed"),
        "config_diff": _config_diff(ra["config"], rb["config"]),
        "behaviour": _behaviour(sa, sb), "components": _components(sa, sb),
        "circuit": _circuit(ra, rb), "features": _features(ra, rb), "checks": _checks(sa, sb),
    }  # fmt: skip
    cmp["n_differences"] = _n_differences(cmp)
    cmp["verdict"] = _verdict(cmp)
    return cmp


# --------------------------------------------------------------------------- views


def _fmt(x: Any, spec: str = "{:.4g}") -> str:
    v = _num(x)
    if v is not None:
        return spec.format(v)
    return "-" if x is None else str(x)


def _cell(m: Any, run: str, spec: str = "{:.4g}") -> tuple[str, str | None]:
    src = m.get("source") if isinstance(m, dict) else None
    return _fmt(m, spec), f"{run}/{src}" if isinstance(src, str) else None


def _plain(*xs: Any) -> Row:
    return [(_fmt(x) if not isinstance(x, str) else x, None) for x in xs]


def _measure_row(r: dict[str, Any], pa: str, pb: str) -> Row:
    return [(r["measure"], None), _cell(r["a"], pa), _cell(r["b"], pb), (_fmt(r["diff"], "{:+.4g}"), None)]


def _sections(cmp: dict[str, Any]) -> list[Section]:
    """(title, headers, rows, notes) for each table, shared by the text and HTML views."""
    pa, pb = cmp["runs"]["a"]["path"], cmp["runs"]["b"]["path"]
    runs = [_plain(k, *(str(cmp["runs"][s][k]) for s in "ab"), "yes" if cmp[f"same_{k}"] else "no")
            for k in ("model", "task", "seed")]  # fmt: skip
    out = [("Runs", ["", "A", "B", "same"], runs, [f"A: {pa}", f"B: {pb}"])]
    cfg = [_plain(d["field"], json.dumps(d["a"]), json.dumps(d["b"])) for d in cmp["config_diff"]]
    out.append(("Config differences", ["field", "A", "B"], cfg, [] if cfg else ["none"]))
    beh = [_measure_row(r, pa, pb) for r in cmp["behaviour"]["rows"]]
    out.append(("Behaviour", ["measure", "A", "B", "B-A"], beh, []))
    comp = cmp["components"]
    rows = [[(r["component"], None), (r["status"], None), _cell(r["effect_a"], pa), _cell(r["effect_b"], pb),
             (_fmt(r["effect_diff"], "{:+.3g}"), None), _cell(r["score_a"], pa), _cell(r["score_b"], pb),
             (_fmt(r["score_diff"], "{:+.3g}"), None)] for r in comp["rows"]]  # fmt: skip
    t = comp["top_k"]
    note = f"top {t['k']}: {t['shared']} shared, Jaccard {_fmt(t['jaccard'], '{:.2f}')}"
    out.append(
        (
            "Components",
            ["component", "in", "effect A", "effect B", "B-A", "score A", "score B", "B-A"],
            rows,
            [note],
        )
    )
    out += _circuit_sections(cmp["circuit"], pa, pb)
    out += _feature_sections(cmp["features"], pa, pb)
    ch = cmp["checks"]
    counts = [_plain(r["count"], r["a"], r["b"], _fmt(r["diff"], "{:+.0f}")) for r in ch["counts"]]
    out.append(("Check counts", ["", "A", "B", "B-A"], counts, []))
    rows = [[(r["name"], None), (str(r["verdict_a"] or "-"), None), (str(r["verdict_b"] or "-"), None),
             _cell(r["measured_a"], pa), _cell(r["measured_b"], pb), ("" if r["same"] else "DIFFERS", None)]
            for r in ch["rows"]]  # fmt: skip
    out.append(("Checks", ["check", "verdict A", "verdict B", "measured A", "measured B", ""], rows, []))
    return out


def _circuit_sections(c: dict[str, Any], pa: str, pb: str) -> list[Section]:
    meta = [_plain(k, str(v["a"]), str(v["b"]), "" if v["same"] else "differs") for k, v in c["meta"].items()]
    rows = meta + [_measure_row(r, pa, pb) for r in c["rows"]]
    notes = [] if c["present"]["a"] or c["present"]["b"] else ["no circuit stage in either run"]
    out = [("Circuit", ["measure", "A", "B", "B-A"], rows, notes)]
    edges = [
        [(e["edge"], None), (e["status"], None), _cell(e["score_a"], pa), _cell(e["score_b"], pb)]
        for e in c["edges"]
    ]
    note = (f"top {c['top_k']} edges: Jaccard {_fmt(c['edges_jaccard'], '{:.2f}')}, "
            f"{len(c['only_a'])} only in A, {len(c['only_b'])} only in B")  # fmt: skip
    out.append(("Circuit top edges", ["edge", "in", "score A", "score B"], edges, [note]))
    return out


def _feature_sections(f: dict[str, Any], pa: str, pb: str) -> list[Section]:
    out: list[Section] = []
    for h in f["hooks"]:
        title = f"Features at {h['hook']}"
        if h["comparable"]:
            rows = [[(str(r["feature"]), None), (r["status"], None), _cell(r["attribution_a"], pa),
                     _cell(r["attribution_b"], pb), (_fmt(r["diff"], "{:+.3g}"), None),
                     (str(r["explanation_a"] or "-"), None), (str(r["explanation_b"] or "-"), None)]
                    for r in h["rows"]]  # fmt: skip
            headers = ["feature", "in", "attr A", "attr B", "B-A", "explanation A", "explanation B"]
            out.append((title, headers, rows, [h["reason"]]))
            continue
        sides = (("A", pa, "features_a"), ("B", pb, "features_b"))
        rows = [[(side, None), (str(x["feature"]), None), _cell(x["attribution"], path),
                 (str(x["explanation"] or "-"), None)] for side, path, key in sides for x in h[key]]  # fmt: skip
        notes = [h["reason"]]
        notes += [
            f"same explanation: A {p['feature_a']} = B {p['feature_b']}: {p['explanation']}"
            for p in h["pairs"]
        ]
        out.append((title, ["run", "feature", "attribution", "explanation"], rows, notes))
    return out


def _fit(widths: list[int], total: int) -> list[int]:
    """Shrink the widest columns until the row (two spaces between columns) fits ``total``."""
    widths = list(widths)
    while sum(widths) + 2 * (len(widths) - 1) > total and max(widths) > 4:
        widths[widths.index(max(widths))] -= 1
    return widths


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _text_table(headers: list[str], rows: Iterable[Row]) -> list[str]:
    body = [[text for text, _ in row] + [""] * (len(headers) - len(row)) for row in rows]
    widths = [max(len(" ".join(str(r[i]).split())) for r in [headers, *body]) for i in range(len(headers))]
    widths = _fit(widths, WIDTH)
    lines = []
    for i, r in enumerate([headers, *body]):
        cells = [_clip(str(x), w) for x, w in zip(r, widths)]
        lines.append(
            "  ".join(
                c.rjust(w) if _num_like(c) and i else c.ljust(w) for c, w in zip(cells, widths)
            ).rstrip()
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths).rstrip())
    return lines


def _num_like(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def format_comparison(cmp: dict[str, Any]) -> str:
    """Plain-text tables (at most 100 columns) starting with the one-line verdict."""
    lines = textwrap.wrap(cmp["verdict"], WIDTH) or [""]
    for title, headers, rows, notes in _sections(cmp):
        lines += ["", title]
        for note in notes:
            lines += textwrap.wrap(note, WIDTH, subsequent_indent="  ")
        if rows:
            lines += _text_table(headers, rows)
    return "\n".join(lines) + "\n"


_CSS = (
    "body{font:14px/1.4 system-ui,sans-serif;margin:2em;max-width:80em}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}td[title]{text-decoration:underline dotted}"
    ".note{color:#555;margin:.2em 0}"
)


def render_comparison(cmp: dict[str, Any]) -> str:
    """One self-contained HTML page: the verdict, both run paths and every table (sources as tooltips)."""
    e = html.escape
    pa, pb = cmp["runs"]["a"]["path"], cmp["runs"]["b"]["path"]
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        '<link rel="icon" href="data:,">',
        f"<title>mechscope compare: {e(_short(pa))} vs {e(_short(pb))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(cmp['verdict'])}</h1><p>A: <code>{e(pa)}</code><br>B: <code>{e(pb)}</code></p>",
    ]
    for title, headers, rows, notes in _sections(cmp):
        parts.append(f"<h2>{e(title)}</h2>")
        parts += [f'<p class="note">{e(n)}</p>' for n in notes]
        if not rows:
            continue
        parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in headers) + "</tr>")
        for row in rows:
            cells = []
            for text, src in row:
                attrs = (' class="n"' if _num_like(text) else "") + (f' title="{e(src)}"' if src else "")
                cells.append(f"<td{attrs}>{e(text)}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
