"""The self-contained ``report.html`` of ``mechscope investigate`` (written by the ``report`` stage).

One HTML document that opens offline and travels by email: the PNG plots are inlined as
``data:`` URIs, the UI bundle's JavaScript and the CSS are inlined once, and nothing is
fetched (``<link rel="icon" href="data:,">`` stops the favicon request). Sections, in order:
``summary`` (headline and findings), one per stage (``evaluate``, ``localise``, ``circuit``,
``dictionaries``, ``features``, ``checks``), ``config`` and ``environment``.

Every number read from an artifact is a link ``<a class="num" href="SOURCE">`` to the
run-relative file it came from (the summary's ``{"value", "source"}`` measurements; see
:mod:`.summary`), so the hrefs resolve from ``RUN/report.html``. A stage that did not run
shows a "not run" note; a missing or unreadable artifact shows an error note in its section.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from . import _report_parts as parts
from ._report_parts import e, not_run, num, safe_href, section, table

__all__ = ["SECTIONS", "render_report"]

SECTIONS = (
    ("summary", "Summary"), ("evaluate", "Behaviour (evaluate)"), ("localise", "Localisation (localise)"),
    ("circuit", "Circuit (circuit)"), ("dictionaries", "Dictionaries (dictionaries)"),
    ("features", "Features (features, explain)"), ("checks", "Causal checks (checks)"),
    ("config", "Config"), ("environment", "Environment"),
)  # fmt: skip
"""Section ids and headings, in the order the report shows them."""

_CSS = """
nav { font-size: 0.9em; margin-bottom: 1rem; }
nav a { margin-right: 0.8em; }
a.num { color: inherit; text-decoration: underline dotted #8a8a90; font-variant-numeric: tabular-nums; }
a.num:hover { color: #1f5fa8; }
.na, .not-run { color: #6b6b70; }
.not-run { font-style: italic; }
.error { color: #b3261e; background: #fdecea; padding: 0.3rem 0.5rem; border-radius: 3px; }
.verdict { font-weight: 600; padding: 0 0.3em; border-radius: 3px; }
.verdict-passed { color: #1b7a35; background: #e6f4ea; }
.verdict-failed { color: #b3261e; background: #fdecea; }
.verdict-inconclusive { color: #8a5a00; background: #fff4d6; }
.verdict-weak { color: #7a4b00; background: #fdf0e0; }
ul.headline { background: #fff; border: 1px solid #e2e2e6; padding: 0.6rem 0.6rem 0.6rem 2rem; }
.sweep, .graph { background: #fff; margin: 0.5rem 0; overflow-x: auto; }
"""


def _css() -> str:
    base = resources.files("mechscope.report").joinpath("demo.css").read_text(encoding="utf-8")
    return (base + _CSS).replace("</", "<\\/")


def render_report(run_dir: Path, summary: dict[str, Any], *, config_toml: str, title: str) -> str:
    """The report of the run in ``run_dir`` (its ``summary.json`` contents in ``summary``) as one
    self-contained HTML document."""
    from ..viz.widgets import inline_bundle

    run_dir = Path(run_dir)
    builders: dict[str, Callable[[], str]] = {
        "summary": lambda: _summary(summary),
        "config": lambda: f'<pre class="config">{e(config_toml)}</pre>',
        "environment": lambda: _environment(summary.get("environment")),
    }
    for name, fn in (("evaluate", parts.evaluate_section), ("localise", parts.localise_section),
                     ("circuit", parts.circuit_section), ("dictionaries", parts.dictionaries_section),
                     ("features", parts.features_section), ("checks", parts.checks_section)):  # fmt: skip
        builders[name] = functools.partial(fn, run_dir, summary)
    nav = " ".join(f'<a href="#{sid}">{e(sid)}</a>' for sid, _ in SECTIONS)
    body = "\n".join(section(sid, heading, builders[sid]) for sid, heading in SECTIONS)
    meta = f"mechscope {summary.get('mechscope_version', '?')} · model {summary.get('model', '?')} · seed {summary.get('seed', '?')}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n<link rel="icon" href="data:,">\n'
        f"<title>{e(title)}</title>\n<style>\n{_css()}</style>\n</head>\n<body>\n"
        f'<script type="module">{inline_bundle()}</script>\n<main>\n'
        f'<h1>{e(title)}</h1>\n<p class="muted">{e(meta)}</p>\n<nav>{nav}</nav>\n{body}\n</main>\n</body>\n</html>\n'
    )


# ---------------------------------------------------------------------------- summary


def _summary(s: Mapping[str, Any]) -> str:
    sources = s.get("headline_sources") or []
    lines = "".join(
        f"<li>{e(line)} " + " ".join(
            f'<a class="src" href="{e(h)}" title="from {e(src)}">[{k + 1}]</a>'
            for k, src in enumerate(sources[i] if i < len(sources) else []) if (h := safe_href(src)))
        + "</li>"
        for i, line in enumerate(s.get("headline") or [])
    )  # fmt: skip
    return "\n".join([
        '<p class="muted">Each number below links to the file it was read from (hover it for the path).</p>',
        f'<ul class="headline">{lines}</ul>' if lines else "",
        "<h3>Behaviour</h3>", _behaviour(s.get("behaviour")),
        "<h3>Components</h3>", _components(s),
        *(["<h3>Top sites</h3>", _sites(s.get("sites") or [])] if s.get("sites") else []),
        "<h3>Circuit</h3>", _circuit(s.get("circuit")),
        "<h3>Dictionaries</h3>", _dictionaries(s.get("dictionaries") or []),
        "<h3>Features</h3>", _features(s.get("features") or []), _feature_checks(s.get("feature_checks") or []),
        _feature_edges(s.get("feature_edges") or []),
        "<h3>Causal checks</h3>", _checks(s.get("checks") or [], s.get("check_counts")),
    ])  # fmt: skip


def _behaviour(b: Mapping[str, Any] | None) -> str:
    if not b:
        return not_run("evaluate")
    rows = [
        ["accuracy", num(b.get("clean_accuracy"), ".0%"), num(b.get("corrupted_accuracy"), ".0%")],
        ["top-1 rate", num(b.get("clean_top1"), ".0%"), num(b.get("corrupted_top1"), ".0%")],
        [
            f"<code>{e(b.get('metric'))}</code>",
            num(b.get("clean_metric"), ".4g"),
            num(b.get("corrupted_metric"), ".4g"),
        ],
    ]
    return (
        f"<p>Task <code>{e(b.get('task'))}</code>, {e(b.get('n'))} clean/corrupted pairs "
        "(corrupted accuracy is judged against the clean answers).</p>\n"
        + table(["", "clean", "corrupted"], rows, "behaviour")
    )


def _components(s: Mapping[str, Any]) -> str:
    comps = s.get("components") or []
    if not comps:
        return not_run("localise") + "\n" + not_run("circuit")
    rows = [[f"<code>{e(c.get('component'))}</code>", num(c.get("normalised_effect"), ".0%"),
             num(c.get("effect"), "+.3f"), num(c.get("circuit_score"), ".3f"), e(c.get("evidence", ""))]
            for c in comps]  # fmt: skip
    atp = s.get("attribution_vs_exact")
    note = (
        f"<p>Attribution patching of the heads against exact patching: r = {num(atp, '.3f')}.</p>"
        if atp
        else ""
    )
    return (
        "<p>Normalised effect: the share of the clean–corrupted gap a component restores when patched "
        "alone.</p>\n"
        + table(["component", "normalised effect", "effect", "circuit score", "evidence"], rows, "components")
        + note
    )


def _sites(sites: list[dict[str, Any]]) -> str:
    rows = [[f"<code>{e(x.get('sweep'))}</code>", e(x.get("site")), num(x.get("normalised_effect"), ".0%"),
             num(x.get("effect"), "+.3f")] for x in sites]  # fmt: skip
    return table(["sweep", "site", "normalised effect", "effect"], rows, "sites")


def _circuit(c: Mapping[str, Any] | None) -> str:
    if not c:
        return not_run("circuit")
    check = c.get("exact_check")
    exact = (f" Its top {e(check.get('n'))} edges against exact edge patching: r = {num(check.get('pearson'), '.3f')}, "
             f"signs agree for {num(check.get('sign_agreement'), '.0%')}.") if check else ""  # fmt: skip
    curve = [
        [e(parts.fmt(p.get("fraction"), ".1%")), num(p.get("faithfulness"), ".3f")]
        for p in c.get("curve", [])
    ]
    return (
        f"<p>{e(c.get('method'))}: {num(c.get('circuit_edges'), 'd')} of {e(c.get('n_edges'))} edges kept; "
        f"CPR {num(c.get('cpr'), '.3f')}, CMD {num(c.get('cmd'), '.3f')}.{exact}</p>\n"
        + (table(["edges kept (fraction)", "faithfulness"], curve, "curve") if curve else "")
    )


def _dictionaries(dicts: list[dict[str, Any]]) -> str:
    if not dicts:
        return not_run("dictionaries")
    rows = [[e(d.get("name")), f"<code>{e(d.get('hook'))}</code>", num(d.get("fvu"), ".3f"), num(d.get("l0"), ".1f"),
             num(d.get("ce_recovered_zero"), ".0%"), num(d.get("dead_fraction"), ".1%")] for d in dicts]  # fmt: skip
    return table(["dictionary", "hook", "FVU", "L0", "CE recovered", "dead"], rows, "dictionaries")


def _features(feats: list[dict[str, Any]]) -> str:
    if not feats:
        return not_run("features")
    rows = []
    for f in feats:
        scores = ", ".join(f"{e(k)} {num(v, '.2f')}" for k, v in (f.get("scores") or {}).items())
        rows.append([f"{e(f.get('dictionary'))}/{e(f.get('feature'))}", num(f.get("attribution"), "+.3g"),
                     num(f.get("exact_effect"), "+.3g"), e(f.get("explanation") or "(not explained)"),
                     parts.verdict(f.get("verdict")) if f.get("verdict") else "", scores])  # fmt: skip
    head = ["dictionary/feature", "attribution", "exact effect", "explanation", "verdict", "scores"]
    return table(head, rows, "features")


def _feature_checks(checks: list[dict[str, Any]]) -> str:
    if not checks:
        return ""
    rows = [[e(c.get("dictionary")), e(c.get("n")), num(c.get("sign_agreement"), ".0%"), num(c.get("pearson"), ".2f")]
            for c in checks]  # fmt: skip
    return "<p>Attributions of the top features against exact feature patching:</p>\n" + table(
        ["dictionary", "features checked", "signs agree", "Pearson r"], rows, "feature-checks"
    )


def _feature_edges(edges: list[dict[str, Any]]) -> str:
    if not edges:
        return ""
    rows = [[e(x.get("source")), e(x.get("target")), num(x.get("weight"), "+.3g")] for x in edges]
    return "<p>Feature-circuit edges between the dictionaries (largest first):</p>\n" + table(
        ["upstream feature", "downstream feature", "edge"], rows, "feature-edges"
    )


def _checks(checks: list[dict[str, Any]], counts: Mapping[str, Any] | None) -> str:
    if not checks:
        return not_run("checks")
    rows = [[e(c.get("name")), e(c.get("prediction")), num(c.get("predicted"), ".4g"),
             num(c.get("measured"), ".4g"), parts.verdict(c.get("verdict"))] for c in checks]  # fmt: skip
    verdicts = ("passed", "weak", "failed", "inconclusive")
    tally = ("<p>" + ", ".join(f"{e(counts.get(v, 0))} {v}" for v in verdicts)
             + " (weak: the predicted sign, but not the predicted size).</p>\n") if counts else ""  # fmt: skip
    return tally + table(["check", "prediction", "predicted", "measured", "verdict"], rows, "checks")


def _environment(env: Any) -> str:
    if not isinstance(env, Mapping) or not env:
        return '<p class="not-run">No environment recorded.</p>'
    rows = [[e(k), e("n/a" if v is None else v)] for k, v in env.items()]
    return table(["", "value"], rows, "environment")
