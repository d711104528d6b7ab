"""Heat maps of a localisation result: a PNG (matplotlib) and one self-contained HTML page.

Both functions take the same ``spec`` dict (what ``PatchResult._plot_spec`` builds):

- ``values``: float array with 1, 2 or 3 dimensions;
- ``axes``: one ``(name, labels)`` pair per dimension, ``len(labels) == values.shape[d]``;
- ``title`` and ``value_label``: text (``value_label`` names the colour bar);
- ``centered``: a diverging colour map centred on 0 with limits ±max|v|; else a
  sequential one from min to max.

The PNG and the page share one layout and one colour scale:

1. The spec is checked (:class:`ArtifactError` on a bad one) and turned into panels.
   1-D → a bar chart (horizontal, one labelled bar per entry, up to 80 entries; vertical
   lines beyond). 2-D → one grid, rows = axis 0 with index 0 at the TOP, columns = axis 1.
   3-D → one grid per index of the last axis (e.g. one per head), sharing the colour
   scale; when that axis has more than 16 entries, a single grid holding, per cell, the
   signed value with the largest |value| over it (the title says so, and the page's
   tooltip names the index where it sits).
2. Colours: ``RdBu_r`` (centred, red = positive) or ``viridis``. NaN cells are grey;
   ±inf take the colour of the nearer end.
3. The PNG is drawn at 120 dpi, sized by the axes and capped at 22 × 16 inches; tick labels
   are thinned to what fits. A grid with more cells along an axis than it has pixels is
   pooled in blocks by max |value| (signed), which the title says, so no peak is dropped.
4. The page draws the same colours as inline SVG: one ``<rect>`` per cell with a
   ``<title>`` tooltip (works without JavaScript), or one embedded PNG image once a map has
   more than 6,000 cells. It adds a colour legend, a CSS-only toggle to a "top 20 cells by
   |value|" table, the data as JSON, and a small script for a richer tooltip. It loads
   nothing from outside the file.

Every file is written atomically (``mechscope._fs``). Nothing here imports torch.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import atomic_write_bytes, atomic_write_text
from ..errors import ArtifactError

__all__ = ["heatmap_html", "heatmap_png"]

MAX_PANELS = 16
"""3-D values with a longer last axis are reduced by max |value| over it instead of paneled."""
TOP_CELLS = 20
"""Rows of the page's "top cells" table."""
BAR_LABEL_LIMIT = 80
"""1-D values up to this length are horizontal bars with every label; longer ones vertical lines."""
DPI = 120
MAX_FIG_INCHES = (22.0, 16.0)
"""Largest PNG, in inches (width, height): 2640 × 1920 pixels at :data:`DPI`."""
SVG_RECT_LIMIT = 6000
"""Past this many cells the page draws a map as one embedded image instead of one rect per cell."""
NAN_COLOR = "#c8c8c8"

_CMAPS = {True: "RdBu_r", False: "viridis"}
_PNG_LABEL_CHARS = 28  # longer tick labels are shortened with "…" in the PNG


# ----------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class _Spec:
    """A checked spec."""

    values: np.ndarray  # [*axes] float64
    names: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]
    title: str
    value_label: str
    centered: bool
    scalar: type  # numpy float type of the input, so values print at their own precision

    def fmt(self, v: float) -> str:
        """Shortest text that gives back the value at the input's precision; NaN as ``NaN``."""
        return "NaN" if math.isnan(v) else str(self.scalar(v))


def _check(spec: Any) -> _Spec:
    """Validate ``spec`` and normalise it; raise :class:`ArtifactError` naming what is wrong."""
    if not isinstance(spec, Mapping):
        raise ArtifactError(f"a heat map spec must be a dict, got {type(spec).__name__}")
    missing = [k for k in ("values", "axes") if k not in spec]
    if missing:
        raise ArtifactError(
            f"heat map spec lacks {missing}; it needs 'values' and 'axes' "
            "(and takes 'title', 'value_label', 'centered')"
        )
    try:
        raw = np.asarray(spec["values"])
        values = raw.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"heat map values must be numeric: {e}") from e
    if values.ndim not in (1, 2, 3):
        raise ArtifactError(
            f"heat map values must have 1, 2 or 3 dimensions, got {values.ndim} (shape {values.shape})"
        )
    if values.size == 0:
        raise ArtifactError(f"heat map values are empty (shape {values.shape}); there is nothing to draw")
    axes = spec["axes"]
    if isinstance(axes, (str, bytes)) or not isinstance(axes, Sequence) or len(axes) != values.ndim:
        n = len(axes) if isinstance(axes, Sequence) else type(axes).__name__
        raise ArtifactError(
            f"heat map needs one (name, labels) pair per dimension: values have shape {values.shape}, "
            f"axes has {n}"
        )
    names: list[str] = []
    labels: list[tuple[str, ...]] = []
    for d, axis in enumerate(axes):
        try:
            name, axis_labels = axis
        except (TypeError, ValueError):
            raise ArtifactError(
                f"heat map axis {d} must be a (name, labels) pair, got {axis!r:.80}"
            ) from None
        if isinstance(axis_labels, (str, bytes)) or not hasattr(axis_labels, "__len__"):
            raise ArtifactError(f"heat map axis {d} ({name!r}) labels must be a list of strings")
        if len(axis_labels) != values.shape[d]:
            raise ArtifactError(
                f"heat map axis {d} ({name!r}) has {len(axis_labels)} labels but the values have "
                f"{values.shape[d]} entries along it (shape {values.shape})"
            )
        names.append(str(name))
        labels.append(tuple(str(x) for x in axis_labels))
    scalar = raw.dtype.type if raw.dtype in (np.float16, np.float32, np.float64) else np.float64
    return _Spec(
        values=values,
        names=tuple(names),
        labels=tuple(labels),
        title=str(spec.get("title", "")),
        value_label=str(spec.get("value_label", "value")),
        centered=bool(spec.get("centered", True)),
        scalar=scalar,
    )


