"""Heat maps as PNG (matplotlib, no pyplot state); the layout is described in ``heatmap.py``."""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import atomic_write_bytes
from .heatmap_spec import (
    BAR_LABEL_LIMIT,
    DPI,
    MAX_FIG_INCHES,
    _check,
    _clamp,
    _short,
    _signed_absmax,
    _tick_positions,
    _View,
    _view,
)

# ------------------------------------------------------------------------------ PNG


def heatmap_png(spec: dict[str, Any], path: str | Path) -> Path:
    """Draw ``spec`` as a PNG heat map (bar chart for 1-D, panels for 3-D); return its path."""
    view = _view(_check(spec))
    fig = _bars_figure(view) if view.spec.values.ndim == 1 else _grid_figure(view)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return atomic_write_bytes(path, buf.getvalue())


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
