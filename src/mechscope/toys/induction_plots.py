"""Plots and an ``index.html`` for the induction toy (``analyze NAME --out DIR``).

1. ``scores.png``: previous-token and prefix-matching score per ``[layer, head]``, and the
   K-composition of each layer-0 head into each layer-1 head.
2. ``attention.png``: on one held-out sequence (a 24-token block twice), the attention pattern
   of the previous-token head and of the induction head.
3. ``loss.png``: the training curve, when the model directory has ``training.json``.

Figures are drawn with matplotlib's Agg canvas (no pyplot state) and written atomically.
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .._fs import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..models import HookedModel
from .induction import InductionRecipe, InductionReport, analyze_induction, eval_batch
from .train import plot_losses


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return atomic_write_bytes(path, buf.getvalue())


def plot_scores(report: InductionReport, path: Path) -> Path:
    """Heatmaps of the per-head scores and of the K-composition."""
    fig = Figure(figsize=(11, 3.2))
    panels = [
        (report.prev_token, "previous-token score", "head", "layer"),
        (report.prefix_matching, "prefix-matching score", "head", "layer"),
        (report.k_composition, "K-composition", "layer-1 head", "layer-0 head"),
    ]
    for i, (values, title, xlabel, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if i < 2 else None)
        for r, row in enumerate(values):
            for c, v in enumerate(row):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=8)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.set_xticks(range(len(values[0])))
        ax.set_yticks(range(len(values)))
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return _save(fig, path)


def plot_attention(model: HookedModel, report: InductionReport, recipe: InductionRecipe, path: Path) -> Path:
    """The previous-token head's and the induction head's pattern on one repeated sequence."""
    tokens = eval_batch(recipe, recipe.n_ctx // 2, batch=1)
    heads = [report.prev_token_head, report.induction_head]
    _, cache = model.run_with_cache(tokens, names=[f"blocks.{layer}.attn.hook_pattern" for layer, _ in heads])
    fig = Figure(figsize=(9, 4.2))
    for i, (layer, head) in enumerate(heads):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.imshow(
            cache[f"blocks.{layer}.attn.hook_pattern"][0, head].detach().numpy(),
            cmap="viridis",
            vmin=0,
            vmax=1,
        )
        kind = "previous-token" if i == 0 else "induction"
        ax.set(title=f"head {layer}.{head} ({kind})", xlabel="key position", ylabel="query position")
    fig.tight_layout()
    return _save(fig, path)


def write_induction_report(
    model: HookedModel, out: str | Path, recipe: InductionRecipe | None = None
) -> Path:
    """Write ``metrics.json``, the plots and ``index.html`` into ``out``; returns the html path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = recipe or InductionRecipe()
    report = analyze_induction(model, recipe)
    images = [
        plot_scores(report, out / "scores.png").name,
        plot_attention(model, report, recipe, out / "attention.png").name,
    ]
    training = Path(str(getattr(model.hf_model.config, "_name_or_path", ""))) / "training.json"
    if training.is_file():
        losses = json.loads(training.read_text())["losses"]
        images.append(plot_losses(losses, out / "loss.png", title="induction toy: training loss").name)
    atomic_write_json(out / "metrics.json", {"recipe": asdict(recipe), "report": asdict(report)})
    return atomic_write_text(out / "index.html", _index_html(report, images))


def _index_html(report: InductionReport, images: list[str]) -> str:
    esc = html.escape
    rows: list[tuple[str, Any]] = [
        ("previous-token head", f"{report.prev_token_head[0]}.{report.prev_token_head[1]}"),
        ("induction head", f"{report.induction_head[0]}.{report.induction_head[1]}"),
        ("loss on first-occurrence tokens", f"{report.loss_first:.3f}"),
        ("loss on repeated tokens", f"{report.loss_repeated:.3f}"),
        ("… with the induction head ablated", f"{report.loss_repeated_ablated:.3f}"),
    ]
    table = "".join(f"<tr><td>{esc(k)}</td><td>{esc(str(v))}</td></tr>" for k, v in rows)
    figs = "".join(f'<figure><img src="{esc(name)}" alt="{esc(name)}"></figure>' for name in images)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>induction toy</title></head><body>"
        f"<h1>Induction heads</h1><table>{table}</table>{figs}</body></html>\n"
    )
