"""Separate attention inputs per head and per q/k/v (the runtime side of circuit discovery).

A layer listed in ``RunState.split_attn`` runs its norm and attention module on several copies
of its input at once (the batch grows ``copies``-fold); the attention function then gives each
query head and each key/value head the q/k/v computed from its own copy, runs the kernel once
on the real batch, and hands the module zeros for every copy but the first, whose output the
block keeps. ``hook_q``/``hook_k``/``hook_v``/``hook_z`` and ``hook_result`` see the real
batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class SplitAttention:
    """Separate attention inputs per head and per q/k/v at one layer (circuit discovery).

    ``inputs(attn_in)`` maps the attention branch's input ``[batch, pos, d_model]`` to
    ``copies`` inputs ``[batch, copies, pos, d_model]``; query head ``h`` is computed from copy
    ``q_copy[h]``, key/value head ``g`` from ``k_copy[g]`` / ``v_copy[g]``. The layer's norm
    and projections run on every copy (their cost grows with ``copies``); the attention
    kernel and everything after it run once. ``ln1.hook_normalized`` does not fire at a
    split layer.
    """

    inputs: Callable[[Tensor], Tensor]
    """``attn_in [batch, pos, d_model] -> [batch, copies, pos, d_model]``."""
    q_copy: Tensor
    """``[head]`` long: the copy each query head reads."""
    k_copy: Tensor
    """``[kv_head]`` long: the copy each key head reads."""
    v_copy: Tensor
    """``[kv_head]`` long: the copy each value head reads."""


def split_attention(
    rt: Any, layer: int, split: SplitAttention, attn_in: Tensor, kwargs: dict[str, Any]
) -> Tensor:  # [batch, pos, d_model]: the attention module's output
    """Run the attention module on every copy of :class:`SplitAttention`; keep copy 0's output."""
    x = split.inputs(attn_in)  # [batch, copies, pos, d_model]
    b, r = x.shape[:2]
    rt.split_now = (layer, split, b, r)
    try:
        out = rt.parts[layer].attn(rt.parts[layer].ln1(x.flatten(0, 1)), **_repeat_rows(kwargs, b, r))[0]
    finally:
        rt.split_now = None
    return out.view(b, r, *out.shape[1:])[:, 0]


def _repeat_rows(value: Any, b: int, r: int) -> Any:
    """Repeat every batch-leading tensor (2-D or more, first dim ``b``) ``r`` times per row."""
    if isinstance(value, Tensor):
        return value.repeat_interleave(r, dim=0) if value.dim() >= 2 and value.shape[0] == b else value
    if isinstance(value, dict):
        return {k: _repeat_rows(v, b, r) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_repeat_rows(v, b, r) for v in value)
    return value


def select_split(
    rt: Any, query: Tensor, key: Tensor, value: Tensor, mask: Any, kwargs: dict[str, Any]
) -> tuple[Tensor, Tensor, Tensor, Any, dict[str, Any]]:
    """Each head's q/k/v from its own copy (HF layout ``[batch*copies, head, pos, d]`` -> ``[batch, ...]``)."""
    _, split, b, r = rt.split_now  # type: ignore[misc]

    def pick(t: Tensor, copy: Tensor) -> Tensor:
        t = t.view(b, r, *t.shape[1:])
        return t[:, copy.to(t.device), torch.arange(t.shape[2], device=t.device)]

    def first(v: Any) -> Any:
        return v[::r] if isinstance(v, Tensor) and v.dim() >= 2 and v.shape[0] == b * r else v

    return (
        pick(query, split.q_copy),
        pick(key, split.k_copy),
        pick(value, split.v_copy),
        first(mask),
        {k: first(v) for k, v in kwargs.items()},
    )
