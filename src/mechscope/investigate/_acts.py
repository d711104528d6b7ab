"""Activations through a dictionary, shared by the feature stages: encode and decode a
``[n pos d]`` residual, and the positions the stages edit."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..models import HookedModel

__all__ = ["decode_acts", "edit_mask", "encode_acts"]


def encode_acts(dictionary: Any, x: Tensor) -> Tensor:
    """``[n pos d]`` activations -> ``[n pos d_sae]`` latents (in the dictionary's dtype)."""
    return dictionary.encode(x.reshape(-1, x.shape[-1]).to(dictionary.W_dec.dtype)).view(*x.shape[:-1], -1)


def decode_acts(dictionary: Any, f: Tensor, like: Tensor) -> Tensor:
    """``[n pos d_sae]`` latents -> the reconstruction, shaped and typed like ``like``."""
    return dictionary.decode(f.reshape(-1, f.shape[-1])).view_as(like).to(like.dtype)


def edit_mask(model: HookedModel, batch: Any) -> Tensor:
    """``[n pos]`` float: the positions the stages edit and sum over, i.e. real tokens other than
    BOS (an attention sink whose residual is an outlier; the dictionaries never train on it)."""
    mask = batch.attention_mask.bool()
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    if bos is not None:
        mask = mask & (batch.tokens != bos)
    return mask.float()
