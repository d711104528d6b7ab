"""Building blocks of ``report.html`` and its per-stage sections (see :mod:`.report_html`).

Every number read from an artifact is drawn with :func:`num` / :func:`link` as
``<a class="num" href="SOURCE" title="from SOURCE">value</a>``; every text goes through
:func:`e`; an artifact that is missing or unreadable becomes a small error note
(:func:`error`), never an exception.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import MechscopeError
from .runner import read_stage_json

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_PROMPTS = 64
"""Rows of the evaluate section's prompt table (the rest are counted, not shown)."""
MAX_GRAPH_EDGES = 400
"""Largest edges drawn in the interactive circuit graph."""


def e(text: Any) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def safe_href(path: Any) -> str | None:
    """A run-relative path usable as a link, or None (absolute paths, schemes such as
    ``javascript:`` or ``https:``, and parent references are refused)."""
    p = str(path or "")
    if not p or p.startswith(("/", "\\")) or ":" in p.split("/", 1)[0] or ".." in p.split("/"):
        return None
    return p


def fmt(value: Any, spec: str = ".4g") -> str:
    """``value`` formatted with ``spec`` (its ``str`` when the spec does not apply)."""
    if value is None:
        return "n/a"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def link(value: Any, source: Any, spec: str = ".4g") -> str:
    """A number linked to the artifact it was read from."""
    text = e(fmt(value, spec))
    href = safe_href(source)
    if value is None or href is None:
        return f'<span class="num" title="from {e(source)}">{text}</span>'
    return f'<a class="num" href="{e(href)}" title="from {e(href)}">{text}</a>'


def num(m: Mapping[str, Any] | None, spec: str = ".4g") -> str:
    """A measurement ``{"value", "source"}`` (see :func:`mechscope.investigate.summary.measured`)."""
    if not m or m.get("value") is None:
        return '<span class="na">n/a</span>'
    return link(m["value"], m.get("source"), spec)


def table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """A table; ``head`` is escaped, the cells are HTML already."""
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{e(cls)}">\n<thead><tr>{th}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def error(text: str) -> str:
    return f'<p class="error">{e(text)}</p>'


def not_run(stage: str) -> str:
    return f'<p class="not-run">Stage <code>{e(stage)}</code> not run: nothing to show.</p>'


def section(sid: str, title: str, body: Callable[[], str]) -> str:
    """``<section id=sid>`` with its ``<h2>``; an error while building ``body`` becomes a note."""
    try:
        inner = body()
    except Exception as err:  # the report must render whatever a stage left behind
        inner = error(f"this section could not be drawn: {type(err).__name__}: {err}")
    return f'<section id="{e(sid)}">\n<h2>{e(title)}</h2>\n{inner}\n</section>'


def inside(run_dir: Path, rel: Any) -> Path:
    """``run_dir / rel``, refusing a path that leaves the run directory."""
    path = (run_dir / str(rel)).resolve()
    if not rel or not path.is_relative_to(run_dir.resolve()):
        raise MechscopeError(f"{rel!r} is not a path inside the run directory")
    return path


def read_json(run_dir: Path, rel: Any) -> Any:
    """A run-relative JSON file (MechscopeError when missing or unreadable)."""
    path = inside(run_dir, rel)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise MechscopeError(f"{rel} is missing or unreadable: {err}") from err


def stage_summary(run_dir: Path, name: str) -> dict[str, Any]:
    """The ``summary`` of ``<name>/stage.json`` ({} when absent or unreadable)."""
    meta = read_stage_json(inside(run_dir, name))
    summary = meta.get("summary") if meta is not None else None
    return dict(summary) if isinstance(summary, dict) else {}


def figure(run_dir: Path, rel: Any, caption: str) -> str:
    """A PNG inlined as a ``data:`` URI in a figure, or an error note naming the file."""
    try:
        data = inside(run_dir, rel).read_bytes()
    except (OSError, MechscopeError) as err:
        return error(f"plot {rel} is missing or unreadable ({type(err).__name__})")
    if not data.startswith(PNG_MAGIC):
        return error(f"plot {rel} is not a PNG file")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="{uri}" alt="{e(caption)}"><figcaption>{e(caption)} '
            f'<span class="muted">({e(rel)})</span></figcaption></figure>')  # fmt: skip