# ---------------------------------------------------------------------- colour, view


@dataclass(frozen=True)
class _Scale:
    """The colour scale shared by every panel, the legend and the page."""

    vmin: float
    vmax: float
    cmap_name: str

    def cmap(self) -> Any:
        import matplotlib

        return matplotlib.colormaps[self.cmap_name].with_extremes(bad=NAN_COLOR)

    def clip(self, values: np.ndarray) -> np.ndarray:
        """Values clipped to the limits (±inf to the ends), NaN masked, ready for ``imshow``."""
        return np.ma.masked_invalid(np.clip(values, self.vmin, self.vmax))

    def rgba(self, values: np.ndarray) -> np.ndarray:
        """``[..., 4]`` RGBA floats in 0..1; NaN grey."""
        t = (self.clip(values) - self.vmin) / (self.vmax - self.vmin)
        return np.asarray(self.cmap()(t))

    def hex(self, values: np.ndarray) -> list[str]:
        """``#rrggbb`` per value, flattened."""
        rgb = np.rint(self.rgba(np.asarray(values, dtype=np.float64)).reshape(-1, 4)[:, :3] * 255)
        return ["#{:02x}{:02x}{:02x}".format(*map(int, c)) for c in rgb]


def _scale(values: np.ndarray, centered: bool) -> _Scale:
    finite = values[np.isfinite(values)]
    if centered:
        m = float(np.abs(finite).max()) if finite.size else 0.0
        m = m if m > 0 else 1.0
        return _Scale(-m, m, _CMAPS[True])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        pad = max(abs(lo) * 0.05, 0.5)
        lo, hi = lo - pad, hi + pad
    return _Scale(lo, hi, _CMAPS[False])


