"""Static HTML feature dashboards, rendered from a feature-statistics artifact.

:func:`build_dashboards` reads a :class:`~mechscope.features.FeatureArtifact` and writes

1. ``out/feature/<i>.html`` for each chosen feature: a header (id, model, hook, density, max and
   mean activation), the log-spaced activation histogram as inline SVG with the equal-count
   quantile edges marked, the top examples and the examples of each quantile (highest first)
   with every token shaded by its activation over the feature's max, the logit-effect table,
   the caller's notes (explanation, scores, validation card, links), and the co-occurring
   features;
2. ``out/index.html`` last: a table of the chosen features with a search box (explanation text,
   id, or a token among the feature's most frequent top-example targets) and sortable columns.

Every page is self-contained (inline CSS, JS and SVG; no URL outside the output directory), so
the directory can be opened from disk, zipped or served by any static server. Every file is
written atomically. Token text is always escaped and whitespace is shown visibly (``␣``, ``↵``,
``⇥``); each token ``<span>`` carries its exact activation in ``data-act`` and ``title``.
"""

from __future__ import annotations

import html
import json
import math
import operator
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._fs import atomic_write_text
from ..errors import MechscopeError
from ._dashboard_assets import CSS, INDEX_JS
from .artifact import FeatureArtifact, FeatureExample


@dataclass(frozen=True)
class FeatureNotes:
    """What others found out about one feature, shown on its page and in the index."""

    explanation: str | None = None
    """A natural-language explanation of the feature (plain text; it is escaped, never parsed)."""
    explainer: str | None = None
    """Who or what wrote the explanation (e.g. a model name)."""
    scores: dict[str, float] = field(default_factory=dict)
    """Scores of the explanation by name, e.g. ``{"detection": 0.93, "fuzzing": 0.88}``."""
    card: dict[str, Any] | None = None
    """A validation report card (a JSON-able dict), shown as a nested key/value table; its
    ``verdict`` and every ``passed`` boolean are highlighted."""
    links: dict[str, str] = field(default_factory=dict)
    """Extra links by label, relative to the feature page (e.g. ``{"steering": "../steer/3.html"}``);
    absolute URLs are refused, so pages stay offline."""


@dataclass(frozen=True)
class DashboardConfig:
    """What the dashboards show."""

    max_features: int = 2000
    """Pages written when no features are named: the features that fired, most dense first."""
    top_examples: int = 10
    """Top-activating examples shown per feature (of those the artifact stores)."""
    per_quantile: int = 5
    """Examples shown per activation quantile."""
    n_cooccurring: int = 10
    """Co-occurring features listed per feature."""
    index_tokens: int = 8
    """Most frequent top-example target tokens kept per feature for the index's token search."""


def build_dashboards(
    artifact: FeatureArtifact | str | Path,
    out: str | Path,
    features: Sequence[int] | None = None,
    notes: Mapping[int, FeatureNotes] | None = None,
    config: DashboardConfig | None = None,
) -> Path:
    """Write ``out/index.html`` and ``out/feature/<i>.html`` for each chosen feature; return the index.

    ``features`` defaults to every feature that fired, most dense first (ties by id), at most
    ``config.max_features``; named features are all written, in the order given, fired or not.
    Co-occurring features are linked when this build writes their page.
    """
    art = artifact if isinstance(artifact, FeatureArtifact) else FeatureArtifact(artifact)
    cfg = config or DashboardConfig()
    for name in ("max_features", "top_examples", "per_quantile", "n_cooccurring", "index_tokens"):
        if getattr(cfg, name) < 0:
            raise MechscopeError(f"DashboardConfig.{name} must be >= 0, got {getattr(cfg, name)}")
    all_notes = {_feature_id(art, k): v for k, v in (notes or {}).items()}
    for v in all_notes.values():
        for href in v.links.values():
            _check_href(href)
    chosen = _choose(art, features, cfg)
    out = Path(out)
    pages, rows = set(chosen), []
    for i in chosen:
        view = _FeatureView.read(art, i, cfg)
        page = _feature_page(art, view, all_notes.get(i), pages)
        atomic_write_text(out / "feature" / f"{i}.html", page)
        rows.append((view, all_notes.get(i)))
    return atomic_write_text(out / "index.html", _index_page(art, rows, cfg, named=features is not None))


