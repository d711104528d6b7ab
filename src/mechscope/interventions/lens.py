"""The logit lens (nostalgebraist, 2020): read the residual stream as if it were the last layer.

1. Record the residual stream before every block and after the last one
   (``hook_resid_pre`` 0..L-1 and ``hook_resid_post`` L-1): ``n_layers + 1`` points.
2. Take each prompt's chosen position (by default its last real token).
3. Apply the model's own final norm, unembedding and any final-logit soft-cap
   (:meth:`HookedModel.unembed`).

The last point is exactly the model's output, so a lens curve always ends at the model's
real prediction. Point ``i < n_layers`` is "before block i".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..models import HookedModel
from ..models.hooked import Inputs


@dataclass(frozen=True)
class LogitLens:
    """Lens logits at one position per prompt, for every residual-stream point."""

    labels: list[str]
    """Name of each point: ``"resid_pre 0"`` ... ``"resid_post {L-1}"``."""
    logits: Tensor
    """``[point, batch, d_vocab]`` lens logits."""
    positions: Tensor
    """``[batch]`` position read in each prompt."""

    def log_probs(self) -> Tensor:
        """``[point, batch, d_vocab]`` log-probabilities."""
        return torch.log_softmax(self.logits.float(), dim=-1)

    def prob(self, token_ids: Tensor | int) -> Tensor:
        """``[point, batch]`` probability of each prompt's ``token_ids`` entry."""
        ids = self._ids(token_ids)
        return (
            self.log_probs().gather(-1, ids[None, :, None].expand(self.logits.shape[0], -1, 1))[..., 0].exp()
        )

    def rank(self, token_ids: Tensor | int) -> Tensor:
        """``[point, batch]`` rank of each prompt's token (0 = the top prediction)."""
        ids = self._ids(token_ids)
        target = self.logits.gather(-1, ids[None, :, None].expand(self.logits.shape[0], -1, 1))
        return (self.logits > target).sum(-1)

    def top(self, k: int = 5) -> tuple[Tensor, Tensor]:
        """Top-``k`` probabilities and token ids, each ``[point, batch, k]``."""
        return self.log_probs().exp().topk(k, dim=-1)

    def _ids(self, token_ids: Tensor | int) -> Tensor:
        ids = torch.as_tensor(token_ids, device=self.logits.device).long().reshape(-1)
        return ids.expand(self.logits.shape[1]) if ids.numel() == 1 else ids


def logit_lens(model: HookedModel, inputs: Inputs, *, position: int | None = None) -> LogitLens:
    """The logit lens of ``inputs`` at ``position`` (default: each prompt's last real token)."""
    n = model.cfg.n_layers
    names = [f"blocks.{i}.hook_resid_pre" for i in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
    _, cache = model.run_with_cache(inputs, names=names, return_logits=False)
    assert cache.batch is not None
    resid = cache.accumulated_resid()  # [point, batch, pos, d_model]
    b = resid.shape[1]
    if position is None:
        pos = cache.batch.last_positions
    else:
        pos = torch.full((b,), position % resid.shape[2], device=resid.device)
    picked = resid[:, torch.arange(b, device=resid.device), pos]  # [point, batch, d_model]
    with torch.no_grad():
        logits = model.unembed(picked)
    labels = [f"resid_pre {i}" for i in range(n)] + [f"resid_post {n - 1}"]
    return LogitLens(labels, logits, pos)