def _signed_absmax(a: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The entry with the largest |value| along ``axis`` (sign kept) and its index; NaN if all NaN."""
    mag = np.where(np.isnan(a), -1.0, np.abs(a))
    idx = mag.argmax(axis=axis)
    out = np.take_along_axis(a, np.expand_dims(idx, axis), axis).squeeze(axis)
    return out, idx


@dataclass(frozen=True)
class _Panel:
    title: str  # "" for a lone grid, else e.g. "head 3"
    values: np.ndarray  # [row col], or [n] for bars


@dataclass(frozen=True)
class _View:
    """What is drawn: panels, the title with any reduction note, the shared scale."""

    spec: _Spec
    title: str
    panels: list[_Panel]
    argmax: np.ndarray | None  # [row col] last-axis index of the kept value, when reduced
    scale: _Scale


def _view(spec: _Spec) -> _View:
    v = spec.values
    argmax = None
    if v.ndim < 3:
        panels = [_Panel("", v)]
        title = spec.title
    elif v.shape[2] <= MAX_PANELS:
        panels = [_Panel(f"{spec.names[2]} {label}", v[:, :, k]) for k, label in enumerate(spec.labels[2])]
        title = spec.title
    else:
        reduced, argmax = _signed_absmax(v, 2)
        argmax = np.where(np.isnan(reduced), -1, argmax)
        panels = [_Panel("", reduced)]
        note = f"max |value| over {spec.names[2]} ({v.shape[2]}), sign kept"
        title = f"{spec.title} [{note}]" if spec.title else note
    scale = _scale(np.concatenate([p.values.ravel() for p in panels]), spec.centered)
    return _View(spec, title, panels, argmax, scale)


# ------------------------------------------------------------------------------ PNG


def heatmap_png(spec: dict[str, Any], path: str | Path) -> Path:
    """Draw ``spec`` as a PNG heat map (bar chart for 1-D, panels for 3-D); return its path."""
    view = _view(_check(spec))
    fig = _bars_figure(view) if view.spec.values.ndim == 1 else _grid_figure(view)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return atomic_write_bytes(path, buf.getvalue())


def _clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def _short(label: str, n: int = _PNG_LABEL_CHARS) -> str:
    """A label made printable on one line and cut to ``n`` characters."""
    label = label.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return label if len(label) <= n else label[: n - 1] + "…"


def _nice_step(step: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least ``step``."""
    nice = 1
    while nice < step:
        nice = nice * 5 // 2 if str(nice)[0] == "2" else nice * 2  # 1 → 2 → 5 → 10 → 20 ...
    return nice


def _tick_positions(n: int, room: int) -> list[int]:
    """Indices to label along an axis of ``n`` entries with room for ``room`` labels."""
    step = 1 if n <= max(room, 1) else _nice_step(math.ceil(n / max(room, 1)))
    return list(range(0, n, step))


def _pool(a: np.ndarray, labels: tuple[str, ...], axis: int, k: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Blocks of ``k`` entries along ``axis`` pooled to their signed max-|value| entry."""
    n = a.shape[axis]
    blocks = math.ceil(n / k)
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, blocks * k - n)
    padded = np.pad(a, pad, constant_values=np.nan)
    shape = list(a.shape)
    shape[axis : axis + 1] = [blocks, k]
    pooled, _ = _signed_absmax(padded.reshape(shape), axis + 1)
    ends = [(b * k, min(n, (b + 1) * k) - 1) for b in range(blocks)]
    return pooled, tuple(labels[s] if s == e else f"{labels[s]}–{labels[e]}" for s, e in ends)


def _grid_shape(n: int, pw: float, ph: float) -> int:
    """Panel columns for ``n`` panels of ``pw`` × ``ph`` inches: the layout closest to 16:10."""
    best, best_cost = 1, math.inf
    for cols in range(1, n + 1):
        rows = math.ceil(n / cols)
        cost = abs(math.log((cols * pw) / (rows * ph) / 1.6)) + 0.05 * (rows * cols - n)
        if cost < best_cost:
            best, best_cost = cols, cost
    return best


def _grid_figure(view: _View) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    spec, scale = view.spec, view.scale
    row_labels, col_labels = spec.labels[0], spec.labels[1]
    nr, nc = len(row_labels), len(col_labels)
    n = len(view.panels)
    lone = n == 1
    fs = 8.0 if lone else 7.0
    rlen = max(len(_short(x)) for x in row_labels)
    clen = max(len(_short(x)) for x in col_labels)
    rotate = clen > 3
    char_in = fs * 0.6 / 72  # rough width of one character
    left = 0.35 + rlen * char_in + 0.3
    bottom = 0.35 + (clen * char_in * 0.8 if rotate else fs / 72) + 0.3
    right, top = 1.3, 0.75 + (0.0 if lone else 0.3)
    if lone:
        pw, ph = _clamp(0.3 * nc, 3.0, 19.0), _clamp(0.27 * nr, 2.0, 12.0)
    else:
        pw, ph = _clamp(0.16 * nc, 1.8, 4.0), _clamp(0.16 * nr, 1.3, 3.0)
    gc = _grid_shape(n, pw, ph)
    gr = math.ceil(n / gc)
    width = _clamp(left + gc * pw + right, 6.0, MAX_FIG_INCHES[0])
    height = _clamp(top + gr * (ph + (0.3 if not lone else 0.0)) + bottom, 3.5, MAX_FIG_INCHES[1])
    pw = (width - left - right) / gc  # the room each panel really gets
    ph = (height - top - bottom) / gr - (0.0 if lone else 0.3)

    # pool axes with more entries than pixels, so no single cell vanishes
    panels = [p.values for p in view.panels]
    title = view.title
    for axis, room_px in ((1, pw * DPI * 0.9), (0, ph * DPI * 0.9)):
        size = panels[0].shape[axis]
        if size > room_px:
            k = math.ceil(size / room_px)
            pooled = [_pool(p, spec.labels[axis], axis, k) for p in panels]
            panels = [p for p, _ in pooled]
            if axis == 1:
                col_labels = pooled[0][1]
            else:
                row_labels = pooled[0][1]
            title += f" [{spec.names[axis]} pooled in blocks of {k} by max |value|]"

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axs = fig.subplots(gr, gc, squeeze=False)
    cmap, norm = scale.cmap(), Normalize(scale.vmin, scale.vmax)
    x_room = int(pw / (fs * 1.9 / 72)) if rotate else int(pw / ((clen + 2) * char_in))
    y_room = int(ph / (fs * 1.7 / 72))
    xt, yt = _tick_positions(len(col_labels), x_room), _tick_positions(len(row_labels), y_room)
    used = []
    image = None
    for idx, ax in enumerate(axs.ravel()):
        if idx >= n:
            ax.set_axis_off()
            continue
        r, c = divmod(idx, gc)
        used.append(ax)
        image = ax.imshow(
            scale.clip(panels[idx]), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest"
        )
        if view.panels[idx].title:
            ax.set_title(_short(view.panels[idx].title), fontsize=fs + 1, parse_math=False)
        ax.set_xticks(xt)
        ax.set_yticks(yt)
        ax.tick_params(length=2, labelsize=fs)
        if r == gr - 1 or idx + gc >= n:  # bottom of its column
            ax.set_xticklabels(
                [_short(col_labels[i]) for i in xt],
                rotation=55 if rotate else 0,
                ha="right" if rotate else "center",
                rotation_mode="anchor",
                parse_math=False,
            )
        else:
            ax.set_xticklabels([])
        if c == 0:
            ax.set_yticklabels([_short(row_labels[i]) for i in yt], parse_math=False)
        else:
            ax.set_yticklabels([])
    if lone:
        used[0].set_xlabel(spec.names[1], parse_math=False)
        used[0].set_ylabel(spec.names[0], parse_math=False)
    else:
        fig.supxlabel(spec.names[1], fontsize=9, parse_math=False)
        fig.supylabel(spec.names[0], fontsize=9, parse_math=False)
    assert image is not None  # there is at least one panel
    bar = fig.colorbar(image, ax=used, shrink=0.9 if lone else 0.6, fraction=0.04, pad=0.02, aspect=30)
    label = spec.value_label + ("  (grey = NaN)" if np.isnan(spec.values).any() else "")
    bar.set_label(label, parse_math=False)
    wrap = max(40, int(width * 72 / (12 * 0.55)))
    fig.suptitle(textwrap.fill(title, wrap), fontsize=12, parse_math=False)
    return fig


def _bars_figure(view: _View) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    spec, scale = view.spec, view.scale
    v = spec.values
    labels = spec.labels[0]
    n = len(v)
    colors = scale.rgba(v)
    nan = np.isnan(v)
    drawn = np.where(nan, 0.0, np.clip(v, -np.finfo(np.float64).max, np.finfo(np.float64).max))
    finite = v[np.isfinite(v)]
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    hi = max(0.0, float(finite.max())) if finite.size else 1.0
    if spec.centered:
        lo, hi = scale.vmin, scale.vmax
    pad = 0.05 * (hi - lo or 1.0)
    horizontal = n <= BAR_LABEL_LIMIT
    llen = max(len(_short(x)) for x in labels)
    if horizontal:
        width = _clamp(1.2 + llen * 0.07 + 6.0, 6.0, 12.0)
        height = _clamp(1.3 + 0.2 * n, 3.0, MAX_FIG_INCHES[1])
    else:
        width = _clamp(2.0 + 0.02 * n, 8.0, MAX_FIG_INCHES[0])
        height = 5.0
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = np.arange(n)
    if horizontal:
        ax.barh(x, drawn, color=colors, edgecolor="#555555", linewidth=0.3)
        ax.plot(np.zeros(int(nan.sum())), x[nan], "x", color="#777777", ms=5)
        ax.set_yticks(x)
        ax.set_yticklabels([_short(s) for s in labels], fontsize=8, parse_math=False)
        ax.set_ylim(n - 0.5, -0.5)  # first entry at the top
        ax.axvline(0, color="#333333", lw=0.8)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_xlabel(spec.value_label, parse_math=False)
        ax.set_ylabel(spec.names[0], parse_math=False)
        ax.grid(axis="x", alpha=0.3)
    else:
        plot_w = width - 1.5
        lw = _clamp(0.8 * plot_w * 72 / n, 0.6, 4.0)
        ax.vlines(x[~nan], 0, drawn[~nan], colors=colors[~nan], linewidth=lw)
        ax.plot(x[nan], np.zeros(int(nan.sum())), "x", color="#777777", ms=4)
        ticks = _tick_positions(n, int(plot_w / 0.18))
        ax.set_xticks(ticks)
        ax.set_xticklabels(
            [_short(labels[i]) for i in ticks],
            rotation=55 if llen > 3 else 0,
            ha="right" if llen > 3 else "center",
            rotation_mode="anchor",
            fontsize=8,
            parse_math=False,
        )
        ax.axhline(0, color="#333333", lw=0.8)
        ax.set_xlim(-1, n)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel(spec.names[0], parse_math=False)
        ax.set_ylabel(spec.value_label, parse_math=False)
        ax.grid(axis="y", alpha=0.3)
    title = view.title + ("  (× = NaN)" if nan.any() else "")
    fig.suptitle(textwrap.fill(title, max(40, int(width * 72 / (12 * 0.55)))), fontsize=12, parse_math=False)
    return fig


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
