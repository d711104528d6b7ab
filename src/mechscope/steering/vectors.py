"""Steering: add a direction to the residual stream (or clamp a feature) while the model runs.

* :class:`SteeringVector`: a direction at one hook, added ``alpha`` times at every position
  (``vector [d_model]``) or at the first positions of the prompt (``vector [k, d_model]``,
  ActAdd's form). With ``alpha = 0`` the hook changes nothing: outputs are bit-identical.
* :func:`caa` (contrastive activation addition, Rimsky et al. 2024): the mean activation at a
  hook over positive prompts minus the mean over negative prompts, each read at its last token.
* :func:`actadd` (Turner et al. 2023): the activations of one prompt minus another's, position
  by position, at a hook; added to the first positions of a new prompt.
* :func:`steer`: a context manager that keeps steering hooks in force (for calls, ``generate``
  and ``run_with_cache``); :func:`steering_hooks` gives the hook list.

During generation with a KV cache, later steps see one new position at a time: an all-positions
vector is added to each of them; an ActAdd vector only to the prompt positions it covers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import MechscopeError
from ..models import HookedModel


@dataclass(frozen=True)
class SteeringVector:
    """A direction to add at one hook point."""

    hook: str
    """Where it is added, e.g. ``blocks.12.hook_resid_pre`` (any ``[batch, pos, d_model]`` hook)."""
    vector: Tensor
    """``[d_model]``: added at every position; ``[k, d_model]``: added at the first ``k`` positions."""
    name: str = ""
    """What it is, for reports."""

    def scaled(self, alpha: float) -> SteeringVector:
        """The same vector times ``alpha``."""
        return SteeringVector(self.hook, self.vector * alpha, self.name)


def steering_hooks(
    vectors: SteeringVector | Sequence[SteeringVector], alpha: float = 1.0
) -> list[tuple[str, Any]]:
    """Forward hooks adding ``alpha * vector`` for each steering vector (none when ``alpha == 0``)."""
    vectors = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    if alpha == 0:
        return []
    return [(v.hook, _adder(v.vector, alpha)) for v in vectors]


def _adder(vector: Tensor, alpha: float) -> Any:
    def add(t: Tensor, hook: Any) -> Tensor:  # t [batch, pos, d_model]
        if t.dim() != 3 or t.shape[-1] != vector.shape[-1]:
            raise MechscopeError(
                f"steering at {hook.name}: the activation is {tuple(t.shape)}, the vector {tuple(vector.shape)}"
            )
        v = (alpha * vector).to(t.dtype).to(t.device)
        if v.dim() == 1:
            return t + v
        k = min(v.shape[0], t.shape[1])
        if t.shape[1] == 1 and v.shape[0] > 1:  # a generation step past the prompt: nothing to add
            return t
        out = t.clone()
        out[:, :k] += v[:k]
        return out

    return add


@contextmanager
def steer(
    model: HookedModel, vectors: SteeringVector | Sequence[SteeringVector], alpha: float = 1.0
) -> Iterator[HookedModel]:
    """Keep the steering hooks in force inside a ``with`` block."""
    with model.hooks(steering_hooks(vectors, alpha)):
        yield model


def caa(model: HookedModel, positive: Sequence[str], negative: Sequence[str], hook: str) -> SteeringVector:
    """Mean activation over ``positive`` prompts minus over ``negative`` ones, at their last token."""
    if not positive or not negative:
        raise MechscopeError("CAA needs at least one positive and one negative prompt")
    plus = torch.stack([_one_last(model, p, hook) for p in positive]).mean(0)
    minus = torch.stack([_one_last(model, p, hook) for p in negative]).mean(0)
    return SteeringVector(hook, plus - minus, f"CAA ({len(positive)} vs {len(negative)} prompts)")


def _one_last(model: HookedModel, prompt: str, hook: str) -> Tensor:  # [d_model]
    _, cache = model.run_with_cache(prompt, names=[hook], return_logits=False)
    return cache[hook][0, -1].float()


def actadd(model: HookedModel, plus: str, minus: str, hook: str) -> SteeringVector:
    """ActAdd: ``acts(plus) − acts(minus)`` at ``hook``, position by position (the shorter prompt's
    activations are extended with zeros), to be added at the first positions of a prompt."""
    a, b = (
        model.run_with_cache(p, names=[hook], return_logits=False)[1][hook][0].float() for p in (plus, minus)
    )
    k = max(a.shape[0], b.shape[0])
    pad = lambda x: torch.cat([x, x.new_zeros(k - x.shape[0], x.shape[1])])  # noqa: E731
    return SteeringVector(hook, pad(a) - pad(b), f"ActAdd({plus!r} - {minus!r})")