def _feature_id(art: FeatureArtifact, feature: Any) -> int:
    try:
        return art.check(operator.index(feature))
    except TypeError:
        return art.check(feature)  # not an integer: its error names the feature and the valid range


def _choose(art: FeatureArtifact, features: Sequence[int] | None, cfg: DashboardConfig) -> list[int]:
    if features is not None:
        return list(dict.fromkeys(_feature_id(art, f) for f in features))
    density, n_active = art.column("density"), art.column("n_active")
    fired = [i for i in range(art.d_sae) if (n_active[i] or 0) > 0]
    fired.sort(key=lambda i: (-float(density[i] or 0.0), i))
    return fired[: cfg.max_features]


def _check_href(href: str) -> None:
    if re.match(r"^\s*([a-zA-Z][a-zA-Z0-9+.-]*:|//|\\\\)", href):
        raise MechscopeError(
            f"FeatureNotes link {href!r} is not relative: dashboards link only within their own "
            "directory (e.g. '../steering/3.html'), so they work offline"
        )


@dataclass(frozen=True)
class _FeatureView:
    """One feature's data as the pages use it."""

    feature: int
    """The feature id."""
    summary: dict[str, Any]
    """Its row of ``features.parquet``."""
    top: list[FeatureExample]
    """Top examples shown."""
    quantiles: dict[int, list[FeatureExample]]
    """Examples shown per quantile (0 = lowest)."""
    histogram: list[tuple[float, float, int]]
    """Non-empty histogram bins ``(low, high, count)``."""
    cooccurring: list[tuple[int, int]]
    """``(other feature, count)``, most frequent first."""
    tokens: list[str]
    """The most frequent target tokens of all stored top examples."""

    @classmethod
    def read(cls, art: FeatureArtifact, i: int, cfg: DashboardConfig) -> _FeatureView:
        """Read feature ``i`` from ``art``, keeping what ``cfg`` shows."""
        top = art.examples(i, "top")
        quantiles: dict[int, list[FeatureExample]] = {}
        for ex in art.examples(i, "quantile"):
            quantiles.setdefault(ex.quantile, []).append(ex)
        targets = Counter(ex.tokens[ex.target] for ex in top if 0 <= ex.target < len(ex.tokens))
        return cls(
            i, art.summary(i), top[: cfg.top_examples],
            {q: v[: cfg.per_quantile] for q, v in quantiles.items()}, art.histogram(i),
            art.cooccurring(i)[: cfg.n_cooccurring], [t for t, _ in targets.most_common(cfg.index_tokens)],
        )  # fmt: skip

    def get(self, key: str, default: float = 0.0) -> float:
        """A numeric summary field, ``default`` where missing."""
        value = self.summary.get(key)
        return default if value is None else float(value)

    @property
    def fired(self) -> bool:
        """Whether the feature was active on any token."""
        return self.get("n_active") > 0


# ----------------------------------------------------------------------------- formatting


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool) or not isinstance(x, int | float):
        return _e(x)
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def format_density(density: float) -> str:
    """A density as the pages show it: a percentage with three significant digits (``16.8%``)."""
    return f"{density * 100:.3g}%"


_WS = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍", "\u00a0": "⍽"}
_INVISIBLE = re.compile(r"[\s\x00-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]+")


