"""Heat maps as one self-contained HTML page; the layout is described in ``heatmap.py``."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import atomic_write_text
from .heatmap_spec import (
    BAR_LABEL_LIMIT,
    NAN_COLOR,
    SVG_RECT_LIMIT,
    TOP_CELLS,
    _check,
    _clamp,
    _short,
    _Spec,
    _tick_positions,
    _View,
    _view,
)

# ----------------------------------------------------------------------------- HTML


def heatmap_html(spec: dict[str, Any], path: str | Path) -> Path:
    """Write ``spec`` as one self-contained HTML page (SVG map, legend, top-cells table); return its path."""
    view = _view(_check(spec))
    if view.spec.values.ndim == 1:
        figure = _svg_bars(view)
    else:
        as_image = sum(p.values.size for p in view.panels) > SVG_RECT_LIMIT
        figure = "".join(_svg_grid(view, k, as_image) for k in range(len(view.panels)))
    return atomic_write_text(path, _page(view, figure))


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _n(x: float) -> str:
    """A coordinate for SVG: at most two decimals."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _script_json(obj: Any) -> str:
    """JSON safe inside ``<script>``: ``<``, ``>`` and ``&`` as ``\\u`` escapes, so no label can close it."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    for ch in "<>&\u2028\u2029":
        text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text


def _json_value(spec: _Spec, x: float) -> float | str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(spec.fmt(x))  # the short text, so the JSON shows the same digits as the tooltip


def _data(view: _View) -> dict[str, Any]:
    """Everything the page's script needs, and a copy of the data for whoever reads the page."""
    spec = view.spec
    reduced = None
    if view.argmax is not None:
        reduced = {
            "values": [_json_value(spec, x) for x in view.panels[0].values.ravel().tolist()],
            "argmax": [int(a) for a in view.argmax.ravel().tolist()],
        }
    return {
        "title": spec.title,
        "value_label": spec.value_label,
        "centered": spec.centered,
        "axes": [{"name": n, "labels": list(lab)} for n, lab in zip(spec.names, spec.labels)],
        "shape": list(spec.values.shape),
        "values": [_json_value(spec, x) for x in spec.values.ravel().tolist()],
        "reduced": reduced,
    }


def _cell_tip(view: _View, k: int, i: int, j: int) -> str:
    spec = view.spec
    lines = [f"{spec.names[0]} {spec.labels[0][i]}", f"{spec.names[1]} {spec.labels[1][j]}"]
    if view.argmax is not None:
        a = int(view.argmax[i, j])
        if a >= 0:
            lines.append(f"max |value| over {spec.names[2]} at {spec.names[2]} {spec.labels[2][a]}")
    elif spec.values.ndim == 3:
        lines.append(f"{spec.names[2]} {spec.labels[2][k]}")
    lines.append(f"{spec.value_label} = {spec.fmt(float(view.panels[k].values[i, j]))}")
    return "\n".join(lines)


