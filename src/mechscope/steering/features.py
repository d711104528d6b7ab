"""Steering with dictionary features, Golden-Gate style.

* :func:`clamp_feature`: at the dictionary's hook, set feature ``i`` to ``value`` everywhere:
  ``x + (value − f_i(x)) W_dec[i]``, leaving the rest of ``x`` (other features and the error)
  untouched. Clamping to the feature's own activation is the identity.
* :func:`add_feature`: ``x + alpha W_dec[i]`` (``alpha = 0``: the identity, exactly).

* :func:`steer_features`: several features at once, clamped or added, optionally only at chosen
  positions of the prompt (``positions=[-1]``: its last token). Without ``positions`` every
  position is steered, generated tokens included; with them, only those prompt positions are,
  and the one-token steps of generation are left alone.

All return ``(hook name, function)`` pairs for ``model.hooks`` / ``generate(fwd_hooks=...)``;
give one pair per dictionary (layer) to steer at several layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..dictionary.base import Dictionary
from ..errors import MechscopeError


def _check(dictionary: Dictionary, feature: int, hook: str | None) -> str:
    name = hook or dictionary.config.hook_name
    if not name:
        raise MechscopeError("the dictionary names no hook: pass hook=")
    if not 0 <= feature < dictionary.config.d_sae:
        raise MechscopeError(
            f"feature {feature} is out of range: the dictionary has {dictionary.config.d_sae}"
        )
    return name


def clamp_feature(
    dictionary: Dictionary, feature: int, value: float, hook: str | None = None
) -> tuple[str, Any]:
    """A hook that clamps ``feature`` to ``value`` at every position."""
    name = _check(dictionary, feature, hook)
    direction = dictionary.W_dec.detach()[feature]  # [d_model]

    def clamp(t: Tensor, point: Any) -> Tensor:  # [batch, pos, d_model]
        f = dictionary.encode(t.reshape(-1, t.shape[-1]).to(direction.dtype))[:, feature]
        shift = (value - f).view(*t.shape[:-1], 1) * direction
        return t + shift.to(t.dtype)

    return name, clamp


def add_feature(
    dictionary: Dictionary, feature: int, alpha: float, hook: str | None = None
) -> tuple[str, Any]:
    """A hook that adds ``alpha`` times ``feature``'s decoder direction at every position."""
    name = _check(dictionary, feature, hook)
    direction = dictionary.W_dec.detach()[feature]

    def add(t: Tensor, point: Any) -> Tensor:
        return t + (alpha * direction).to(t.dtype)

    return name, add


def steer_features(
    dictionary: Dictionary,
    values: Mapping[int, float],
    mode: str = "clamp",
    positions: Sequence[int] | None = None,
    hook: str | None = None,
) -> tuple[str, Any]:
    """One hook that clamps (``mode="clamp"``) or adds to (``"add"``) several features.

    ``values`` maps feature -> value (clamp) or strength (add); ``positions`` restricts it to those
    prompt positions (negative counts from the end). Clamping: ``x + Σ_i (v_i − f_i(x)) W_dec[i]``,
    with every ``f_i`` read from the unsteered ``x``.
    """
    if mode not in ("clamp", "add"):
        raise MechscopeError(f"mode must be 'clamp' or 'add', got {mode!r}")
    if not values:
        raise MechscopeError("no features to steer: values is empty")
    name = next(iter(_check(dictionary, f, hook) for f in values))
    for f in values:
        _check(dictionary, f, hook)
    ids = list(values)
    dirs = dictionary.W_dec.detach()[ids]  # [k, d_model]
    target = torch.tensor([float(values[f]) for f in ids], dtype=dirs.dtype)  # [k]

    def apply(t: Tensor, point: Any) -> Tensor:  # [batch, pos, d_model]
        if positions is not None and t.shape[1] == 1:
            return t  # a generation step: only the chosen prompt positions are steered
        if mode == "clamp":
            f = dictionary.encode(t.reshape(-1, t.shape[-1]).to(dirs.dtype))[:, ids]  # [tokens, k]
            coef = (target - f).view(*t.shape[:-1], len(ids))
        else:
            coef = target.expand(*t.shape[:-1], len(ids))
        shift = (coef @ dirs).to(t.dtype)  # [batch, pos, d_model]
        if positions is None:
            return t + shift
        mask = torch.zeros(t.shape[1], dtype=torch.bool)
        for p in positions:
            if not -t.shape[1] <= p < t.shape[1]:
                raise MechscopeError(f"position {p} is outside the prompt ({t.shape[1]} tokens)")
            mask[p] = True
        return t + shift * mask.view(1, -1, 1).to(shift.device)

    return name, apply
