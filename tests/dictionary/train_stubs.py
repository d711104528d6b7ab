"""Small stand-ins for the trainer tests: a ReLU SAE and an in-memory activation source.

They follow the contracts of ``mechscope.dictionary.base`` (the step protocol) and of the
source protocol (``batches(batch_size, *, seed, start, rank, world, hooks)``; rank ``r``
gets rows ``r::world`` of every global batch), so the trainer is tested on its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from mechscope.dictionary.base import Dictionary, DictionaryConfig, ForwardOutput


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


class ListSource:
    """Deterministic in-memory source: a seeded permutation per epoch, endless."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors
        self.requests: list[dict[str, object]] = []

    @property
    def hooks(self) -> tuple[str, ...]:
        return tuple(self.tensors)

    @property
    def n_tokens(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def d(self, hook: str) -> int:
        return self.tensors[hook].shape[1]

    def batches(
        self, batch_size: int, *, seed: int, start: int = 0, rank: int = 0, world: int = 1,
        hooks: Sequence[str] | None = None,
    ) -> Iterator[dict[str, torch.Tensor]]:  # fmt: skip
        self.requests.append(dict(batch_size=batch_size, seed=seed, start=start, rank=rank, world=world))
        hooks = list(self.tensors) if hooks is None else list(hooks)
        n = self.n_tokens
        per_epoch = n // batch_size
        i = start
        while True:
            epoch, j = divmod(i, per_epoch)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
            idx = perm[j * batch_size : (j + 1) * batch_size][rank::world]
            yield {h: self.tensors[h][idx].float() for h in hooks}
            i += 1


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
