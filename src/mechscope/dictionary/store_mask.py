"""Which harvested tokens to keep: BOS / special-token masks and the high-norm outlier mask.

One keep-mask is computed per forward batch and applied to every hook of the harvest, so
all hooks hold the same rows (row ``i`` of every hook is the same token). A transcoder's
input and output hooks are therefore always masked identically.

Outliers: for each hook and each context, the median activation norm is taken over that
context's tokens that survive the token masks; a token is dropped when, at *any* harvested
hook, its norm exceeds ``outlier_factor`` times that median. The median is per context (not
per forward batch, not a running estimate), so the mask of a token does not depend on the
batch size, on which rank harvested it, or on where a resumed run restarted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import MechscopeError


@dataclass(frozen=True)
class MaskConfig:
    """Tokens left out of a harvest (all rows of all hooks are masked together)."""

    bos: bool = True
    """Drop tokens equal to the tokenizer's BOS token (their activations are huge attention-sink outliers)."""
    special: bool = False
    """Drop every special token of the tokenizer (BOS, EOS, PAD, ...)."""
    outlier_factor: float | None = None
    """Drop tokens whose norm, at any harvested hook, exceeds this multiple of its context's median norm."""

    def __post_init__(self) -> None:
        if self.outlier_factor is not None and not self.outlier_factor > 0:
            raise MechscopeError(f"outlier_factor must be positive, not {self.outlier_factor}")

    def as_dict(self) -> dict[str, Any]:
        """The settings, as recorded in a store manifest."""
        return asdict(self)


def special_ids(tokenizer: Any, mask: MaskConfig) -> list[int]:
    """Token ids the token masks drop."""
    ids: set[int] = set()
    if tokenizer is None:
        if mask.bos or mask.special:
            raise MechscopeError("BOS / special-token masking needs the model's tokenizer")
        return []
    if mask.bos and getattr(tokenizer, "bos_token_id", None) is not None:
        ids.add(int(tokenizer.bos_token_id))
    if mask.special:
        ids.update(int(i) for i in getattr(tokenizer, "all_special_ids", []) or [])
    return sorted(ids)


def token_keep(tokens: Tensor, drop_ids: list[int]) -> Tensor:
    """Keep-mask ``[b, pos]`` (bool): False where the token is one of ``drop_ids``."""
    if not drop_ids:
        return torch.ones_like(tokens, dtype=torch.bool)
    return ~torch.isin(tokens, torch.tensor(drop_ids, dtype=tokens.dtype, device=tokens.device))


def outlier_keep(acts: dict[str, Tensor], keep: Tensor, factor: float) -> Tensor:
    """``keep`` ``[b, pos]`` with high-norm tokens also dropped (``acts[h]`` is ``[b, pos, d]``)."""
    out = keep.clone()
    for x in acts.values():
        norms = x.float().norm(dim=-1)  # [b, pos]
        med = torch.nanmedian(norms.masked_fill(~keep, float("nan")), dim=1).values  # [b]
        out &= ~(norms > factor * med[:, None])  # NaN median (all masked): nothing more dropped
    return out


def keep_mask(tokens: Tensor, acts: dict[str, Tensor], mask: MaskConfig, drop_ids: list[int]) -> Tensor:
    """The keep-mask ``[b, pos]`` of one forward batch under ``mask``."""
    keep = token_keep(tokens, drop_ids)
    if mask.outlier_factor is not None:
        keep = outlier_keep(acts, keep, mask.outlier_factor)
    return keep