def file_link(rel: Any, text: str | None = None) -> str:
    """A link to a run-relative file (plain text when the path is not a safe relative one)."""
    href = safe_href(rel)
    label = e(text if text is not None else rel)
    return f'<a href="{e(href)}">{label}</a>' if href else label


def tok(token: Any) -> str:
    """A token as ``<code>"…"</code>`` so spaces and newlines show."""
    return f"<code>{e(json.dumps(str(token), ensure_ascii=False))}</code>"


# ---------------------------------------------------------------------------- evaluate


def evaluate_section(run_dir: Path, summary: Mapping[str, Any]) -> str:
    b = summary.get("behaviour")
    if not b:
        return not_run("evaluate")
    src = safe_href(b.get("prompts")) or "evaluate/prompts.json"
    try:
        prompts = list(read_json(run_dir, src)["prompts"])
    except (MechscopeError, KeyError, TypeError) as err:
        return error(f"prompt table unavailable: {err}")
    rows = []
    for p in prompts[:MAX_PROMPTS]:
        top = " ".join(
            f"{tok(t.get('token'))}&nbsp;{link(t.get('prob'), src, '.3f')}" for t in p.get("top", [])
        )
        rows.append([e(p.get("clean", "")), e(p.get("corrupted", "")), tok(p.get("answer")),
                     tok(p.get("wrong")), f'<span class="tops">{top}</span>'])  # fmt: skip
    more = (
        f'<p class="muted">First {MAX_PROMPTS} of {len(prompts)} prompts.</p>'
        if len(prompts) > MAX_PROMPTS
        else ""
    )
    return (
        f"<p>Task <code>{e(b.get('task'))}</code> ({e(b.get('description', ''))}), {e(b.get('n'))} clean/corrupted "
        f"pairs, metric <code>{e(b.get('metric'))}</code>. The model's top next tokens on each clean prompt "
        f"({file_link(src)}):</p>\n"
        + table(
            ["clean prompt", "corrupted prompt", "answer", "wrong", "top tokens (clean)"], rows, "prompts"
        )
        + more
    )


# ---------------------------------------------------------------------------- localise


def _patch_widget(run_dir: Path, rel_dir: Any, uid: str) -> str:
    """The sweep's saved PatchResult as the bundle's heat map, or an error note."""
    from ..interventions.results import PatchResult
    from ..viz.results import patch_result

    try:
        result = PatchResult.load(inside(run_dir, rel_dir))
        return patch_result(result).fragment(bundle=False, uid=uid)
    except (MechscopeError, OSError, ValueError) as err:
        return error(f"interactive heat map unavailable: {err}")