def _png_data_uri(rgba: np.ndarray) -> str:
    from matplotlib.image import imsave

    buf = io.BytesIO()
    imsave(buf, rgba, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _svg_grid(view: _View, k: int, as_image: bool) -> str:
    """One panel as SVG; its ``data-*`` attributes let the script map the mouse to a cell."""
    spec, panel = view.spec, view.panels[k]
    rows, cols = spec.labels[0], spec.labels[1]
    nr, nc = panel.values.shape
    lone = len(view.panels) == 1
    fs = 11 if lone else 10
    cw = _clamp((880 if lone else 300) / nc, 2, 40 if lone else 18)
    ch = _clamp((520 if lone else 220) / nr, 2, 28 if lone else 14)
    char = fs * 0.62
    rlen = max(len(_short(x, 30)) for x in rows)
    clen = max(len(_short(x, 30)) for x in cols)
    rotate = clen > 3
    gw, gh = nc * cw, nr * ch
    room = int(gw / (fs + 2)) if rotate else int(gw / ((clen + 1) * char))
    col_ticks = _tick_positions(nc, room)
    x0 = max(22 + rlen * char + 6, _overhang(cols, col_ticks, cw, char) + 4 if rotate else 0.0)
    y0 = 24 if panel.title else 8
    bottom = (clen * char * 0.75 + 12 if rotate else fs + 10) + 18
    width, height = x0 + gw + 12, y0 + gh + bottom
    out = [
        f'<svg class="hm-grid" width="{_n(width)}" height="{_n(height)}" viewBox="0 0 {_n(width)} {_n(height)}" '
        f'font-size="{fs}" role="img" aria-label="{_e(panel.title or view.title)}" data-panel="{k}" '
        f'data-x0="{_n(x0)}" data-y0="{_n(y0)}" data-cw="{_n(cw)}" data-ch="{_n(ch)}" '
        f'data-rows="{nr}" data-cols="{nc}">'
    ]
    if panel.title:
        out.append(
            f'<text x="{_n(x0 + gw / 2)}" y="16" text-anchor="middle" font-weight="600">{_e(panel.title)}</text>'
        )
    if as_image:
        uri = _png_data_uri(view.scale.rgba(panel.values))
        out.append(
            f'<image x="{_n(x0)}" y="{_n(y0)}" width="{_n(gw)}" height="{_n(gh)}" preserveAspectRatio="none" '
            f'style="image-rendering:pixelated" href="{uri}"/>'
        )
    else:
        colors = view.scale.hex(panel.values)
        out.append('<g shape-rendering="crispEdges">')
        for i in range(nr):
            for j in range(nc):
                out.append(
                    f'<rect x="{_n(x0 + j * cw)}" y="{_n(y0 + i * ch)}" width="{_n(cw)}" height="{_n(ch)}" '
                    f'fill="{colors[i * nc + j]}"><title>{_e(_cell_tip(view, k, i, j))}</title></rect>'
                )
        out.append("</g>")
    out.append(
        f'<rect x="{_n(x0)}" y="{_n(y0)}" width="{_n(gw)}" height="{_n(gh)}" fill="none" stroke="#888" '
        'stroke-width="0.6"/>'
    )
    for i in _tick_positions(nr, int(gh / (fs + 2))):
        out.append(
            f'<text x="{_n(x0 - 4)}" y="{_n(y0 + (i + 0.5) * ch)}" text-anchor="end" '
            f'dominant-baseline="central">{_e(_short(rows[i], 30))}</text>'
        )
    for j in col_ticks:
        x = x0 + (j + 0.5) * cw
        if rotate:
            out.append(
                f'<text transform="translate({_n(x)},{_n(y0 + gh + 5)}) rotate(-55)" text-anchor="end" '
                f'dominant-baseline="central">{_e(_short(cols[j], 30))}</text>'
            )
        else:
            out.append(
                f'<text x="{_n(x)}" y="{_n(y0 + gh + fs + 3)}" text-anchor="middle">{_e(_short(cols[j], 30))}</text>'
            )
    out.append(
        f'<text class="hm-axis" x="{_n(x0 + gw / 2)}" y="{_n(height - 6)}" text-anchor="middle">{_e(spec.names[1])}</text>'
        f'<text class="hm-axis" transform="translate(12,{_n(y0 + gh / 2)}) rotate(-90)" text-anchor="middle" '
        f'dominant-baseline="central">{_e(spec.names[0])}</text>'
    )
    out.append("</svg>")
    return "".join(out)


def _overhang(labels: tuple[str, ...], ticks: list[int], step: float, char: float) -> float:
    """How far tick labels rotated by -55° reach left of the first cell, in pixels."""
    return max(0.0, *(0.58 * len(_short(labels[j], 30)) * char - (j + 0.5) * step for j in ticks))


def _value_ticks(lo: float, hi: float) -> list[float]:
    from matplotlib.ticker import MaxNLocator

    return [float(t) for t in MaxNLocator(6).tick_values(lo, hi) if lo <= t <= hi]


def _svg_bars(view: _View) -> str:
    """1-D values as bars, laid out as the PNG; ``data-*`` attributes map the mouse to an entry."""
    spec, scale = view.spec, view.scale
    v = spec.values
    labels = spec.labels[0]
    n = len(v)
    finite = v[np.isfinite(v)]
    if spec.centered:
        lo, hi = scale.vmin, scale.vmax
    else:
        lo = min(0.0, float(finite.min())) if finite.size else 0.0
        hi = max(0.0, float(finite.max())) if finite.size else 1.0
        hi = hi if hi > lo else lo + 1.0
    colors = scale.hex(v)
    clipped = np.clip(v, lo, hi)
    fs, char = 11, 11 * 0.62
    out: list[str] = []
    if n <= BAR_LABEL_LIMIT:
        step, plot = 18.0, 560.0
        x0, y0 = 22 + max(len(_short(x, 40)) for x in labels) * char + 8, 8.0
        width, height = x0 + plot + 16, y0 + n * step + 44

        def pos(x: float) -> float:
            return x0 + (x - lo) / (hi - lo) * plot

        out.append(
            f'<svg class="hm-bars" width="{_n(width)}" height="{_n(height)}" viewBox="0 0 {_n(width)} {_n(height)}" '
            f'font-size="{fs}" role="img" aria-label="{_e(view.title)}" data-orient="h" data-start="{_n(y0)}" '
            f'data-step="{_n(step)}">'
        )
        for t in _value_ticks(lo, hi):
            out.append(
                f'<line x1="{_n(pos(t))}" x2="{_n(pos(t))}" y1="{_n(y0)}" y2="{_n(y0 + n * step)}" stroke="#e4e4e4"/>'
                f'<text x="{_n(pos(t))}" y="{_n(y0 + n * step + 14)}" text-anchor="middle">{t:g}</text>'
            )
        for i in range(n):
            y = y0 + i * step
            tip = _e(f"{spec.names[0]} {labels[i]}\n{spec.value_label} = {spec.fmt(float(v[i]))}")
            out.append(
                f'<g><rect x="0" y="{_n(y)}" width="{_n(width)}" height="{_n(step)}" fill="transparent"/>'
            )
            out.append(
                f'<text x="{_n(x0 - 6)}" y="{_n(y + step / 2)}" text-anchor="end" dominant-baseline="central">'
                f"{_e(_short(labels[i], 40))}</text>"
            )
            if np.isnan(v[i]):
                out.append(
                    f'<text x="{_n(pos(0) + 4)}" y="{_n(y + step / 2)}" dominant-baseline="central" fill="#888">NaN</text>'
                )
            else:
                a, b = sorted((pos(0.0), pos(float(clipped[i]))))
                out.append(
                    f'<rect x="{_n(a)}" y="{_n(y + 2)}" width="{_n(b - a)}" height="{_n(step - 4)}" '
                    f'fill="{colors[i]}" stroke="#555" stroke-width="0.3"/>'
                )
            out.append(f"<title>{tip}</title></g>")
        out.append(
            f'<line x1="{_n(pos(0))}" x2="{_n(pos(0))}" y1="{_n(y0)}" y2="{_n(y0 + n * step)}" stroke="#333"/>'
            f'<text class="hm-axis" x="{_n(x0 + plot / 2)}" y="{_n(height - 6)}" text-anchor="middle">'
            f"{_e(spec.value_label)}</text>"
            f'<text class="hm-axis" transform="translate(12,{_n(y0 + n * step / 2)}) rotate(-90)" '
            f'text-anchor="middle" dominant-baseline="central">{_e(spec.names[0])}</text></svg>'
        )
        return "".join(out)
    step, plot = _clamp(1100 / n, 2, 12), 300.0
    llen = max(len(_short(x, 30)) for x in labels)
    rotate = llen > 3
    room = int(n * step / (fs + 2)) if rotate else int(n * step / ((llen + 1) * char))
    ticks = _tick_positions(n, room)
    x0, y0 = max(64.0, _overhang(labels, ticks, step, char) + 4 if rotate else 0.0), 10.0
    width = x0 + n * step + 16
    height = y0 + plot + (llen * char * 0.82 + 12 if rotate else fs + 10) + 20

    def ypos(x: float) -> float:
        return y0 + (hi - x) / (hi - lo) * plot

    out.append(
        f'<svg class="hm-bars" width="{_n(width)}" height="{_n(height)}" viewBox="0 0 {_n(width)} {_n(height)}" '
        f'font-size="{fs}" role="img" aria-label="{_e(view.title)}" data-orient="v" data-start="{_n(x0)}" '
        f'data-step="{_n(step)}">'
    )
    for t in _value_ticks(lo, hi):
        out.append(
            f'<line x1="{_n(x0)}" x2="{_n(x0 + n * step)}" y1="{_n(ypos(t))}" y2="{_n(ypos(t))}" stroke="#e4e4e4"/>'
            f'<text x="{_n(x0 - 4)}" y="{_n(ypos(t))}" text-anchor="end" dominant-baseline="central">{t:g}</text>'
        )
    out.append('<g shape-rendering="crispEdges">')
    for i in range(n):
        tip = _e(f"{spec.names[0]} {labels[i]}\n{spec.value_label} = {spec.fmt(float(v[i]))}")
        if np.isnan(v[i]):
            out.append(
                f'<rect x="{_n(x0 + i * step)}" y="{_n(ypos(0) - 2)}" width="{_n(step)}" height="4" '
                f'fill="{NAN_COLOR}"><title>{tip}</title></rect>'
            )
            continue
        a, b = sorted((ypos(0.0), ypos(float(clipped[i]))))
        out.append(
            f'<rect x="{_n(x0 + i * step)}" y="{_n(a)}" width="{_n(step)}" height="{_n(max(b - a, 1))}" '
            f'fill="{colors[i]}"><title>{tip}</title></rect>'
        )
    out.append("</g>")
    for i in ticks:
        x = x0 + (i + 0.5) * step
        if rotate:
            out.append(
                f'<text transform="translate({_n(x)},{_n(y0 + plot + 5)}) rotate(-55)" text-anchor="end" '
                f'dominant-baseline="central">{_e(_short(labels[i], 30))}</text>'
            )
        else:
            out.append(
                f'<text x="{_n(x)}" y="{_n(y0 + plot + fs + 3)}" text-anchor="middle">{_e(_short(labels[i], 30))}</text>'
            )
    out.append(
        f'<line x1="{_n(x0)}" x2="{_n(x0 + n * step)}" y1="{_n(ypos(0))}" y2="{_n(ypos(0))}" stroke="#333"/>'
        f'<text class="hm-axis" x="{_n(x0 + n * step / 2)}" y="{_n(height - 6)}" text-anchor="middle">'
        f"{_e(spec.names[0])}</text>"
        f'<text class="hm-axis" transform="translate(12,{_n(y0 + plot / 2)}) rotate(-90)" text-anchor="middle" '
        f'dominant-baseline="central">{_e(spec.value_label)}</text></svg>'
    )
    return "".join(out)


def _svg_legend(view: _View) -> str:
    scale, spec = view.scale, view.spec
    t = np.linspace(0.0, 1.0, 17)
    colors = scale.hex(scale.vmin + t * (scale.vmax - scale.vmin))
    stops = "".join(f'<stop offset="{x:.4g}" stop-color="{c}"/>' for x, c in zip(t, colors))
    ticks = [(8.0, "start", scale.vmin), (248.0, "end", scale.vmax)]
    if spec.centered:
        ticks.append((128.0, "middle", 0.0))
    out = [
        '<svg class="hm-legend" width="560" height="40" viewBox="0 0 560 40" font-size="11" role="img" '
        f'aria-label="colour scale of {_e(spec.value_label)}">'
        f'<defs><linearGradient id="hm-grad" x1="0" x2="1" y1="0" y2="0">{stops}</linearGradient></defs>'
        '<rect x="8" y="4" width="240" height="14" fill="url(#hm-grad)" stroke="#888" stroke-width="0.5"/>'
    ]
    out += [f'<text x="{x:g}" y="32" text-anchor="{a}">{value:.3g}</text>' for x, a, value in ticks]
    out.append(f'<text x="260" y="15">{_e(spec.value_label)}</text>')
    if np.isnan(spec.values).any():
        x = 260 + 7 * len(spec.value_label) + 20
        out.append(
            f'<rect x="{x}" y="4" width="14" height="14" fill="{NAN_COLOR}" stroke="#888" stroke-width="0.5"/>'
            f'<text x="{x + 20}" y="15">NaN</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _top_table(view: _View) -> str:
    """The cells with the largest |value| (of the full values, not a reduction), labelled."""
    spec = view.spec
    flat = spec.values.ravel()
    keep = np.flatnonzero(~np.isnan(flat))
    order = keep[np.argsort(-np.abs(flat[keep]), kind="stable")][:TOP_CELLS]
    if not len(order):
        return '<p class="meta">Every cell is NaN; there is nothing to rank.</p>'
    colors = view.scale.hex(flat[order])
    head = (
        "<tr><th>#</th>"
        + "".join(f"<th>{_e(n)}</th>" for n in spec.names)
        + f"<th>{_e(spec.value_label)}</th></tr>"
    )
    rows = []
    for rank, (f, c) in enumerate(zip(order.tolist(), colors), 1):
        index = np.unravel_index(f, spec.values.shape)
        labels = "".join(f'<td class="lab">{_e(spec.labels[d][int(i)])}</td>' for d, i in enumerate(index))
        rows.append(
            f'<tr><td class="num">{rank}</td>{labels}<td class="num"><span class="sw" style="background:{c}">'
            f"</span>{_e(spec.fmt(float(flat[f])))}</td></tr>"
        )
    caption = f"The {len(order)} cells with the largest |value|, of {flat.size}"
    caption += " (NaN cells left out)" if len(keep) < flat.size else ""
    return f'<table class="hm-table"><caption>{caption}</caption>{head}{"".join(rows)}</table>'


def _page(view: _View, figure: str) -> str:
    spec, scale = view.spec, view.scale
    shape = " × ".join(f"{size} {name}" for size, name in zip(spec.values.shape, spec.names))
    if spec.centered:
        colour = f"diverging colour scale centred on 0, limits ±{scale.vmax:.3g}"
    else:
        colour = f"sequential colour scale from {scale.vmin:.3g} to {scale.vmax:.3g}"
    nan = "; grey = NaN" if np.isnan(spec.values).any() else ""
    title = view.title or "heat map"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>\n{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{_e(title)}</h1>\n"
        f'<p class="meta">{_e(shape)} · {_e(spec.value_label)} · {_e(colour)}{nan} · '
        "hover a cell for its labels and exact value</p>\n"
        '<input class="hm-toggle" type="radio" name="hm-view" id="hm-view-map" checked>'
        '<label for="hm-view-map">Heat map</label>'
        '<input class="hm-toggle" type="radio" name="hm-view" id="hm-view-top">'
        f'<label for="hm-view-top">Top {TOP_CELLS} cells by |value|</label>\n'
        f'<section class="hm-view hm-map">\n{_svg_legend(view)}\n<div class="hm-panels">{figure}</div>\n</section>\n'
        f'<section class="hm-view hm-top">\n{_top_table(view)}\n</section>\n'
        '</main>\n<div id="hm-tip" class="hm-tip" hidden></div>\n'
        f'<script type="application/json" id="hm-data">{_script_json(_data(view))}</script>\n'
        f"<script>\n{_JS}</script>\n</body>\n</html>\n"
    )


_CSS = """\
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:0;background:#fff}
main{padding:18px 24px}
h1{font-size:18px;margin:0 0 4px}
.meta{color:#555;margin:0 0 12px}
.hm-toggle{position:absolute;opacity:0;pointer-events:none}
.hm-toggle+label{display:inline-block;padding:4px 12px;border:1px solid #1f5fa8;color:#1f5fa8;cursor:pointer;user-select:none}
#hm-view-map+label{border-radius:4px 0 0 4px}
#hm-view-top+label{border-radius:0 4px 4px 0;margin-left:-1px}
.hm-toggle:checked+label{background:#1f5fa8;color:#fff}
.hm-toggle:focus-visible+label{outline:2px solid #f0a020;outline-offset:2px}
.hm-view{display:none;margin-top:12px}
#hm-view-map:checked~.hm-map,#hm-view-top:checked~.hm-top{display:block}
.hm-panels{display:flex;flex-wrap:wrap;gap:6px 18px;align-items:flex-start;overflow-x:auto;padding-bottom:8px}
.hm-panels svg,.hm-legend{flex:none;display:block}
svg text{fill:#222}
svg .hm-axis{font-weight:600}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
caption{text-align:left;color:#555;padding-bottom:6px}
th,td{border-bottom:1px solid #ddd;padding:3px 10px;text-align:left}
td.num{text-align:right;font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
td.lab{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;white-space:pre}
.sw{display:inline-block;width:12px;height:12px;border:1px solid #999;vertical-align:-2px;margin-right:6px}
.hm-tip{position:absolute;z-index:10;pointer-events:none;white-space:pre;background:rgba(20,20,20,.92);color:#fff;
  font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace;padding:6px 8px;border-radius:4px}
"""

_JS = """\
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("hm-data").textContent);
  var tip = document.getElementById("hm-tip");
  var ax = data.axes, shape = data.shape;
  function show(v) { return typeof v === "number" ? String(v) : v; }
  function name(a, i) { return ax[a].name + " " + ax[a].labels[i]; }
  function gridText(svg, p) {
    var d = svg.dataset;
    var i = Math.floor((p.y - d.y0) / d.ch), j = Math.floor((p.x - d.x0) / d.cw);
    if (i < 0 || j < 0 || i >= +d.rows || j >= +d.cols) return null;
    var lines = [name(0, i), name(1, j)], v, c = i * shape[1] + j;
    if (data.reduced) {
      v = data.reduced.values[c];
      var a = data.reduced.argmax[c];
      if (a >= 0) lines.push("max |value| over " + ax[2].name + " at " + name(2, a));
    } else if (shape.length === 3) {
      v = data.values[c * shape[2] + +d.panel];
      lines.push(name(2, +d.panel));
    } else {
      v = data.values[c];
    }
    lines.push(data.value_label + " = " + show(v));
    return lines.join("\\n");
  }
  function barText(svg, p) {
    var d = svg.dataset;
    var i = Math.floor(((d.orient === "h" ? p.y : p.x) - d.start) / d.step);
    if (i < 0 || i >= shape[0]) return null;
    return name(0, i) + "\\n" + data.value_label + " = " + show(data.values[i]);
  }
  document.querySelectorAll("svg.hm-grid, svg.hm-bars").forEach(function (svg) {
    svg.querySelectorAll("title").forEach(function (t) { t.remove(); });  // this tooltip replaces them
    var text = svg.classList.contains("hm-bars") ? barText : gridText;
    svg.addEventListener("mousemove", function (evt) {
      var m = svg.getScreenCTM();
      var s = m && text(svg, new DOMPoint(evt.clientX, evt.clientY).matrixTransform(m.inverse()));
      if (!s) { tip.hidden = true; return; }
      tip.textContent = s;
      tip.hidden = false;
      var x = evt.pageX + 14;
      if (evt.clientX + 14 + tip.offsetWidth > document.documentElement.clientWidth) {
        x = evt.pageX - tip.offsetWidth - 10;
      }
      tip.style.left = Math.max(0, x) + "px";
      tip.style.top = evt.pageY + 14 + "px";
    });
    svg.addEventListener("mouseleave", function () { tip.hidden = true; });
  });
})();
"""
