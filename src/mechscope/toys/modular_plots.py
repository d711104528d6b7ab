"""Plots and an ``index.html`` for the modular-addition toy (``mechscope toy analyze modular_addition``).

1. ``training.png``: the grokking curves (train and test loss and accuracy);
2. ``spectrum.png``: the embedding's Fourier spectrum over training, sparsifying;
3. ``embedding.png``: the final spectrum with the key frequencies, and neurons by frequency;
4. ``neurons.png``: one neuron per key frequency, its activation over the (a, b) grid;
5. ``ablation.png``: restricted and excluded loss, and the loss without each frequency.
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from .._fs import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..models import HookedModel
from .modular import ModularRecipe
from .modular_analysis import ModularReport, analyze_modular, grid_activations


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return atomic_write_bytes(path, buf.getvalue())


def plot_training(history: list[dict[str, Any]], path: Path) -> Path:
    """The grokking curves: train and test loss (log) and accuracy against the step."""
    steps = [h["step"] for h in history]
    fig = Figure(figsize=(11, 3.5))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for split in ("train", "test"):
        loss_ax.plot(steps, [h[f"{split}_loss"] for h in history], label=split, lw=1.2)
        acc_ax.plot(steps, [h[f"{split}_acc"] for h in history], label=split, lw=1.2)
    loss_ax.set(xlabel="step", ylabel="loss", yscale="log", title="loss (full batch)")
    acc_ax.set(xlabel="step", ylabel="accuracy", ylim=(0, 1.02), title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_spectrum_training(history: list[dict[str, Any]], path: Path) -> Path:
    """The embedding's Fourier spectrum (fraction of squared norm per frequency) over training."""
    steps = [h["step"] for h in history]
    spectra = [h["embed_spectrum"][1:] for h in history]  # [eval, freq 1..]
    fig = Figure(figsize=(11, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(
        list(map(list, zip(*spectra))),
        aspect="auto",
        origin="lower",
        cmap="magma",
        extent=(steps[0], steps[-1], 0.5, len(spectra[0]) + 0.5),
        interpolation="nearest",
    )
    ax.set(xlabel="step", ylabel="frequency k", title="embedding: fraction of squared norm per frequency")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_embedding(report: ModularReport, path: Path) -> Path:
    """Embedding norm per frequency (key frequencies in red) and neurons per frequency cluster."""
    fig = Figure(figsize=(11, 3.6))
    spec_ax, clus_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    freqs = list(range(1, len(report.embed_spectrum)))
    colours = ["tab:red" if k in report.key_freqs else "tab:gray" for k in freqs]
    spec_ax.bar(freqs, report.embed_spectrum[1:], color=colours)
    spec_ax.set(
        xlabel="frequency k",
        ylabel="fraction of squared norm",
        title=f"embedding in the Fourier basis (top 6: {report.embed_top6_fraction:.1%})",
    )
    fracs = report.neuron_frac
    clus_ax.scatter(report.neuron_freq, fracs, s=8, alpha=0.5)
    clus_ax.axhline(report.threshold, color="tab:red", lw=0.8, ls="--")
    clus_ax.set(
        xlabel="dominant frequency",
        ylabel="variance explained",
        ylim=(0, 1.02),
        title=f"{len(fracs)} MLP neurons by frequency",
    )
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_neurons(neurons: Tensor, report: ModularReport, path: Path) -> Path:
    """Activation over the (a, b) grid of the strongest neuron of up to 4 key-frequency clusters."""
    p = report.p
    freq, frac = torch.tensor(report.neuron_freq), torch.tensor(report.neuron_frac)
    picks = []
    for k in report.key_freqs[:4]:
        score = torch.where(freq == k, frac * neurons.pow(2).mean(0).sqrt(), -1.0)
        picks.append((k, int(score.argmax())))
    fig = Figure(figsize=(3.2 * max(len(picks), 1), 3.4))
    for i, (k, n) in enumerate(picks):
        ax = fig.add_subplot(1, len(picks), i + 1)
        ax.imshow(neurons[:, n].view(p, p).numpy(), cmap="viridis", origin="lower")
        ax.set(title=f"neuron {n} (k={k}, {frac[n]:.0%})", xlabel="b", ylabel="a")
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_ablation(report: ModularReport, path: Path) -> Path:
    """Loss and accuracy of the full, restricted and excluded logits; loss without each frequency."""
    fig = Figure(figsize=(11, 3.6))
    bar_ax, freq_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 3]})
    names = ["full", "restricted\n(key only)", "excluded\n(key removed)"]
    rows = [report.full, report.restricted, report.excluded]
    bars = bar_ax.bar(
        names, [max(loss, 1e-8) for loss, _ in rows], color=["tab:blue", "tab:green", "tab:red"]
    )
    for bar, (_, acc) in zip(bars, rows):
        bar_ax.text(
            bar.get_x() + bar.get_width() / 2, bar.get_height(), f"acc {acc:.1%}", ha="center", va="bottom"
        )
    bar_ax.set(
        yscale="log", ylabel="loss (all pairs)", title="logits restricted to / without key frequencies"
    )
    freqs = list(range(1, len(report.excluded_per_freq) + 1))
    freq_ax.plot(freqs, report.excluded_per_freq, marker=".", lw=0.8)
    for k in report.key_freqs:
        freq_ax.axvline(k, color="tab:red", lw=0.6, alpha=0.5)
    freq_ax.set(
        xlabel="frequency k removed",
        ylabel="loss (all pairs)",
        yscale="log",
        title="excluded loss, one frequency at a time",
    )
    fig.tight_layout()
    return _save(fig, Path(path))