def visible(token: str) -> str:
    """``token`` as escaped HTML with whitespace and control characters shown visibly."""
    if token == "":
        return '<span class="ws">∅</span>'

    def show(m: re.Match[str]) -> str:
        marks = "".join(_WS.get(c, f"\\u{ord(c):04x}") for c in m.group())
        return f'<span class="ws">{marks}</span>'

    out, last = [], 0
    for m in _INVISIBLE.finditer(token):
        out += [html.escape(token[last : m.start()], quote=True), show(m)]
        last = m.end()
    out.append(html.escape(token[last:], quote=True))
    return "".join(out)


def _shade(act: float, vmax: float) -> str:
    alpha = 0.0 if vmax <= 0 or not math.isfinite(act) else min(abs(act) / vmax, 1.0)
    rgb = "255,140,0" if act >= 0 else "60,120,220"
    return f"rgba({rgb},{alpha:.3f})"


def _page(title: str, body: str, script: str = "") -> str:
    js = f"<script>\n{script}</script>\n" if script else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{_e(title)}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{body}</main>\n{js}</body>\n</html>\n"
    )


# ----------------------------------------------------------------------------- feature page


def _feature_page(
    art: FeatureArtifact, view: _FeatureView, notes: FeatureNotes | None, pages: set[int]
) -> str:
    i, s = view.feature, view.summary
    meta = [
        ("model", _e(art.meta.get("model", "?"))), ("hook", f"<code>{_e(art.hook)}</code>"),
        ("density", f'<span id="density" data-value="{view.get("density")!r}">'
                    f"{format_density(view.get('density'))}</span>"),
        ("active tokens", f'{int(view.get("n_active")):,} of {int(art.meta.get("n_tokens", 0)):,}'),
        ("max activation", f'<span id="max-act">{_num(s.get("max_activation"))}</span>'),
        ("mean activation", f'<span id="mean-act">{_num(s.get("mean_activation"))}</span>'),
    ]  # fmt: skip
    items = "".join(f"<li>{k} <b>{v}</b></li>" for k, v in meta)
    parts = [
        '<p class="nav"><a href="../index.html">← all features</a></p>\n',
        f'<h1 id="feature" data-id="{i}">Feature {i}</h1>\n<ul class="meta">{items}</ul>\n',
    ]
    if not view.fired:
        n = int(art.meta.get("n_tokens", 0))
        parts.append(
            f'<div class="notice" id="never-fired"><b>Never fired.</b> Feature {i} was not active on any '
            f"of the {n:,} tokens of this artifact, so it has no histogram and no examples. It may be dead, "
            "or need other inputs to fire.</div>\n"
        )
    parts.append(f"<h2>Explanation</h2>\n{_notes_html(notes)}")
    if view.fired:
        parts.append(f"<h2>Activation histogram</h2>\n{_histogram_svg(view)}")
        parts.append(_examples_html(view))
    parts.append(_logits_html(s))
    if view.fired:
        parts.append(_cooccurring_html(view, pages))
    return _page(f"Feature {i} · {art.meta.get('model', '')} {art.hook}", "".join(parts))


