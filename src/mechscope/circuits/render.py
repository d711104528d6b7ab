"""Draw a circuit from its JSON form (``circuit.json``) as SVG, PNG or one self-contained HTML page.

Input: the plain dict a circuit is saved as: ``nodes`` (``input``, ``head`` ``a{L}.h{H}``, ``mlp``
``m{L}``, ``logits``) and ``edges`` (``source``, ``target``, ``port`` ``q``/``k``/``v`` or null,
signed ``score``, ``in_circuit``), plus the run's metadata (model, task, method, ...).

Layout (``layout``): layers run bottom to top. The input sits at y = 0, layer L's heads at
y = L + 1, ordered left to right by head index and centred on x = 0, layer L's MLP at y = L + 1.5
(it runs after attention, so slightly above its heads; on x = 0, or x = 0.5 when the head count
is odd so it sits between two head columns) and the logits at the top, one level above the last
layer. Units are head columns and layers; y grows upward. The same layout is deterministic and
independent of which edges are drawn.

Which edges: with ``only_circuit`` only edges with ``in_circuit: true``; of those, at most
``max_edges``, the largest |score| first (ties by name). With ``only_circuit`` nodes with no drawn
edge are hidden, except the input and the logits.

Encodings: an edge is a curve from source to target (a quadratic Bézier, bowed sideways more the
more levels it spans, so long edges do not run through the nodes between); stroke width grows
linearly with |score| normalised to the largest drawn |score| (all-zero scores: thinnest); colour
is the sign (blue positive, red negative, grey zero); a head input's port is a small q/k/v label
near the target end. Nodes differ by shape and colour: input a green rectangle, heads indigo
circles, MLPs orange squares, logits a purple diamond. In SVG each edge is a ``<g data-edge
data-score data-source data-target data-port data-rank>`` with a ``<title>`` "name: score" (the
native tooltip; ``data-rank`` 0 is the largest |score|), each node a ``<g data-node data-kind
data-layer data-head>``.

The HTML page (``to_html``) holds the same SVG inline, the circuit as JSON in a ``<script
type="application/json">`` tag (with only the drawn edges), and a small inline script: a tooltip
on edges, a side panel on node click (kind, layer, head, incoming and outgoing shown edges by
|score|), wheel zoom and drag pan, and a slider that keeps the top N edges. Every id, CSS rule
and script is scoped to a per-render prefix, so several graphs can share a page
(``to_html_fragment``). Nothing is fetched: the page makes no request.
"""

from __future__ import annotations

import html
import io
import json
import math
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

from .._fs import atomic_write_bytes, atomic_write_text

__all__ = ["NEGATIVE_COLOR", "POSITIVE_COLOR", "layout", "to_html", "to_html_fragment", "to_png", "to_svg"]

POSITIVE_COLOR = "#2563eb"
NEGATIVE_COLOR = "#dc2626"
ZERO_COLOR = "#9ca3af"
KINDS = ("input", "head", "mlp", "logits", "attn_in", "feature", "error")
# attn_in: a layer-mode graph's receiver (the attention input shared by a layer's heads)
# fill, stroke per node kind (SVG and PNG)
NODE_COLORS = {
    "input": ("#d1fae5", "#047857"),
    "head": ("#e0e7ff", "#3730a3"),
    "mlp": ("#ffedd5", "#c2410c"),
    "logits": ("#f3e8ff", "#7e22ce"),
    "attn_in": ("#f3f4f6", "#4b5563"),
    "feature": ("#fef9c3", "#a16207"),
    "error": ("#fee2e2", "#991b1b"),
}
MIN_WIDTH, MAX_WIDTH = 0.6, 6.0  # SVG stroke width in px for |score| = 0 and the largest |score|
PORT_AT = 0.8  # where along an edge (0 source, 1 target) its port label sits
X_PX, Y_PX, PAD_PX = 64.0, 84.0, 60.0  # SVG pixels per head column, per layer, and the margin


@dataclass(frozen=True)
class _Node:
    name: str
    kind: str
    layer: int | None
    head: int | None


@dataclass(frozen=True)
class _Edge:
    name: str
    source: str
    target: str
    port: str | None
    score: float
    in_circuit: bool
    index: int  # position in the input list


