"""The findings summary (``summary.json``): what the investigation found, every number linked.

Every number is a *measurement* ``{"value": x, "source": "<stage>/<file>"}``: the value and
the run-relative path of the artifact it was read from, so the report links each number to
its file and no claim appears without one. Sections:

* ``behaviour``: accuracy and metric, clean and corrupted (``evaluate``);
* ``components``: the heads that carry the behaviour, with their normalised patching effect
  (the fraction of the clean-corrupted gap each restores alone), and the circuit's nodes;
* ``circuit``: size, faithfulness at each size, CPR/CMD, the exact check of its top edges;
* ``dictionaries`` and ``features``: dictionary quality; per kept feature its attribution,
  exact effect, explanation, scores and validation verdict; ``feature_checks``: how well the
  attributions of the top features agree with exact feature patching; ``feature_edges``: with
  several dictionaries, the largest edges between their kept features;
* ``checks``: predicted and measured number of each causal check, and its verdict;
* ``headline``: ten lines of text for the terminal, built from the numbers above, and
  ``headline_sources``: for each line, the sources of its numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._version import __version__
from .runner import read_stage_json

__all__ = ["KIND", "SCHEMA_VERSION", "build_summary", "headline", "headline_lines", "measured"]

KIND = "mechscope.investigate.summary"
SCHEMA_VERSION = 1

BEHAVIOUR_KEYS = ("clean_accuracy", "corrupted_accuracy", "clean_top1", "corrupted_top1", "clean_metric",
                  "corrupted_metric")  # fmt: skip
"""The measured behaviour numbers (``evaluate``), in the order they are shown."""


def measured(value: Any, source: str) -> dict[str, Any] | None:
    """A number with the run-relative path of the artifact it came from (None stays None)."""
    if value is None:
        return None
    return {"value": value, "source": source}


def _stage(run_dir: Path, name: str) -> dict[str, Any] | None:
    meta = read_stage_json(run_dir / name)
    return dict(meta["summary"]) if meta is not None and meta.get("complete") else None


def _behaviour(ev: dict[str, Any]) -> dict[str, Any]:
    src = ev["eval"]
    keys = BEHAVIOUR_KEYS
    return {"task": ev["task"], "n": ev["n"], "metric": ev["metric"], "description": ev.get("description", ""),
            "prompts": ev["prompts"], **{k: measured(ev[k], src) for k in keys}}  # fmt: skip


def _components(loc: dict[str, Any] | None, circ: dict[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    if loc:
        heads = next(
            (r for r in loc["sweeps"] if r["sweep"] == "heads" and r["method"] == "activation_patching"), None
        )
        for row in loc.get("top_heads", []):
            src = heads["dir"] + "/values.safetensors" if heads else "localise/localise.json"
            out.append({"component": row["component"], "evidence": "activation patching (clean into corrupted)",
                        "normalised_effect": measured(row["normalised"], src),
                        "effect": measured(row["effect"], src)})  # fmt: skip
    if circ:
        named = {c["component"] for c in out}
        for row in circ.get("components", []):
            entry = next((c for c in out if c["component"] == row["component"]), None)
            score = measured(row["score"], circ["dir"] + "/scores.safetensors")
            if entry is not None:
                entry["circuit_score"] = score
            elif row["component"] not in named:
                out.append(
                    {
                        "component": row["component"],
                        "evidence": f"{circ['method']} circuit",
                        "circuit_score": score,
                    }
                )
    return out


def _sites(loc: dict[str, Any] | None, k: int = 5) -> list[dict[str, Any]]:
    """The top sites of each exact sweep other than the heads (e.g. residual stream x position)."""
    out = []
    for r in (loc or {}).get("sweeps", []):
        if r["method"] != "activation_patching" or r["sweep"] == "heads":
            continue
        src = r["dir"] + "/values.safetensors"
        out += [{"sweep": r["sweep"], "site": row["site"], "normalised_effect": measured(row["normalised"], src),
                 "effect": measured(row["effect"], src)} for row in r["top"][:k]]  # fmt: skip
    return out


def _circuit(c: dict[str, Any]) -> dict[str, Any]:
    src, curve = c["summary"], c["curve"]
    check = c.get("top_check") or {}
    return {
        "method": c["method"], "graph": c["graph"], "n_edges": c["n_edges"],
        "circuit_edges": measured(c["circuit_edges"], c["dir"] + "/circuit.json"),
        "cpr": measured(curve.get("cpr"), src), "cmd": measured(curve.get("cmd"), src),
        "curve": [{"fraction": f, "faithfulness": measured(v, src)}
                  for f, v in zip(curve.get("fractions", []), curve.get("faithfulness", []))],
        "top_edges": [{"edge": e, "score": measured(v, c["dir"] + "/scores.safetensors")} for e, v in c["top_edges"]],
        "exact_check": {"n": len(check.get("edges", [])), "pearson": measured(check.get("pearson"), src),
                        "sign_agreement": measured(check.get("sign_agreement"), src)} if check else None,
        "graph_png": c["graph_png"], "graph_html": c["graph_html"], "curve_png": c["curve_png"],
    }  # fmt: skip


def _dictionaries(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for x in d["dictionaries"]:
        metrics = x.get("metrics", {})
        out.append({"name": x["name"], "hook": x["hook"], "source": x["source"], "d_sae": x.get("d_sae"),
                    "k": x.get("k"), "path": x["dictionary"],
                    **{k: measured(metrics.get(k), "dictionaries/dictionaries.json")
                       for k in ("fvu", "l0", "ce_recovered_zero", "dead_fraction")}})  # fmt: skip
    return out


def _features(f: dict[str, Any], ex: dict[str, Any] | None) -> list[dict[str, Any]]:
    notes = {}
    for d in (ex or {}).get("dictionaries", []):
        for row in d["features"]:
            notes[(d["name"], row["feature"])] = row
    out = []
    for d in f["dictionaries"]:
        for row in d["features"]:
            note = notes.get((d["name"], row["feature"]), {})
            src = d["attribution_file"]
            out.append({
                "dictionary": d["name"], "hook": d["hook"], "feature": row["feature"],
                "attribution": measured(row["attribution"], src),
                "exact_effect": measured(row["exact"], "features/features.json"),
                "explanation": note.get("explanation"), "verdict": note.get("verdict"),
                "scores": {k: measured(v, note["card"].rsplit("/", 1)[0] + "/scores.json") for k, v in note.get("scores", {}).items()},
                "page": note.get("page"),
            })  # fmt: skip
    return out


def build_summary(run_dir: Path, config: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    """The findings summary of the stages present in ``run_dir``."""
    ev, loc, circ = (_stage(run_dir, n) for n in ("evaluate", "localise", "circuit"))
    dicts, feats, expl, checks = (
        _stage(run_dir, n) for n in ("dictionaries", "features", "explain", "checks")
    )
    summary: dict[str, Any] = {
        "kind": KIND, "schema_version": SCHEMA_VERSION, "mechscope_version": __version__,
        "model": config["model"]["name"], "task": config["behaviour"]["task"], "seed": config["seed"],
        "behaviour": _behaviour(ev) if ev else None,
        "components": _components(loc, circ),
        "attribution_vs_exact": measured((loc or {}).get("atp_vs_exact", {}).get("correlation"), "localise/localise.json"),
        "localisation": [{k: r[k] for k in ("name", "title", "png", "html")} for r in (loc or {}).get("sweeps", [])],
        "sites": _sites(loc),
        "circuit": _circuit(circ) if circ else None,
        "dictionaries": _dictionaries(dicts) if dicts else [],
        "features": _features(feats, expl) if feats else [],
        "feature_edges": [{"source": r["source"], "target": r["target"], "weight": measured(r["weight"], "features/edges.json")}
                          for r in (feats or {}).get("edges", [])[:20]],
        "feature_checks": [{"dictionary": d["name"], "n": d["check"].get("n"),
                            "pearson": measured(d["check"].get("pearson"), "features/features.json"),
                            "sign_agreement": measured(d["check"].get("sign_agreement"), "features/features.json")}
                           for d in (feats or {}).get("dictionaries", []) if d.get("check")],
        "checks": [{**{k: c[k] for k in ("kind", "name", "prediction", "verdict")},
                    "predicted": measured(c["predicted"], "checks/checks.json"),
                    "measured": measured(c["measured"], "checks/checks.json")} for c in (checks or {}).get("checks", [])],
        "check_counts": (checks or {}).get("counts"),
        "steering_examples": (checks or {}).get("steering_examples", []),
        "environment": env,
    }  # fmt: skip
    lines = headline_lines(summary)
    summary["headline"] = [text for text, _ in lines]
    summary["headline_sources"] = [sources for _, sources in lines]
    return summary


def headline(s: dict[str, Any]) -> list[str]:
    """At most ten lines of text: the findings, each number as measured."""
    return [text for text, _ in headline_lines(s)]


def headline_lines(s: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The headline's lines, each with the sources of the numbers in it (in order, distinct)."""
    lines: list[tuple[str, list[str]]] = []
    used: list[str] = []

    def _v(m: dict[str, Any] | None, fmt: str = "{:.3g}") -> str:
        if m is None or m.get("value") is None:
            return "n/a"
        if m["source"] not in used:
            used.append(m["source"])
        return fmt.format(m["value"])

    def add(text: str) -> None:
        lines.append((text, list(used)))
        used.clear()

    b = s.get("behaviour")
    if b:
        add(f"{s['model']} on {b['task']} (n={b['n']}): accuracy {_v(b['clean_accuracy'], '{:.0%}')} clean / "
                     f"{_v(b['corrupted_accuracy'], '{:.0%}')} corrupted; {b['metric']} {_v(b['clean_metric'])} / {_v(b['corrupted_metric'])}")  # fmt: skip
    heads = [c for c in s["components"] if c.get("normalised_effect")]
    if heads:
        add("top heads (share of the behaviour each restores alone): "
                     + ", ".join(f"{c['component']} {_v(c['normalised_effect'], '{:.0%}')}" for c in heads[:5]))  # fmt: skip
    sites = s.get("sites", [])
    if sites:
        add(f"top {sites[0]['sweep']} sites (share restored alone): "
                     + ", ".join(f"{x['site']} {_v(x['normalised_effect'], '{:.0%}')}" for x in sites[:3]))  # fmt: skip
    if s.get("attribution_vs_exact"):
        add(
            f"attribution patching vs exact patching of the heads: r = {_v(s['attribution_vs_exact'], '{:.2f}')}"
        )
    c = s.get("circuit")
    if c:
        add(f"circuit ({c['method']}): {_v(c['circuit_edges'], '{}')} of {c['n_edges']} edges kept; "
                     f"CPR {_v(c['cpr'], '{:.2f}')}, CMD {_v(c['cmd'], '{:.2f}')}")  # fmt: skip
        if c.get("exact_check"):
            e = c["exact_check"]
            add(f"top {e['n']} edges vs exact edge patching: r = {_v(e['pearson'], '{:.2f}')}, "
                         f"signs agree {_v(e['sign_agreement'], '{:.0%}')}")  # fmt: skip
    for d in s.get("dictionaries", [])[:2]:
        add(f"dictionary {d['name']} ({d['source']}, {d['hook']}): FVU {_v(d['fvu'], '{:.3f}')}, "
                     f"L0 {_v(d['l0'], '{:.1f}')}, CE recovered {_v(d['ce_recovered_zero'], '{:.0%}')}")  # fmt: skip
    feats = s.get("features", [])
    if feats:
        top = feats[:3]
        add("features: " + "; ".join(
            f"{f['dictionary']}/{f['feature']} attr {_v(f['attribution'], '{:+.3g}')}"
            + (f" ({(f['explanation'] or '')[:40]!r}, {f['verdict']})" if f.get("explanation") else "") for f in top))  # fmt: skip
    for fc in s.get("feature_checks", [])[:2]:
        add(f"feature attributions vs exact feature patching ({fc['dictionary']}, top {fc['n']}): "
            f"signs agree {_v(fc['sign_agreement'], '{:.0%}')}, r = {_v(fc['pearson'], '{:.2f}')}")  # fmt: skip
    counts = s.get("check_counts")
    if counts:
        add(
            "checks: "
            + ", ".join(f"{counts.get(v, 0)} {v}" for v in ("passed", "weak", "failed", "inconclusive"))
        )
        lines[-1] = (lines[-1][0], ["checks/checks.json"])
    return lines[:10]
