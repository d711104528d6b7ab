"""Fourier analysis of the modular-addition toy (Nanda et al. 2023).

Functions on ``Z_p`` are written in the real Fourier basis: the constant ``1/sqrt(p)`` and,
for each frequency ``k = 1..(p-1)/2``, ``cos(2 pi k x / p)`` and ``sin(2 pi k x / p)``, each
scaled to unit norm. For odd ``p`` these ``p`` vectors are orthonormal, so the squared norms
of a function's coefficients add up to its squared norm (Parseval), and "the fraction of the
norm a frequency carries" is the fraction of the squared Frobenius norm.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def fourier_basis(p: int) -> Tensor:  # [p (term), p (x)]
    """Rows: the constant, then ``cos k``, ``sin k`` for ``k = 1..(p-1)/2``; orthonormal for odd p."""
    if p < 3 or p % 2 == 0:
        raise ValueError(f"the Fourier basis here needs an odd p >= 3, not {p}")
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for k in range(1, (p - 1) // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
    basis = torch.stack(rows)
    return (basis / basis.norm(dim=1, keepdim=True)).float()


def frequency_energy(coeffs: Tensor) -> Tensor:  # coeffs [p (term), ...] -> [(p+1)/2]
    """Squared norm per frequency (index 0: the constant) of Fourier coefficients along dim 0."""
    energy = coeffs.pow(2).flatten(1).sum(dim=1)  # [p]
    return torch.cat([energy[:1], energy[1:].view(-1, 2).sum(dim=1)])


def embedding_spectrum(model: Any, p: int) -> Tensor:  # [(p+1)/2], sums to 1
    """Fraction of the token embedding's squared norm (over the ``p`` number tokens) per frequency."""
    w_e = model.model.embed_tokens.weight[:p].detach().float()  # [p, d_model]
    energy = frequency_energy(fourier_basis(p) @ w_e)
    return energy / energy.sum()