def write_modular_report(model: HookedModel, out: str | Path, recipe: ModularRecipe | None = None) -> Path:
    """Write ``metrics.json``, the plots and ``index.html`` into ``out``; returns the html path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = recipe or ModularRecipe()
    report = analyze_modular(model, recipe)
    _, neurons = grid_activations(model, recipe.p)
    images = [
        plot_embedding(report, out / "embedding.png").name,
        plot_neurons(neurons, report, out / "neurons.png").name,
        plot_ablation(report, out / "ablation.png").name,
    ]
    training = Path(str(getattr(model.hf_model.config, "_name_or_path", ""))) / "training.json"
    if training.is_file():
        history = json.loads(training.read_text())["history"]
        images.insert(0, plot_training(history, out / "training.png").name)
        images.insert(1, plot_spectrum_training(history, out / "spectrum.png").name)
    recipe_json = {**asdict(recipe), "betas": list(recipe.betas)}
    atomic_write_json(out / "metrics.json", {"recipe": recipe_json, "report": asdict(report)})
    return atomic_write_text(out / "index.html", _index_html(report, images))


def _index_html(report: ModularReport, images: list[str]) -> str:
    esc = html.escape
    rows: list[tuple[str, str]] = [
        ("modulus p", str(report.p)),
        ("train / test accuracy", f"{report.train_acc:.2%} / {report.test_acc:.4%}"),
        ("test loss", f"{report.test_loss:.3g}"),
        ("embedding: top 6 frequencies", ", ".join(map(str, report.embed_top_freqs))),
        ("… fraction of its squared norm", f"{report.embed_top6_fraction:.1%}"),
        (
            "key frequencies (neuron clusters)",
            ", ".join(f"{k} ({n} neurons)" for k, n in report.cluster_sizes.items()),
        ),
        ("logit variance explained by cos(w(a+b-c))", f"{report.logit_fve:.1%}"),
        ("full: loss / accuracy", f"{report.full[0]:.3g} / {report.full[1]:.2%}"),
        ("restricted to key frequencies", f"{report.restricted[0]:.3g} / {report.restricted[1]:.2%}"),
        ("key frequencies excluded", f"{report.excluded[0]:.3g} / {report.excluded[1]:.2%}"),
    ]
    table = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    figs = "".join(f'<figure><img src="{esc(name)}" alt="{esc(name)}"></figure>' for name in images)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>modular addition toy</title></head><body>"
        f"<h1>Modular addition (grokking)</h1><table>{table}</table>{figs}</body></html>\n"
    )