def _histogram_svg(view: _FeatureView) -> str:
    hist = [(lo, hi, c) for lo, hi, c in view.histogram if lo > 0 and hi > lo]
    if not hist:
        return '<p class="muted">no histogram stored</p>\n'
    edges = [float(e) for e in (view.summary.get("quantile_edges") or []) if e is not None and e > 0]
    w, h, left, right, top, bottom = 640, 190, 48, 14, 12, 36
    lo = math.log10(min([b[0] for b in hist] + edges))
    hi = math.log10(max([b[1] for b in hist] + edges))
    hi = hi if hi > lo else lo + 1
    ymax = max(c for _, _, c in hist)

    def x(v: float) -> float:
        return left + (math.log10(v) - lo) / (hi - lo) * (w - left - right)

    def y(c: float) -> float:
        return h - bottom - c / ymax * (h - bottom - top)

    out = [
        f'<svg class="hist" id="histogram" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
        f'aria-label="activation histogram, log-spaced bins"><title>activation histogram</title>\n'
    ]
    for a, b, c in hist:
        out.append(
            f'<rect class="bar" x="{x(a):.2f}" y="{y(c):.2f}" width="{max(x(b) - x(a) - 1, 1):.2f}" '
            f'height="{y(0) - y(c):.2f}" data-low="{a!r}" data-high="{b!r}" data-count="{c}">'
            f"<title>{a:.3g} – {b:.3g}: {c:,} tokens</title></rect>\n"
        )
    for k, v in enumerate(edges):
        out.append(
            f'<line class="qedge" x1="{x(v):.2f}" x2="{x(v):.2f}" y1="{top}" y2="{h - bottom}" '
            f'data-value="{v!r}"><title>quantile edge {k}: {v:.4g}</title></line>\n'
        )
    out.append(f'<line class="axis" x1="{left}" x2="{w - right}" y1="{h - bottom}" y2="{h - bottom}"/>\n')
    for t in _ticks(lo, hi):
        out.append(f'<text x="{x(t):.2f}" y="{h - bottom + 14}" text-anchor="middle">{t:g}</text>\n')
    out.append(
        f'<text x="{left - 6}" y="{top + 8}" text-anchor="end">{ymax:,}</text>'
        f'<text x="{left - 6}" y="{h - bottom}" text-anchor="end">0</text>'
        f'<text x="{(left + w - right) / 2}" y="{h - 4}" text-anchor="middle">activation (log scale); '
        "dashed: equal-count quantile edges</text>\n</svg>\n"
    )
    return "".join(out)


