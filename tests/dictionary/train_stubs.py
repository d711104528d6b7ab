"""Test helpers for the trainer: a minimal ReLU SAE and a recording in-memory source.

``ToySAE`` implements the step protocol of ``mechscope.dictionary.base`` with a loss written
out in its docstring, so trainer tests can compare against hand-written loops without
depending on the details of the real architectures (``test_train_architectures.py`` runs
those). ``ListSource`` is the real ``TensorSource`` plus a log of ``batches`` calls.
"""

from __future__ import annotations

import torch

from mechscope.dictionary.base import Dictionary, DictionaryConfig, ForwardOutput
from mechscope.dictionary.store import TensorSource


class ToySAE(Dictionary):
    """ReLU SAE; loss = mean_rows ||y - y_hat||^2 + lam * mean_rows sum_i f_i ||W_dec[i]||."""

    def activation(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(h)

    def training_forward(self, x, y=None, *, sparsity_coefficient=0.0, dead_mask=None):
        y = x if y is None else y
        f = self.encode(x)  # [n, d_sae]
        y_hat = self.decode(f, x)  # [n, d_out]
        mse = (y_hat - y).pow(2).sum(-1).mean()
        l1 = (f * self.W_dec.norm(dim=1)).sum(-1).mean()
        loss = mse + sparsity_coefficient * l1
        fired = (f > 0).any(dim=0)
        return ForwardOutput(y_hat, f, None, loss, {"mse": mse.detach(), "l1": l1.detach()}, fired)


class ListSource(TensorSource):
    """``TensorSource`` (the real in-memory source) that records each ``batches`` call."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(tensors)
        self.requests: list[dict[str, object]] = []

    def batches(self, batch_size, *, seed, start=0, rank=0, world=1, hooks=None):
        self.requests.append(dict(batch_size=batch_size, seed=seed, start=start, rank=rank, world=world))
        return super().batches(batch_size, seed=seed, start=start, rank=rank, world=world, hooks=hooks)


def toy_config(d_in: int = 8, d_sae: int = 16, hook: str = "h", **kw) -> DictionaryConfig:
    return DictionaryConfig(architecture="relu", d_in=d_in, d_sae=d_sae, hook_name=hook, **kw)


def toy_sae(seed: int = 0, **kw) -> ToySAE:
    d = ToySAE(toy_config(**kw))
    d.reset_parameters(generator=torch.Generator().manual_seed(seed))
    return d


def toy_data(n: int = 512, d: int = 8, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    """``[n, d]`` sparse non-negative mixtures of 16 directions plus an offset (so b_dec matters)."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(16, d, generator=g)
    codes = torch.rand(n, 16, generator=g) * (torch.rand(n, 16, generator=g) < 0.2)
    return scale * (codes @ dirs + 0.5)
