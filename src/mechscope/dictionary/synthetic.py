"""Synthetic activations from a known sparse dictionary, and a recovery score.

1. Draw ``n_features`` random unit directions in ``R^d`` (``n_features > d``: superposition).
2. Each sample activates ``active`` distinct features chosen uniformly, with non-negative
   magnitudes uniform in ``[low, high]``.
3. ``x = codes @ directions`` ``[n, d]`` (no noise, no bias).

A dictionary that has learned the generating features has, for every true direction, a
decoder row pointing the same way: ``mean_best_cosine`` measures that (1 = all found).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SyntheticConfig:
    """The generating sparse dictionary."""

    d: int = 32
    """Dimension of the activations."""
    n_features: int = 64
    """Number of true directions (more than ``d``)."""
    active: int = 3
    """Features active in every sample."""
    low: float = 0.5
    """Smallest magnitude of an active feature."""
    high: float = 1.5
    """Largest magnitude of an active feature."""
    seed: int = 0
    """Seed of the directions (samples take their own generator)."""


class SyntheticData:
    """Samples ``x = codes @ directions`` from a fixed random sparse dictionary."""

    def __init__(self, config: SyntheticConfig) -> None:
        if not 0 < config.active <= config.n_features:
            raise ValueError(f"active must be in [1, n_features], got {config.active}")
        if not 0 <= config.low <= config.high:
            raise ValueError(f"need 0 <= low <= high, got {config.low}, {config.high}")
        self.config = config
        g = torch.Generator().manual_seed(config.seed)
        dirs = torch.randn(config.n_features, config.d, generator=g)
        self.directions = dirs / dirs.norm(dim=1, keepdim=True)
        """``[n_features, d]`` unit rows: the true dictionary."""

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x [n, d], codes [n, n_features])`` float32."""
        cfg = self.config
        scores = torch.rand(n, cfg.n_features, generator=generator)
        idx = scores.topk(cfg.active, dim=1).indices  # ``active`` distinct features per row
        mags = cfg.low + (cfg.high - cfg.low) * torch.rand(n, cfg.active, generator=generator)
        codes = torch.zeros(n, cfg.n_features).scatter_(1, idx, mags)
        return codes @ self.directions, codes


def mean_best_cosine(learned: torch.Tensor, true: torch.Tensor) -> float:
    """Mean over true rows ``[n_true, d]`` of the best cosine with any learned row ``[m, d]``."""
    a = true / true.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = learned / learned.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return float((a @ b.T).max(dim=1).values.mean())
