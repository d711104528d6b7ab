"""The demo page's Features section, rendered from ``features.json`` alone."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _f(v: Any, fmt: str = ".2f") -> str:
    return "n/a" if not isinstance(v, (int, float)) else format(v, fmt)


def features_section(run_dir: Path) -> str:
    """Features most active on the factual prompts, their explanations, scores and cards (absent when skipped)."""
    path = run_dir / "features.json"
    if not path.exists():
        return ""
    try:
        data = json.loads(path.read_text())
        rows = "\n".join(_row(f) for f in data["features"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        return f'<section>\n<h2>Features</h2>\n<p class="error">features.json is malformed: {_e(e)}</p>\n</section>'
    return (
        "<section>\n<h2>Features</h2>\n"
        f"<p>Statistics of all {_e(data.get('d_sae'))} SAE features at {_e(data.get('hook'))} over "
        f"{_e(data.get('n_tokens'))} held-out corpus tokens ({_e(data.get('stats_seconds'))} s; "
        f"{_e(data.get('fired'))} fired). The features below are the most active at the last token of the "
        "factual prompts. Each is explained offline from its top examples (token patterns), scored on its "
        "quantile examples and silent random windows (detection and fuzzing: balanced accuracy, 0.5 = chance; "
        "simulation: correlation), and validated on held-out contexts (precision/recall of the explanation, "
        "zero-ablation lowers the log-odds of the tokens it promotes, adding it raises them). "
        f'<a href="{_e(data.get("dashboards", ""))}">All dashboards</a> '
        f"({_e(data.get('pages'))} features).</p>\n"
        "<table>\n<thead><tr><th>feature</th><th>explanation</th><th>mean act.</th><th>detection</th>"
        "<th>fuzzing</th><th>simulation</th><th>precision</th><th>recall</th><th>ablation shift</th>"
        "<th>steer shift</th><th>card</th></tr></thead>\n"
        f"<tbody>\n{rows}\n</tbody>\n</table>\n{_steering(data.get('steering') or {})}\n</section>"
    )


def _row(f: dict[str, Any]) -> str:
    s, c = f.get("scores", {}), f.get("card") or {}
    acts = f.get("prompt_activations") or [0.0]
    return (
        f'<tr><td><a href="{_e(f["page"])}">{_e(f["feature"])}</a></td><td>{_e(f["explanation"])}</td>'
        f'<td class="num">{_f(sum(acts) / len(acts))}</td><td class="num">{_f(s.get("detection"))}</td>'
        f'<td class="num">{_f(s.get("fuzzing"))}</td><td class="num">{_f(s.get("simulation"))}</td>'
        f'<td class="num">{_f(c.get("precision"))}</td><td class="num">{_f(c.get("recall"))}</td>'
        f'<td class="num">{_f(c.get("causal_shift"), "+.3f")}</td>'
        f'<td class="num">{_f(c.get("steer_shift"), "+.3f")}</td><td>{_e(f.get("verdict"))}</td></tr>'
    )


def _steering(ex: dict[str, Any]) -> str:
    if not ex:
        return ""
    rows = "\n".join(
        f"<tr><td>{_e(b)}</td><td>{_e(a)}</td></tr>"
        for b, a in zip(ex.get("before", []), ex.get("after", []))
    )
    return (
        f"<h3>Steering: feature {_e(ex.get('feature'))} clamped to {_f(ex.get('value'))}</h3>\n"
        "<p>Greedy generations with the feature clamped at every position (Golden Gate style), "
        "before and after.</p>\n"
        f"<table>\n<thead><tr><th>before</th><th>after</th></tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"
    )


__all__ = ["features_section"]
