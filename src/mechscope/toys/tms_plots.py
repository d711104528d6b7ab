"""Plots of Toy Models of Superposition, as in Elhage et al. (2022), plus an ``index.html`` that shows them.

1. ``wtw.png``: per instance, the ``W^T W`` matrix ``[feature, feature]`` and the bias ``b`` beside it.
2. ``features_2d.png``: per instance with ``m = 2``, each feature's column ``W_i`` drawn from the origin,
   coloured by its importance.
3. ``dimensionality.png``: every feature's dimensionality ``D_i`` against ``1 / (1 - S) = 1 / p`` (log x axis),
   with the dimensions per feature ``D*`` of each instance as a line.

Figures are drawn with matplotlib's Agg canvas (no pyplot state) and written atomically.
"""

from __future__ import annotations

import html
import io
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .._fs import atomic_write_bytes, atomic_write_json, atomic_write_text
from .superposition import (
    TMSConfig,
    TMSResult,
    dimensions_per_feature,
    feature_dimensionality,
    feature_norms,
    interference,
    save_tms,
    train_superposition,
)

__all__ = ["analyze_superposition", "plot_dimensionality", "plot_features_2d", "plot_wtw"]

_DPI = 110


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return atomic_write_bytes(path, buf.getvalue())


def _label(p: float) -> str:
    return f"p = {p:.3g}  (S = {1 - p:.3g})"


