"""Steering with dictionary features, Golden-Gate style.

* :func:`clamp_feature`: at the dictionary's hook, set feature ``i`` to ``value`` everywhere:
  ``x + (value − f_i(x)) W_dec[i]``, leaving the rest of ``x`` (other features and the error)
  untouched. Clamping to the feature's own activation is the identity.
* :func:`add_feature`: ``x + alpha W_dec[i]`` (``alpha = 0``: the identity, exactly).

Both return ``(hook name, function)`` pairs for ``model.hooks`` / ``generate(fwd_hooks=...)``.
"""

from __future__ import annotations

from typing import Any

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