def localise_section(run_dir: Path, summary: Mapping[str, Any]) -> str:
    sweeps = summary.get("localisation") or []
    if not sweeps:
        return not_run("localise")
    stage = {s.get("name"): s for s in stage_summary(run_dir, "localise").get("sweeps", [])}
    parts = [f"<p>Attribution patching of the heads against exact patching: r = "
             f"{num(summary.get('attribution_vs_exact'), '.3f')}. Hover a cell for its value; the scale is "
             "centred at 0. The static plot follows each map.</p>"]  # fmt: skip
    for i, sw in enumerate(sweeps):
        info = stage.get(sw.get("name"), {})
        rel = info.get("dir") or str(Path(str(sw.get("png", ""))).parent)
        parts.append(f'<h3>{e(sw.get("title", sw.get("name")))}</h3>\n<div class="sweep" data-sweep="{e(sw.get("name"))}">'
                     + _patch_widget(run_dir, rel, f"ms-result-{i}") + "</div>")  # fmt: skip
        src = f"{rel}/values.safetensors"
        top = [[e(t.get("site")), link(t.get("effect"), src, "+.3f"), link(t.get("normalised"), src, ".0%")]
               for t in info.get("top", [])[:5]]  # fmt: skip
        if top:
            parts.append(table(["site", "effect", "share of the gap"], top, "top-sites"))
        parts.append(figure(run_dir, sw.get("png"), f"{sw.get('title', '')} (static plot)"))
        parts.append(f"<p>{file_link(sw.get('html'), 'standalone interactive page')}</p>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------- circuit


def _graph_widget(run_dir: Path, rel_dir: Any) -> str:
    """The circuit's largest edges as the bundle's graph (from ``circuit.json``), or an error note."""
    from ..viz.results import circuit

    try:
        data = read_json(run_dir, f"{rel_dir}/circuit.json")
        return circuit(data, max_edges=MAX_GRAPH_EDGES).fragment(bundle=False, uid="ms-circuit-graph")
    except (MechscopeError, KeyError, TypeError, ValueError) as err:
        return error(f"interactive graph unavailable: {err}")


def circuit_section(run_dir: Path, summary: Mapping[str, Any]) -> str:
    c = summary.get("circuit")
    if not c:
        return not_run("circuit")
    stage = stage_summary(run_dir, "circuit")
    rel_dir = stage.get("dir") or str(Path(str(c.get("graph_png", ""))).parent)
    check = stage.get("top_check") or {}
    src = c["exact_check"]["pearson"]["source"] if c.get("exact_check") else stage.get("summary")
    exact = [[e(name), link(est, src, "+.3f"), link(ex, src, "+.3f")]
             for name, est, ex in zip(check.get("edges", []), check.get("score", []), check.get("exact", []))]  # fmt: skip
    top = [[e(t.get("edge")), num(t.get("score"), "+.3f")] for t in c.get("top_edges", [])]
    return "\n".join([
        f"<p>{e(c.get('method'))} on the {e(c.get('graph'))} graph ({e(c.get('n_edges'))} edges), "
        f"{e(stage.get('ablation', ''))} ablation. Saved in {file_link(rel_dir)}.</p>",
        f'<div class="graph">{_graph_widget(run_dir, rel_dir)}</div>',
        figure(run_dir, c.get("graph_png"), "the circuit's top edges (static plot)"),
        figure(run_dir, c.get("curve_png"), "faithfulness against circuit size"),
        "<h3>Top edges</h3>", table(["edge", "score"], top, "top-edges") if top else "",
        "<h3>Estimate against exact edge patching</h3>" if exact else "",
        table(["edge", "estimate", "exact"], exact, "exact-check") if exact else "",
        f"<p>{file_link(c.get('graph_html'), 'standalone interactive graph')}</p>",
    ])  # fmt: skip


# ---------------------------------------------------------------------------- dictionaries

_DICT_METRICS = (
    ("fvu", "FVU (1 − explained variance)", ".4f"), ("l0", "L0 (active latents per token)", ".1f"),
    ("cosine_similarity", "cosine similarity of reconstructions", ".3f"),
    ("dead_fraction", "dead latents", ".1%"), ("dense_fraction", "dense latents", ".1%"),
    ("ce_clean", "CE loss, clean", ".4f"), ("ce_sae", "CE loss, with the dictionary", ".4f"),
    ("ce_recovered_zero", "CE recovered vs zero ablation", ".3f"),
    ("ce_recovered_mean", "CE recovered vs mean ablation", ".3f"),
    ("delta_lm_loss", "delta LM loss (nats)", "+.4f"), ("kl_sae", "KL(clean ‖ with dictionary), nats", ".4f"),
)  # fmt: skip


def dictionaries_section(run_dir: Path, summary: Mapping[str, Any]) -> str:
    dicts = summary.get("dictionaries") or []
    if not dicts:
        return not_run("dictionaries")
    stage = {d.get("name"): d for d in stage_summary(run_dir, "dictionaries").get("dictionaries", [])}
    src = "dictionaries/dictionaries.json"
    parts = []
    for d in dicts:
        info = stage.get(d.get("name"), {})
        metrics = info.get("metrics") or {k: (d.get(k) or {}).get("value") for k, _, _ in _DICT_METRICS}
        rows = [
            [e(label), link(metrics[k], src, spec)]
            for k, label, spec in _DICT_METRICS
            if metrics.get(k) is not None
        ]
        parts += [
            f"<h3>{e(d.get('name'))}</h3>\n<p>{e(d.get('source'))} dictionary on <code>{e(d.get('hook'))}</code>, "
            f"{e(d.get('d_sae'))} latents, k = {e(d.get('k'))}; saved in {file_link(d.get('path'))}.</p>",
            table(["metric", "value"], rows, "dict-metrics"),
            figure(run_dir, info.get("density_png") or f"dictionaries/{d.get('name')}/density.png",
                   f"feature density of {d.get('name')}"),
        ]  # fmt: skip
    return "\n".join(parts)


# ---------------------------------------------------------------------------- features


def features_section(run_dir: Path, summary: Mapping[str, Any]) -> str:
    feats = summary.get("features") or []
    if not feats:
        return not_run("features")
    rows = []
    for f in feats:
        page = file_link(f.get("page"), "dashboard") if f.get("page") else '<span class="na">none</span>'
        rows.append([f"{e(f.get('dictionary'))}/{e(f.get('feature'))}", num(f.get("attribution"), "+.3g"),
                     num(f.get("exact_effect"), "+.3g"), e(f.get("explanation") or "(not explained)"),
                     verdict(f.get("verdict")) if f.get("verdict") else "", page])  # fmt: skip
    stage = stage_summary(run_dir, "features")
    checks = []
    for d in stage.get("dictionaries", []):
        c, src = d.get("check") or {}, "features/features.json"
        checks.append(f"<li>{e(d.get('name'))}: attribution against exact patching (to the corrupted activations) of its top {e(c.get('n'))} "
                      f"features r = {link(c.get('pearson'), src, '.2f')}, signs agree "
                      f"{link(c.get('sign_agreement'), src, '.0%')}; error term {link(d.get('error_attribution'), src, '+.3g')}</li>")  # fmt: skip
    dashboards = [file_link(d.get("dashboards"), f"{d.get('name')} dashboards")
                  for d in stage_summary(run_dir, "explain").get("dictionaries", []) if d.get("dashboards")]  # fmt: skip
    return "\n".join([
        "<p>The dictionary features with the largest attribution to the metric, with their explanation and "
        "its validation verdict.</p>",
        table(["feature", "attribution", "exact effect", "explanation", "verdict", "page"], rows, "features"),
        f"<ul>{''.join(checks)}</ul>" if checks else "",
        f"<p>Feature dashboards: {', '.join(dashboards)}.</p>" if dashboards else "",
    ])  # fmt: skip


# ---------------------------------------------------------------------------- checks


def verdict(v: Any) -> str:
    cls = str(v) if v in ("passed", "weak", "failed", "inconclusive") else "other"
    return f'<span class="verdict verdict-{cls}">{e(v)}</span>'


def _steering(examples: Sequence[Mapping[str, Any]]) -> str:
    out = []
    for x in examples:
        rows = [
            [e(p), e(b), e(a)]
            for p, b, a in zip(x.get("prompts", []), x.get("before", []), x.get("after", []))
        ]
        out.append(f"<h4>{e(x.get('dictionary'))}/{e(x.get('feature'))} clamped to "
                   f"{link(x.get('value'), 'checks/checks.json', '.3g')}</h4>\n"
                   + table(["prompt", "before", "after"], rows, "steering"))  # fmt: skip
    return "\n".join(out)


def checks_section(run_dir: Path, summary: Mapping[str, Any]) -> str:
    checks = summary.get("checks") or []
    if not checks:
        return not_run("checks")
    details = stage_summary(run_dir, "checks").get("checks", [])
    rows = []
    for i, c in enumerate(checks):
        d = details[i] if i < len(details) and details[i].get("name") == c.get("name") else {}
        target = ", ".join(map(str, d["components"])) if d.get("components") else (
            f"{d['dictionary']}/{d['feature']}" if "dictionary" in d else "")  # fmt: skip
        rows.append([e(c.get("name")), e(c.get("kind")), e(target), e(c.get("prediction")),
                     num(c.get("predicted"), ".4g"), num(c.get("measured"), ".4g"), verdict(c.get("verdict"))])  # fmt: skip
    examples = summary.get("steering_examples") or []
    return "\n".join([
        table(["check", "kind", "target", "prediction", "predicted", "measured", "verdict"], rows, "checks"),
        "<h3>Steering examples</h3>\n<p>Greedy continuations before and after clamping the feature to "
        "a multiple of its largest corpus activation at every position.</p>\n" + _steering(examples) if examples else "",
    ])  # fmt: skip