def plot_wtw(result: TMSResult, path: str | Path) -> Path:
    """``W^T W`` (red positive, blue negative) and ``b`` of every instance, one column per instance."""
    W, b = result.W.float(), result.b.float()  # [instance, hidden, feature], [instance, feature]
    wtw = torch.einsum("amk,amj->akj", W, W)  # [instance, feature, feature]
    n_inst, n = W.shape[0], W.shape[-1]
    fig = _figure(max(3.0, 1.8 * n_inst), 3.2)
    axes = fig.subplots(2, n_inst, squeeze=False, gridspec_kw={"height_ratios": [n, 1.2]})
    lim = max(float(wtw.abs().max()), float(b.abs().max()), 1e-6)
    im = None
    for k in range(n_inst):
        p = float(result.probability[k])
        ax = axes[0][k]
        im = ax.imshow(wtw[k].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(_label(p), fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        axb = axes[1][k]
        axb.imshow(b[k][None].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        axb.set_xticks([])
        axb.set_yticks([0], ["b"] if k == 0 else [""])
    if im is not None:
        fig.colorbar(im, ax=axes[:, -1].tolist(), shrink=0.7)
    fig.suptitle("W^T W (top) and bias b (bottom) per instance", fontsize=9)
    return _save(fig, Path(path))


def plot_features_2d(result: TMSResult, path: str | Path) -> Path | None:
    """Each feature's 2-D vector ``W_i`` per instance, coloured by importance; ``None`` unless ``m = 2``."""
    if result.config.n_hidden != 2:
        return None
    from matplotlib import colormaps

    W = result.W.float()  # [instance, 2, feature]
    imp = result.importance
    colors = colormaps["viridis"]((imp - imp.min()).div(max(float(imp.max() - imp.min()), 1e-12)).numpy())
    n_inst = W.shape[0]
    fig = _figure(max(3.0, 2.0 * n_inst), 2.6)
    axes = fig.subplots(1, n_inst, squeeze=False)[0]
    lim = max(float(W.abs().max()), 1e-6) * 1.15
    for k, ax in enumerate(axes):
        for i in range(W.shape[-1]):
            x, y = float(W[k, 0, i]), float(W[k, 1, i])
            ax.plot([0, x], [0, y], color=colors[i], lw=1.5)
            ax.scatter([x], [y], color=colors[i], s=12, zorder=3)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(_label(float(result.probability[k])), fontsize=7)
    fig.suptitle("Feature vectors W_i in the 2-D hidden space (yellow: most important)", fontsize=9)
    return _save(fig, Path(path))


def plot_dimensionality(result: TMSResult, path: str | Path) -> Path:
    """Per-feature dimensionality ``D_i`` (dots) and ``D*`` (line) against ``1 / (1 - S)``, log x axis."""
    D = feature_dimensionality(result.W)  # [instance, feature]
    d_star = dimensions_per_feature(result.W)  # [instance]
    x = 1.0 / result.probability  # [instance]; 1 / (1 - S) = 1 / p
    order = torch.argsort(x)
    fig = _figure(5.5, 3.4)
    ax = fig.subplots()
    xs = x[:, None].expand_as(D)
    ax.scatter(xs.flatten().numpy(), D.flatten().numpy(), s=10, alpha=0.6, color="tab:blue", label="D_i")
    ax.plot(x[order].numpy(), d_star[order].numpy(), color="black", lw=1.2, label="D* = m / ||W||_F^2")
    ax.set_xscale("log")
    ax.set_xlabel("1 / (1 - S)  =  1 / feature probability")
    ax.set_ylabel("dimensions per feature")
    ax.set_ylim(-0.05, 1.1)
    ax.legend(fontsize=7)
    ax.set_title(
        f"Feature dimensionality, n = {result.config.n_features}, m = {result.config.n_hidden}", fontsize=9
    )
    return _save(fig, Path(path))


def _metrics(result: TMSResult) -> list[dict[str, Any]]:
    """One JSON-ready row per instance with its numbers."""
    norms, inter = feature_norms(result.W), interference(result.W)
    dims, d_star = feature_dimensionality(result.W), dimensions_per_feature(result.W)
    return [
        {
            "instance": k,
            "feature_probability": float(result.probability[k]),
            "sparsity": 1.0 - float(result.probability[k]),
            "loss": float(result.loss[k]),
            "feature_norms": norms[k].tolist(),
            "interference": inter[k].tolist(),
            "feature_dimensionality": dims[k].tolist(),
            "dimensions_per_feature": float(d_star[k]),
        }
        for k in range(result.W.shape[0])
    ]


def _index_html(rows: list[dict[str, Any]], images: list[str], config: TMSConfig, seconds: float) -> str:
    esc = html.escape
    fmt = lambda v: " ".join(f"{x:.2f}" for x in v)  # noqa: E731
    body = "".join(
        f"<tr><td>{r['feature_probability']:.3g}</td><td>{r['sparsity']:.3g}</td><td>{r['loss']:.4g}</td>"
        f"<td>{r['dimensions_per_feature']:.3f}</td><td>{esc(fmt(r['feature_norms']))}</td>"
        f"<td>{esc(fmt(r['interference']))}</td><td>{esc(fmt(r['feature_dimensionality']))}</td></tr>"
        for r in rows
    )
    figs = "".join(f'<figure><img src="{esc(name)}" alt="{esc(name)}"></figure>' for name in images)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Toy Models of Superposition</title>"
        "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%}td,th{padding:2px 8px;"
        "font-size:13px;text-align:left}table{border-collapse:collapse}tr:nth-child(even){background:#f4f4f4}"
        "</style></head><body><h1>Toy Models of Superposition</h1>"
        + f"<p>n = {config.n_features} features, m = {config.n_hidden} hidden dimensions, importance "
        + f"{config.importance_base}<sup>i</sup>, {config.steps} Adam steps (lr {config.lr}, {config.lr_schedule}); "
        + f"best of {config.n_seeds} seed(s) per feature probability p (sparsity S = 1 - p). "
        + (f"Trained in {seconds:.1f} s." if seconds > 0 else "")
        + "</p>"
        + "<table><tr><th>p</th><th>S</th><th>loss</th><th>D*</th><th>||W_i||</th><th>interference</th>"
        + f"<th>D_i</th></tr>{body}</table>{figs}<p>Numbers: <a href='metrics.json'>metrics.json</a>; "
        + "weights: <code>weights/cfg.json</code> + <code>weights/tms.safetensors</code>.</p></body></html>\n"
    )


def analyze_superposition(
    out: str | Path,
    result: TMSResult | None = None,
    config: TMSConfig | None = None,
    progress: bool = True,
) -> Path:
    """Write the plots, ``metrics.json``, the weights and ``index.html`` for a TMS run into ``out``.

    ``result`` is trained from ``config`` (default :class:`TMSConfig`) when not given; the lowest-loss
    seed of each feature probability is the one analysed. Returns the path of ``index.html``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    if result is None:
        t0 = time.perf_counter()
        result = train_superposition(config or TMSConfig(), progress=progress)
        seconds = time.perf_counter() - t0
    best = result.best()
    save_tms(result, out / "weights")
    images = [plot_wtw(best, out / "wtw.png").name]
    p2d = plot_features_2d(best, out / "features_2d.png")
    if p2d is not None:
        images.append(p2d.name)
    images.append(plot_dimensionality(best, out / "dimensionality.png").name)
    rows = _metrics(best)
    atomic_write_json(out / "metrics.json", {"config": asdict(result.config), "instances": rows})
    return atomic_write_text(out / "index.html", _index_html(rows, images, result.config, seconds))