@dataclass(frozen=True)
class _View:
    data: Mapping[str, Any]
    nodes: dict[str, _Node]
    edges: list[_Edge]  # the drawn ones, largest |score| first
    n_edges: int  # all edges in the input
    pos: dict[str, tuple[float, float]]
    shown: list[str]  # drawn node names, input order
    scale: float  # the largest drawn |score|


# ----------------------------------------------------------------------------- checks


def _int_or_none(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer or null, got {value!r}")
    return value


def _check_nodes(raw: Any) -> dict[str, _Node]:
    nodes: dict[str, _Node] = {}
    for i, n in enumerate(raw):
        if not isinstance(n, Mapping) or not isinstance(n.get("name"), str):
            raise ValueError(f"circuit node {i} must be an object with a string 'name', got {n!r}")
        name, kind = n["name"], n.get("kind")
        if kind not in KINDS:
            raise ValueError(f"circuit node {name!r} has kind {kind!r}; expected one of {', '.join(KINDS)}")
        if name in nodes:
            raise ValueError(f"circuit node name {name!r} appears twice")
        layer = _int_or_none(n.get("layer"), f"layer of node {name!r}")
        head = _int_or_none(n.get("head"), f"head of node {name!r}")
        if kind in ("head", "mlp", "attn_in", "feature", "error") and layer is None:
            raise ValueError(f"circuit node {name!r} ({kind}) needs an integer 'layer'")
        if kind == "head" and head is None:
            raise ValueError(f"circuit node {name!r} (head) needs an integer 'head'")
        nodes[name] = _Node(name, kind, layer, head)
    return nodes


def _check_edges(raw: Any, nodes: dict[str, _Node]) -> list[_Edge]:
    edges: list[_Edge] = []
    for i, e in enumerate(raw):
        if not isinstance(e, Mapping):
            raise ValueError(f"circuit edge {i} must be an object, got {e!r}")
        src, dst, port = e.get("source"), e.get("target"), e.get("port")
        name = e.get("name") or f"{src}->{dst}" + (f"<{port}>" if port else "")
        for end, ref in (("source", src), ("target", dst)):
            if not isinstance(ref, str) or ref not in nodes:
                raise ValueError(f"circuit edge {name!r} names an unknown {end} node {ref!r}")
        if port is not None and not isinstance(port, str):
            raise ValueError(f"circuit edge {name!r} has port {port!r}; expected 'q', 'k', 'v' or null")
        score = e.get("score")
        if isinstance(score, bool) or not isinstance(score, Real):
            raise ValueError(f"circuit edge {name!r} has score {score!r}; expected a number")
        if not math.isfinite(float(score)):
            raise ValueError(f"circuit edge {name!r} has a non-finite score ({score!r})")
        edges.append(
            _Edge(str(name), str(src), str(dst), port, float(score), bool(e.get("in_circuit", False)), i)
        )
    return edges


def _check(data: Any) -> tuple[dict[str, _Node], list[_Edge]]:
    """Validate a circuit dict; ``ValueError`` naming the problem otherwise."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a circuit must be a dict (the content of circuit.json), got {type(data).__name__}")
    for key in ("nodes", "edges"):
        if not isinstance(data.get(key), list):
            raise ValueError(
                f"circuit dict has no '{key}' list (its keys: {', '.join(map(str, data)) or 'none'})"
            )
    nodes = _check_nodes(data["nodes"])
    return nodes, _check_edges(data["edges"], nodes)


# ----------------------------------------------------------------------------- layout and selection


def _layout(data: Mapping[str, Any], nodes: dict[str, _Node]) -> dict[str, tuple[float, float]]:
    heads = [n.head for n in nodes.values() if n.kind == "head" and n.head is not None]
    layers = [n.layer for n in nodes.values() if n.kind in ("head", "mlp") and n.layer is not None]
    n_heads = max([_int_or_none(data.get("n_heads"), "n_heads") or 0, *(h + 1 for h in heads)])
    n_layers = max([_int_or_none(data.get("n_layers"), "n_layers") or 0, *(la + 1 for la in layers)])
    mlp_x = 0.5 if n_heads % 2 else 0.0
    pos: dict[str, tuple[float, float]] = {}
    split_seen: dict[int, int] = {}
    for n in nodes.values():
        if n.kind == "input":
            pos[n.name] = (0.0, 0.0)
        elif n.kind == "logits":
            pos[n.name] = (0.0, float(n_layers + 1))
        elif n.kind == "head":
            assert n.layer is not None and n.head is not None
            pos[n.name] = (n.head - (n_heads - 1) / 2, float(n.layer + 1))
        elif n.kind == "attn_in":  # left of the layer's heads, a little below them
            assert n.layer is not None
            pos[n.name] = (-(n_heads - 1) / 2 - 1.2, n.layer + 0.75)
        elif n.kind in ("feature", "error"):  # an MLP split into features: a row at the MLP's height
            assert n.layer is not None
            j = split_seen.get(n.layer, 0)
            split_seen[n.layer] = j + 1
            pos[n.name] = (mlp_x + 0.8 * j, n.layer + 1.5)
        else:
            assert n.layer is not None
            pos[n.name] = (mlp_x, n.layer + 1.5)
    return pos


def layout(data: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """Node name -> (x, y): layers bottom to top (y up), heads left to right, each MLP above its heads."""
    nodes, _ = _check(data)
    return _layout(data, nodes)


def _view(data: Mapping[str, Any], only_circuit: bool, max_edges: int | None) -> _View:
    if max_edges is not None and (
        isinstance(max_edges, bool) or not isinstance(max_edges, int) or max_edges < 0
    ):
        raise ValueError(f"max_edges must be a non-negative integer or None, got {max_edges!r}")
    nodes, edges = _check(data)
    pool = [e for e in edges if e.in_circuit] if only_circuit else edges
    pool.sort(key=lambda e: (-abs(e.score), e.name, e.index))
    drawn = pool if max_edges is None else pool[:max_edges]
    ends = {e.source for e in drawn} | {e.target for e in drawn}
    shown = [n for n, v in nodes.items() if not only_circuit or n in ends or v.kind in ("input", "logits")]
    scale = max((abs(e.score) for e in drawn), default=0.0)
    return _View(data, nodes, drawn, len(edges), _layout(data, nodes), shown, scale)


def _curve(v: _View, e: _Edge) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """Start, control and end point (layout units) of an edge's quadratic Bézier."""
    (x1, y1), (x2, y2) = v.pos[e.source], v.pos[e.target]
    side = 1.0 if zlib.crc32(e.name.encode()) & 1 else -1.0
    bow = side * min(0.2 + 0.15 * max(0.0, abs(y2 - y1) - 1.0), 1.2)
    return (x1, y1), ((x1 + x2) / 2 + bow, (y1 + y2) / 2), (x2, y2)


def _at(curve: tuple[tuple[float, float], ...], t: float) -> tuple[float, float]:
    (ax, ay), (bx, by), (cx, cy) = curve
    u = 1.0 - t
    return u * u * ax + 2 * u * t * bx + t * t * cx, u * u * ay + 2 * u * t * by + t * t * cy


def _color(score: float) -> str:
    return POSITIVE_COLOR if score > 0 else NEGATIVE_COLOR if score < 0 else ZERO_COLOR


def _rel(v: _View, score: float) -> float:
    """|score| over the largest drawn |score|, in [0, 1] (0 when every drawn score is 0)."""
    return abs(score) / v.scale if v.scale > 0 else 0.0


def _fmt(x: float) -> str:
    return f"{x:.4g}"


# ----------------------------------------------------------------------------- SVG


def _e(text: Any) -> str:
    """Escaped for XML/HTML text and attributes; control characters XML forbids become '?'."""
    s = "".join(c if c >= " " or c in "\t\n\r" else "?" for c in str(text))
    return html.escape(s, quote=True)


def _n(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _short(text: str, n: int = 12) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _frame(v: _View) -> tuple[float, float, Any]:
    """SVG width, height and a function from layout units to SVG pixels (y flipped)."""
    xs = [p[0] for p in v.pos.values()] or [0.0]
    ys = [p[1] for p in v.pos.values()] or [0.0]
    x0, x1, y1 = min(xs) - 0.5, max(xs) + 0.5, max(ys)
    width = 2 * PAD_PX + (x1 - x0) * X_PX
    height = PAD_PX + (y1 - min(ys)) * Y_PX + PAD_PX + 18

    def px(p: tuple[float, float]) -> tuple[float, float]:
        return PAD_PX + (p[0] - x0) * X_PX, PAD_PX + (y1 - p[1]) * Y_PX

    return width, height, px


def _svg_edge(v: _View, e: _Edge, rank: int, px: Any) -> str:
    c = _curve(v, e)
    (ax, ay), (bx, by), (cx, cy) = (px(p) for p in c)
    width = MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * _rel(v, e.score)
    out = (
        f'<g class="e" data-edge="{_e(e.name)}" data-score="{e.score!r}" data-source="{_e(e.source)}" '
        f'data-target="{_e(e.target)}" data-port="{_e(e.port or "")}" data-rank="{rank}">'
        f"<title>{_e(e.name)}: {_fmt(e.score)}</title>"
        f'<path d="M{_n(ax)} {_n(ay)}Q{_n(bx)} {_n(by)} {_n(cx)} {_n(cy)}" fill="none" '
        f'stroke="{_color(e.score)}" stroke-width="{_n(width)}" stroke-opacity="0.75" stroke-linecap="round"/>'
    )
    if e.port:
        lx, ly = px(_at(c, PORT_AT))
        out += (
            f'<text x="{_n(lx + 4)}" y="{_n(ly)}" font-size="9" font-style="italic" '
            f'fill="{_color(e.score)}" dominant-baseline="central">{_e(e.port)}</text>'
        )
    return out + "</g>"


_SHAPES = {
    "input": '<rect x="-24" y="-11" width="48" height="22" rx="4"',
    "head": '<circle r="15"',
    "mlp": '<rect x="-13" y="-13" width="26" height="26" rx="2"',
    "logits": '<polygon points="0,-14 27,0 0,14 -27,0"',
    "attn_in": '<rect x="-16" y="-8" width="32" height="16" rx="8"',
    "feature": '<rect x="-10" y="-10" width="20" height="20" rx="10"',
    "error": '<rect x="-10" y="-10" width="20" height="20" rx="1"',
}


def _svg_node(v: _View, name: str, px: Any) -> str:
    n = v.nodes[name]
    x, y = px(v.pos[name])
    fill, stroke = NODE_COLORS[n.kind]
    return (
        f'<g class="n n-{n.kind}" data-node="{_e(name)}" data-kind="{n.kind}" '
        f'data-layer="{"" if n.layer is None else n.layer}" data-head="{"" if n.head is None else n.head}" '
        f'transform="translate({_n(x)},{_n(y)})"><title>{_e(name)} ({n.kind})</title>'
        f'{_SHAPES[n.kind]} fill="{fill}" stroke="{stroke}" stroke-width="1.2"/>'
        f'<text text-anchor="middle" dominant-baseline="central" font-size="8">{_e(_short(name))}</text></g>'
    )


def _what(d: Mapping[str, Any]) -> str:
    return " · ".join(str(d[k]) for k in ("model", "task", "method") if d.get(k) is not None)


def _caption(v: _View) -> str:
    return (
        f"{_what(v.data)} — {len(v.edges)} of {v.n_edges} edges; width ∝ |score|, "
        "blue positive, red negative; q/k/v: the head input an edge feeds"
    )


def _svg(v: _View, *, standalone: bool) -> str:
    width, height, px = _frame(v)
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    parts = [
        f'<svg{ns} width="{_n(width)}" height="{_n(height)}" viewBox="0 0 {_n(width)} {_n(height)}" '
        f'font-family="system-ui, sans-serif" role="img" aria-label="circuit graph">',
        f'<rect class="bg" width="{_n(width)}" height="{_n(height)}" fill="#fff"/>',
        '<g class="edges">',
    ]
    # weakest first, so the strongest are painted on top
    parts += [_svg_edge(v, e, r, px) for r, e in reversed(list(enumerate(v.edges)))]
    parts.append('</g><g class="nodes">')
    parts += [_svg_node(v, name, px) for name in v.shown]
    parts.append(f'</g><text x="8" y="{_n(height - 8)}" font-size="10" fill="#555">{_e(_caption(v))}</text>')
    return "".join(parts) + "</svg>"


def to_svg(data: Mapping[str, Any], *, only_circuit: bool = True, max_edges: int | None = 500) -> str:
    """The circuit as a standalone SVG string (see the module docstring for layout and encodings)."""
    return _svg(_view(data, only_circuit, max_edges), standalone=True) + "\n"


# ----------------------------------------------------------------------------- PNG

_MARKERS = {
    "input": ("s", 260),
    "head": ("o", 330),
    "mlp": ("s", 220),
    "logits": ("D", 230),
    "attn_in": ("h", 160),
    "feature": ("o", 140),
    "error": ("s", 140),
}


def _png_edges(ax: Any, v: _View) -> None:
    """The drawn edges on a matplotlib axes (layout units), weakest first, with their port labels."""
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MPath

    codes = [MPath.MOVETO, MPath.CURVE3, MPath.CURVE3]
    for e in reversed(v.edges):
        c, color = _curve(v, e), _color(e.score)
        lw = 0.4 + 3.6 * _rel(v, e.score)
        ax.add_patch(PathPatch(MPath(list(c), codes), fill=False, lw=lw, ec=color, alpha=0.75, zorder=1))
        if e.port:
            lx, ly = _at(c, PORT_AT)
            ax.text(lx + 0.06, ly, e.port, fontsize=6, style="italic", color=color, va="center", zorder=2)


def to_png(
    data: Mapping[str, Any],
    path: str | Path,
    *,
    only_circuit: bool = True,
    max_edges: int | None = 500,
    dpi: int = 110,
) -> Path:
    """Draw the circuit as a PNG (matplotlib Agg, no pyplot state), written atomically; return its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    v = _view(data, only_circuit, max_edges)
    xs = [p[0] for p in v.pos.values()] or [0.0]
    ys = [p[1] for p in v.pos.values()] or [0.0]
    w = min(max(2.0 + 0.75 * (max(xs) - min(xs) + 1), 6.0), 30.0)
    h = min(max(1.6 + 0.95 * (max(ys) - min(ys) + 1), 4.0), 40.0)
    fig = Figure(figsize=(w, h), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _png_edges(ax, v)
    for kind in KINDS:
        names = [n for n in v.shown if v.nodes[n].kind == kind]
        if not names:
            continue
        marker, size = _MARKERS[kind]
        fill, stroke = NODE_COLORS[kind]
        px, py = zip(*(v.pos[n] for n in names))
        ax.scatter(px, py, s=size, marker=marker, c=fill, edgecolors=stroke, linewidths=1.0, zorder=3)
        for n, x, y in zip(names, px, py):
            ax.text(x, y, _short(n, 9), fontsize=5.5, ha="center", va="center", zorder=4)
    ax.set_xlim(min(xs) - 0.9, max(xs) + 0.9)
    ax.set_ylim(min(ys) - 0.5, max(ys) + 0.5)
    ax.set_axis_off()
    ax.set_title(_caption(v), fontsize=7, wrap=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- HTML


def _script_json(obj: Any) -> str:
    """JSON safe inside ``<script>``: ``<``, ``>``, ``&`` (so ``</``) and U+2028/9 as ``\\u`` escapes."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)
    for ch in "<>&\u2028\u2029":
        text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text


def _embedded(v: _View) -> dict[str, Any]:
    """The circuit dict with only the drawn edges (input order), every other key as given."""
    keep = sorted(e.index for e in v.edges)
    return {**v.data, "edges": [v.data["edges"][i] for i in keep]}


def _header(v: _View, title: str | None) -> str:
    d, default = v.data, "Circuit: " + _what(v.data)
    meta = []
    for key in ("model", "task", "method", "ablation", "metric", "settings"):
        if d.get(key) is not None:
            val = d[key] if isinstance(d[key], str) else json.dumps(d[key], sort_keys=True, default=str)
            meta.append(f"<span><b>{key}</b> {_e(val)}</span>")
    return f'<h2>{_e(title or default)}</h2>\n<p class="meta">{" ".join(meta)}</p>\n'


def to_html_fragment(
    data: Mapping[str, Any],
    *,
    title: str | None = None,
    only_circuit: bool = True,
    max_edges: int | None = 500,
) -> str:
    """One interactive graph as a ``<section>`` (its own style, data and script), safe to repeat on a page."""
    v = _view(data, only_circuit, max_edges)
    p = f"msc-{uuid.uuid4().hex[:12]}"
    n = len(v.edges)
    which = "in-circuit edges" if only_circuit else "edges"
    return (
        f'<section class="mscirc" id="{p}">\n<style>\n{_CSS.replace("#P", "#" + p)}</style>\n'
        + _header(v, title)
        + f'<div class="ctl"><label>top <input type="range" id="{p}-n" min="0" max="{n}" value="{n}" '
        f'step="1"> <output id="{p}-shown">{n}</output> of {n} drawn {which} by |score| '
        f"({v.n_edges} edges in the graph)</label>"
        f'<button type="button" id="{p}-reset">reset view</button>'
        '<span class="hint">wheel: zoom · drag: pan · click a node: its edges · '
        f'<b class="pos">blue</b> positive, <b class="neg">red</b> negative, width ∝ |score|</span></div>\n'
        f'<div class="main">{_svg(v, standalone=False)}\n'
        f'<aside id="{p}-panel" hidden></aside></div>\n<div id="{p}-tip" class="tip" hidden></div>\n'
        f'<script type="application/json" id="{p}-data">{_script_json(_embedded(v))}</script>\n'
        f"<script>\n{_JS.replace('__PREFIX__', json.dumps(p))}</script>\n</section>\n"
    )


def to_html(
    data: Mapping[str, Any],
    path: str | Path | None = None,
    *,
    title: str | None = None,
    only_circuit: bool = True,
    max_edges: int | None = 500,
) -> str:
    """One self-contained interactive HTML page; also written atomically to ``path`` when given."""
    section = to_html_fragment(data, title=title, only_circuit=only_circuit, max_edges=max_edges)
    page_title = title or "Circuit: " + _what(data)
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<link rel="icon" href="data:,">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(page_title)}</title>\n<style>body{{margin:16px;background:#fff}}</style>\n"
        f"</head>\n<body>\n{section}</body>\n</html>\n"
    )
    if path is not None:
        atomic_write_text(path, page)
    return page


_CSS = """\
#P{font:13px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:0 0 16px}
#P h2{font-size:17px;margin:0 0 4px}
#P .meta{margin:0 0 8px;color:#444;display:flex;flex-wrap:wrap;gap:4px 14px} #P .meta b{color:#111}
#P .ctl{display:flex;flex-wrap:wrap;gap:8px 16px;align-items:center;margin:0 0 8px}
#P .ctl input{vertical-align:middle;width:220px}
#P .hint{color:#666}
#P .pos{color:#2563eb} #P .neg{color:#dc2626}
#P .main{display:flex;gap:12px;align-items:flex-start}
#P svg{flex:1 1 auto;min-width:0;width:100%;height:74vh;border:1px solid #e5e5e5;border-radius:4px;
cursor:grab;user-select:none;touch-action:none}
#P.panning svg{cursor:grabbing}
#P .e.off{display:none} #P .e:hover path{stroke-opacity:1}
#P.has-sel .e:not(.sel){opacity:.12}
#P .e.sel path{stroke-opacity:1}
#P .n{cursor:pointer}
#P .n.sel>:nth-child(2){stroke-width:3}
#P aside{flex:0 0 290px;max-height:74vh;overflow:auto;border:1px solid #e5e5e5;border-radius:4px;padding:8px}
#P aside h3{margin:0 0 4px;font-size:15px;word-break:break-all}
#P aside h4{margin:10px 0 2px;font-size:13px} #P aside ol{margin:0;padding-left:22px}
#P aside p{margin:0;color:#444}
#P .tip{position:fixed;pointer-events:none;background:#222;color:#fff;padding:3px 7px;border-radius:4px;
font-size:12px;z-index:1000;white-space:pre}
"""

_JS = """\
(function () {
  "use strict";
  var P = __PREFIX__;
  var root = document.getElementById(P), svg = root.querySelector("svg");
  var tip = document.getElementById(P + "-tip"), panel = document.getElementById(P + "-panel");
  var slider = document.getElementById(P + "-n"), shown = document.getElementById(P + "-shown");
  var edges = Array.prototype.slice.call(svg.querySelectorAll("[data-edge]"));
  var home = svg.getAttribute("viewBox"), selected = null, drag = null;
  edges.forEach(function (e) { var t = e.querySelector("title"); if (t) t.remove(); });
  function fmt(s) { return String(Number((+s).toPrecision(4))); }
  function byAbs(a, b) { return Math.abs(+b.dataset.score) - Math.abs(+a.dataset.score); }
  function add(parent, tag, text) {
    var el = document.createElement(tag);
    if (text !== undefined) el.textContent = text;
    parent.appendChild(el);
    return el;
  }
  function clear() {
    selected = null;
    root.classList.remove("has-sel");
    root.querySelectorAll(".sel").forEach(function (x) { x.classList.remove("sel"); });
    panel.hidden = true;
  }
  function showNode(g) {
    clear();
    selected = g;
    root.classList.add("has-sel"); g.classList.add("sel");
    var name = g.dataset.node, d = g.dataset;
    panel.replaceChildren();
    add(panel, "h3", name);
    add(panel, "p", "kind " + d.kind + (d.layer !== "" ? " · layer " + d.layer : "") +
      (d.head !== "" ? " · head " + d.head : ""));
    [["incoming", "target", "source"], ["outgoing", "source", "target"]].forEach(function (w) {
      var list = edges.filter(function (e) {
        return e.dataset[w[1]] === name && !e.classList.contains("off");
      }).sort(byAbs);
      add(panel, "h4", w[0] + " (" + list.length + ")");
      var ol = add(panel, "ol");
      list.forEach(function (e) {
        e.classList.add("sel");
        var port = e.dataset.port ? " <" + e.dataset.port + ">" : "";
        var li = add(ol, "li", e.dataset[w[2]] + port + "  " + fmt(e.dataset.score));
        li.className = +e.dataset.score < 0 ? "neg" : "pos";
        li.title = e.dataset.edge;
      });
    });
    panel.hidden = false;
  }
  function setTop(n) {
    edges.forEach(function (e) { e.classList.toggle("off", +e.dataset.rank >= n); });
    shown.textContent = n;
    if (selected) showNode(selected);
  }
  slider.addEventListener("input", function () { setTop(+slider.value); });
  document.getElementById(P + "-reset").addEventListener("click", function () {
    svg.setAttribute("viewBox", home);
  });
  svg.addEventListener("mousemove", function (ev) {
    var e = ev.target.closest("[data-edge]");
    if (!e || (drag && drag.moved)) { tip.hidden = true; return; }
    tip.textContent = e.dataset.edge + ": " + fmt(e.dataset.score);
    tip.style.left = ev.clientX + 14 + "px"; tip.style.top = ev.clientY + 14 + "px"; tip.hidden = false;
  });
  svg.addEventListener("mouseleave", function () { tip.hidden = true; });
  svg.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var m = svg.getScreenCTM();
    if (!m) return;
    var p = new DOMPoint(ev.clientX, ev.clientY).matrixTransform(m.inverse());
    var vb = svg.viewBox.baseVal, f = Math.exp(Math.max(-0.5, Math.min(0.5, ev.deltaY * 0.002)));
    vb.x = p.x - (p.x - vb.x) * f; vb.y = p.y - (p.y - vb.y) * f;
    vb.width *= f; vb.height *= f;
  }, { passive: false });
  svg.addEventListener("pointerdown", function (ev) {
    if (ev.button !== 0) return;
    var vb = svg.viewBox.baseVal, m = svg.getScreenCTM();
    drag = { x: ev.clientX, y: ev.clientY, vx: vb.x, vy: vb.y, k: m ? m.a : 1, moved: false, target: ev.target };
  });
  window.addEventListener("pointermove", function (ev) {
    if (!drag) return;
    var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    drag.moved = true;
    root.classList.add("panning");
    var vb = svg.viewBox.baseVal;
    vb.x = drag.vx - dx / drag.k; vb.y = drag.vy - dy / drag.k;
  });
  window.addEventListener("pointerup", function () {
    if (!drag) return;
    var d = drag; drag = null;
    root.classList.remove("panning");
    if (d.moved) return;
    var node = d.target.closest ? d.target.closest("[data-node]") : null;
    if (node) showNode(node); else clear();
  });
})();
"""