def _ticks(lo: float, hi: float) -> list[float]:
    """Round values (1, 2 and 5 per decade) between ``10**lo`` and ``10**hi``, at most about 12."""
    for steps in ((1, 2, 5), (1,)):
        ticks = [
            m * 10.0**k for k in range(math.floor(lo), math.ceil(hi) + 1) for m in steps
            if lo - 1e-9 <= math.log10(m * 10.0**k) <= hi + 1e-9
        ]  # fmt: skip
        if len(ticks) <= 12:
            return ticks
    return ticks[:: max(1, len(ticks) // 12)]


def _examples_html(view: _FeatureView) -> str:
    vmax = view.get("max_activation")
    parts = ['<h2>Top activations</h2>\n<div id="top-examples">\n']
    parts += [_example_html(ex, vmax) for ex in view.top] or ['<p class="muted">no top examples stored</p>\n']
    parts.append("</div>\n<h2>Examples by activation quantile</h2>\n")
    edges = view.summary.get("quantile_edges") or []
    if not view.quantiles:
        parts.append('<p class="muted">no quantile examples stored</p>\n')
    for q in sorted(view.quantiles, reverse=True):
        span = f": activations {edges[q]:.3g} – {edges[q + 1]:.3g}" if q + 1 < len(edges) else ""
        n = max(len(edges) - 1, max(view.quantiles) + 1)
        parts.append(
            f'<section class="quantile" data-quantile="{q}"><h3>Quantile {q + 1} of {n}{span}</h3>\n'
        )
        parts += [_example_html(ex, vmax) for ex in view.quantiles[q]]
        parts.append("</section>\n")
    return "".join(parts)


def _example_html(ex: FeatureExample, vmax: float) -> str:
    spans = []
    for k, (tok, act) in enumerate(zip(ex.tokens, ex.activations)):
        cls = "tok target" if k == ex.target else "tok"
        style = f' style="background:{_shade(act, vmax)}"' if act else ""  # unshaded when inactive
        spans.append(
            f'<span class="{cls}" data-act="{float(act)!r}" data-tok="{_e(tok)}" '
            f'title="{_e(repr(tok))}: {float(act)!r}"{style}>{visible(tok)}</span>'
        )
    return (
        f'<div class="ex" data-kind="{_e(ex.kind)}" data-activation="{ex.activation!r}">'
        f'<span class="act" title="activation on the outlined token">{ex.activation:.3f}</span>'
        f'<span class="toks">{"".join(spans)}</span></div>\n'
    )


def _logits_html(summary: dict[str, Any]) -> str:
    promoted, suppressed = list(summary.get("promoted") or []), list(summary.get("suppressed") or [])
    if not promoted and not suppressed:
        return '<h2>Logit effects</h2>\n<p class="muted">no logit effects stored</p>\n'
    rows = []
    for k in range(max(len(promoted), len(suppressed))):
        cells = []
        for cls, toks in (("promoted", promoted), ("suppressed", suppressed)):
            tok = (
                f'<span class="ltok" data-tok="{_e(toks[k])}">{visible(toks[k])}</span>'
                if k < len(toks)
                else ""
            )
            cells.append(f'<td class="{cls}">{tok}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        '<h2>Logit effects</h2>\n<p class="muted">tokens the feature\'s decoder direction pushes up and '
        "down through the unembedding, strongest first</p>\n"
        f'<table class="logits" id="logits"><thead><tr><th>promotes</th><th>suppresses</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>\n"
    )


def _cooccurring_html(view: _FeatureView, pages: set[int]) -> str:
    if not view.cooccurring:
        return (
            '<h2>Co-occurring features</h2>\n<p class="muted">no feature fired together with this one</p>\n'
        )
    n = max(view.get("n_active"), 1.0)
    rows = []
    for j, c in view.cooccurring:
        name = f'<a href="{j}.html">{j}</a>' if j in pages else str(j)
        rows.append(
            f'<tr data-other="{j}"><td class="num">{name}</td><td class="num">{c:,}</td>'
            f'<td class="num">{c / n:.1%}</td></tr>'
        )
    return (
        '<h2>Co-occurring features</h2>\n<table id="cooccurring"><thead><tr><th>feature</th>'
        "<th>tokens together</th><th>share of this feature's tokens</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>\n"
    )


# ----------------------------------------------------------------------------- notes


def _notes_html(notes: FeatureNotes | None) -> str:
    if notes is None or notes.explanation is None:
        parts = ['<p class="muted" id="no-explanation">no explanation yet</p>\n']
    else:
        by = f' <span class="muted">— {_e(notes.explainer)}</span>' if notes.explainer else ""
        parts = [f'<p id="explanation"><span class="explanation">{_e(notes.explanation)}</span>{by}</p>\n']
    if notes is None:
        return parts[0]
    if notes.scores:
        rows = "".join(
            f'<tr><th>{_e(k)}</th><td class="num" data-score="{_e(k)}" data-value="{v!r}">{_num(v, 3)}</td></tr>'
            for k, v in notes.scores.items()
        )
        parts.append(f'<h3>Scores</h3>\n<table id="scores"><tbody>{rows}</tbody></table>\n')
    if notes.card is not None:
        parts.append(f'<h3>Validation</h3>\n<div class="card" id="card">{_kv_html(notes.card)}</div>\n')
    if notes.links:
        items = "".join(f'<li><a href="{_e(href)}">{_e(k)}</a></li>' for k, href in notes.links.items())
        parts.append(f'<ul class="links" id="links">{items}</ul>\n')
    return "".join(parts)


_GOOD = {"pass", "passed", "ok", "valid", "yes", "true", "confirmed"}
_BAD = {"fail", "failed", "invalid", "no", "false", "rejected", "refuted"}


def _kv_html(value: Any, key: str = "", depth: int = 0) -> str:
    """A JSON-able value as HTML: dicts as key/value tables, lists inline or as nested tables."""
    if key == "verdict" and isinstance(value, str | bool):
        word = str(value).lower()
        cls = "good" if word in _GOOD else "bad" if word in _BAD else "mid"
        return f'<span class="verdict {cls}" data-verdict="{_e(value)}">{_e(value)}</span>'
    if isinstance(value, bool):
        if key == "passed":
            return f'<span class="{"good" if value else "bad"}" data-passed="{str(value).lower()}">' + (
                "✓ passed</span>" if value else "✗ failed</span>"
            )
        return str(value).lower()
    if depth > 8:
        return _e(json.dumps(value, default=str))
    if isinstance(value, Mapping):
        rows = "".join(
            f"<tr><th>{_e(k)}</th><td>{_kv_html(v, str(k), depth + 1)}</td></tr>" for k, v in value.items()
        )
        return f"<table><tbody>{rows}</tbody></table>"
    if isinstance(value, list | tuple):
        if all(v is None or isinstance(v, int | float) for v in value):  # numbers inline
            return ", ".join(_kv_html(v, key, depth + 1) for v in value) or "—"
        rows = "".join(
            f"<tr><th>{k}</th><td>{_kv_html(v, key, depth + 1)}</td></tr>" for k, v in enumerate(value)
        )
        return f"<table><tbody>{rows}</tbody></table>"
    return _num(value)


# ----------------------------------------------------------------------------- index page


def _index_page(
    art: FeatureArtifact,
    rows: list[tuple[_FeatureView, FeatureNotes | None]],
    cfg: DashboardConfig,
    named: bool,
) -> str:
    scores = sorted({k for _, n in rows if n is not None for k in n.scores})
    head = "".join(
        f'<th tabindex="0" data-type="{t}">{_e(name)}</th>'
        for name, t in [("feature", "num"), ("density", "num"), ("max activation", "num"), ("fires on", "text"),
                        ("explanation", "text")] + [(s, "num") for s in scores]
    )  # fmt: skip
    body = "".join(_index_row(v, n, scores) for v, n in rows)
    which = (
        "the features named"
        if named
        else f"the features that fired, most dense first (at most {cfg.max_features:,})"
    )
    meta = (
        f"{_e(art.meta.get('model', '?'))} · <code>{_e(art.hook)}</code> · {art.d_sae:,} features · "
        f"{int(art.meta.get('n_tokens', 0)):,} tokens"
    )
    text = (
        f'<h1>Feature dashboards</h1>\n<p class="muted">{meta}</p>\n'
        f"<p>{len(rows):,} pages: {which}. Click a column to sort it.</p>\n"
        '<div class="search"><input id="search" type="search" autocomplete="off" '
        'placeholder="explanation text, feature id, or a token (tok:X for tokens only)" '
        'aria-label="search features"><span id="count" class="muted"></span></div>\n'
        f'<table id="features"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>\n'
    )
    return _page(f"Feature dashboards · {art.meta.get('model', '')} {art.hook}", text, INDEX_JS)


def _index_row(view: _FeatureView, notes: FeatureNotes | None, scores: list[str]) -> str:
    i, explanation = view.feature, (notes.explanation if notes else None) or ""
    tokens = json.dumps(view.tokens, ensure_ascii=False)
    fires = " ".join(f'<span class="ltok">{visible(t)}</span>' for t in view.tokens)
    cells = [
        f'<td class="num" data-sort="{i}"><a href="feature/{i}.html">{i}</a></td>',
        f'<td class="num" data-sort="{view.get("density")!r}">{format_density(view.get("density"))}</td>',
        f'<td class="num" data-sort="{view.get("max_activation")!r}">{_num(view.get("max_activation"))}</td>',
        f'<td data-sort="{_e(" ".join(view.tokens))}">{fires}</td>',
        f'<td class="expl">{_e(explanation) if explanation else "<span class=muted>—</span>"}</td>',
    ]
    for s in scores:
        v = notes.scores.get(s) if notes else None
        cells.append(f'<td class="num" data-sort="{"" if v is None else repr(float(v))}">{_num(v, 3)}</td>')
    return (
        f'<tr data-id="{i}" data-explanation="{_e(explanation)}" data-tokens="{_e(tokens)}">'
        f"{''.join(cells)}</tr>\n"
    )


__all__ = ["DashboardConfig", "FeatureNotes", "build_dashboards", "format_density", "visible"]
