"""What the grokked modular-addition toy computes, read off in the Fourier basis (Nanda et al. 2023).

The model embeds ``a`` and ``b`` as ``cos(w a), sin(w a)`` for a handful of *key frequencies*
``w = 2 pi k / p``, its MLP neurons compute products that give ``cos(w (a + b))`` and
``sin(w (a + b))``, and the unembedding turns those into logits ``~ cos(w (a + b - c))``,
which peak at ``c = (a + b) mod p``. Each measurement here checks one part of that story:

* :func:`embedding_spectrum` (in :mod:`fourier`): the embedding is sparse in frequency;
* :func:`neuron_clusters`: each neuron's activation over the ``(a, b)`` grid is explained by
  one frequency (its constant, ``a``, ``b`` and ``a x b`` terms); neurons cluster by it, and
  the frequencies with a cluster are the key frequencies;
* :func:`logit_fve`: how much of the logits' variance the ``cos(w (a + b - c))`` terms explain;
* restricted loss: keep, along the input grid, only the constant and the ``cos/sin(w (a + b))``
  components of the logits for the key frequencies; excluded loss: remove just those.
  If the story is right, the first keeps the accuracy and the second destroys it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models import HookedModel
from .fourier import embedding_spectrum, fourier_basis
from .modular import ModularRecipe, all_pairs, split


def grid_activations(model: HookedModel, p: int) -> tuple[Tensor, Tensor]:
    """Answer logits ``[p*p, p]`` and MLP neuron activations ``[p*p, d_mlp]`` at ``=`` for every pair."""
    tokens, _ = all_pairs(p)
    logits, cache = model.run_with_cache(tokens, names=["blocks.0.mlp.hook_post"], logits_to_keep=1)
    assert logits is not None
    return logits[:, -1, :p].detach(), cache["blocks.0.mlp.hook_post"][:, -1].detach()


def neuron_clusters(neurons: Tensor, p: int) -> tuple[Tensor, Tensor]:
    """Each neuron's dominant frequency ``[d_mlp]`` and the variance fraction it explains ``[d_mlp]``.

    A neuron's activation over the grid is expanded in the 2D Fourier basis; frequency ``k``
    explains the energy of the terms whose ``a`` and ``b`` parts each are the constant or
    frequency ``k`` (the grid mean excluded). Dead neurons get frequency 0 and fraction 0.
    """
    basis = fourier_basis(p)  # [term, x]
    grid = neurons.view(p, p, -1)  # [a, b, neuron]
    by_term_a = (basis @ grid.flatten(1)).view(p, p, -1)  # [term_a, b, neuron]
    coeffs = basis @ by_term_a  # [term_a, term_b, neuron]
    coeffs[0, 0] = 0.0
    energy = coeffs.pow(2)
    term_freq = torch.tensor([0] + [k for k in range(1, (p - 1) // 2 + 1) for _ in range(2)])
    n_freq = (p + 1) // 2
    by_a = torch.zeros(n_freq, p, energy.shape[-1]).index_add_(0, term_freq, energy)
    blocks = torch.zeros(n_freq, n_freq, energy.shape[-1]).index_add_(1, term_freq, by_a)  # [fa, fb, n]
    k = torch.arange(1, n_freq)
    explained = blocks[k, k] + blocks[k, 0] + blocks[0, k]  # [freq - 1, neuron]
    total = energy.sum(dim=(0, 1))
    frac, best = (explained / total.clamp_min(1e-30)).max(dim=0)
    dead = total <= 1e-12
    return torch.where(dead, 0, best + 1), torch.where(dead, 0.0, frac)


def key_frequencies(freq: Tensor, frac: Tensor, threshold: float = 0.85, min_neurons: int = 10) -> list[int]:
    """Frequencies that at least ``min_neurons`` neurons are ``threshold``-explained by, ascending."""
    counts = torch.bincount(freq[frac >= threshold], minlength=int(freq.max()) + 1)
    return [k for k in range(1, len(counts)) if counts[k] >= min_neurons]


def _sum_directions(p: int, freqs: list[int], constant: bool) -> Tensor:  # [n_dir, p*p], orthonormal
    """The grid directions ``cos(w (a + b))``, ``sin(w (a + b))`` of ``freqs`` (and the constant)."""
    _, answers = all_pairs(p)
    s = answers.double()
    rows = [torch.ones(p * p, dtype=torch.float64)] if constant else []
    for k in freqs:
        rows += [torch.cos(2 * math.pi * k * s / p), torch.sin(2 * math.pi * k * s / p)]
    if not rows:
        return torch.zeros(0, p * p)
    d = torch.stack(rows)
    return (d / d.norm(dim=1, keepdim=True)).float()


def restrict_logits(logits: Tensor, p: int, freqs: list[int]) -> Tensor:  # [p*p, p] -> [p*p, p]
    """Keep only the grid mean and the ``(a + b)``-components of ``freqs`` (for every answer class)."""
    d = _sum_directions(p, freqs, constant=True)
    return d.T @ (d @ logits)


def exclude_logits(logits: Tensor, p: int, freqs: list[int]) -> Tensor:  # [p*p, p] -> [p*p, p]
    """Remove the ``(a + b)``-components of ``freqs`` (for every answer class)."""
    d = _sum_directions(p, freqs, constant=False)
    return logits - d.T @ (d @ logits)


def logit_fve(logits: Tensor, p: int, freqs: list[int]) -> float:
    """Fraction of the logits' variance (centred over answers) explained by ``cos(w (a + b - c))``."""
    centred = logits - logits.mean(dim=1, keepdim=True)  # softmax ignores a per-input shift
    _, answers = all_pairs(p)
    diff = answers.double()[:, None] - torch.arange(p, dtype=torch.float64)[None]  # a + b - c
    explained = 0.0
    for k in freqs:
        u = torch.cos(2 * math.pi * k * diff / p).float()
        explained += float((u * centred).sum()) ** 2 / float(u.pow(2).sum())
    return explained / float(centred.pow(2).sum())


def loss_and_accuracy(logits: Tensor, answers: Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy."""
    loss = nn.functional.cross_entropy(logits.double(), answers).item()
    return loss, (logits.argmax(-1) == answers).float().mean().item()


@dataclass(frozen=True)
class ModularReport:
    """The analysis of a trained modular-addition toy."""

    p: int
    """The modulus."""
    train_acc: float
    """Accuracy on the training pairs."""
    test_acc: float
    """Accuracy on the held-out pairs."""
    test_loss: float
    """Cross-entropy on the held-out pairs."""
    embed_spectrum: list[float]
    """Fraction of the embedding's squared norm per frequency (index 0: the constant)."""
    embed_top_freqs: list[int]
    """The 6 frequencies (1..(p-1)/2) carrying the most embedding norm, strongest first."""
    embed_top6_fraction: float
    """Fraction of the embedding's squared norm those 6 carry."""
    key_freqs: list[int]
    """Key frequencies: those with a neuron cluster (see :func:`key_frequencies`)."""
    neuron_freq: list[int]
    """Each neuron's dominant frequency (0: dead)."""
    neuron_frac: list[float]
    """Variance fraction of each neuron its dominant frequency explains."""
    cluster_sizes: dict[int, int]
    """Neurons per key frequency (among those explained to the threshold)."""
    threshold: float
    """Explained-variance fraction a neuron needs to count in a cluster."""
    logit_fve: float
    """Variance of the logits explained by ``cos(w (a + b - c))`` over the key frequencies."""
    full: tuple[float, float]
    """(loss, accuracy) on all pairs."""
    restricted: tuple[float, float]
    """(loss, accuracy) on all pairs with only the key frequencies' components of the logits."""
    excluded: tuple[float, float]
    """(loss, accuracy) on all pairs with the key frequencies' components removed."""
    excluded_per_freq: list[float]
    """Loss on all pairs with one frequency's components removed, for each frequency 1..(p-1)/2."""


def analyze_modular(
    model: HookedModel,
    recipe: ModularRecipe | None = None,
    threshold: float = 0.85,
    min_neurons: int = 10,
) -> ModularReport:
    """Accuracy, embedding spectrum, neuron clusters, key frequencies, restricted/excluded loss."""
    recipe = recipe or ModularRecipe()
    p = recipe.p
    logits, neurons = grid_activations(model, p)
    _, answers = all_pairs(p)
    train_idx, test_idx = split(recipe)
    spectrum = embedding_spectrum(model.hf_model, p)
    top = spectrum[1:].argsort(descending=True)[:6] + 1
    freq, frac = neuron_clusters(neurons, p)
    keys = key_frequencies(freq, frac, threshold, min_neurons)
    clustered = freq[frac >= threshold]
    return ModularReport(
        p=p,
        train_acc=loss_and_accuracy(logits[train_idx], answers[train_idx])[1],
        test_acc=loss_and_accuracy(logits[test_idx], answers[test_idx])[1],
        test_loss=loss_and_accuracy(logits[test_idx], answers[test_idx])[0],
        embed_spectrum=spectrum.tolist(),
        embed_top_freqs=top.tolist(),
        embed_top6_fraction=float(spectrum[top].sum()),
        key_freqs=keys,
        neuron_freq=freq.tolist(),
        neuron_frac=frac.tolist(),
        cluster_sizes={k: int((clustered == k).sum()) for k in keys},
        threshold=threshold,
        logit_fve=logit_fve(logits, p, keys),
        full=loss_and_accuracy(logits, answers),
        restricted=loss_and_accuracy(restrict_logits(logits, p, keys), answers),
        excluded=loss_and_accuracy(exclude_logits(logits, p, keys), answers),
        excluded_per_freq=[
            loss_and_accuracy(exclude_logits(logits, p, [k]), answers)[0] for k in range(1, (p + 1) // 2)
        ],
    )
