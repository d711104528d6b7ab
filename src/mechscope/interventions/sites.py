"""Patches: which slice of which hook point gets which value.

A :class:`Patch` names a hook point and an index over its non-batch dimensions, in the
hook's own layout (``docs/hooks.md``): ``Patch("blocks.3.hook_resid_pre", (5,))`` is
position 5 of the residual stream before block 3; ``Patch("blocks.3.attn.hook_z",
(slice(None), 2))`` is head 2 at every position; ``Patch("blocks.3.attn.hook_pattern",
(2,))`` is head 2's whole attention pattern. An empty index means the whole activation.

A *variant* is a tuple of patches applied together in one run; the empty variant is the
unpatched run.

Index conventions per site, used to skip work that a patch cannot change:

* ``query`` axis: positions whose value is computed from earlier positions only. A patch
  there first changes anything at its first patched position.
* ``key`` axis (``hook_k``/``hook_v`` position, the last axis of scores and patterns):
  changing key position ``r`` first affects query position ``r``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import MechscopeError
from ..models.names import parse

Index = tuple[Any, ...]


@dataclass(frozen=True)
class Patch:
    """Write the source's value at ``index`` of hook ``name`` into the target run."""

    name: str
    """Full hook name, e.g. ``blocks.3.attn.hook_z``."""
    index: Index = ()
    """Index over the non-batch dimensions (ints and slices); ``()`` patches everything."""

    @property
    def layer(self) -> int | None:
        """Block of the hook (None for global sites such as ``hook_embed``)."""
        return parse(self.name)[0]

    def __str__(self) -> str:
        return f"{self.name}[{', '.join(_fmt(i) for i in self.index) or ':'}]"


Variant = tuple[Patch, ...]


def _fmt(i: Any) -> str:
    if isinstance(i, slice):
        return f"{'' if i.start is None else i.start}:{'' if i.stop is None else i.stop}"
    return str(i)


# Which non-batch axis holds positions, and whether they are query or key positions.
_KEY_SITES = {"attn.hook_k", "attn.hook_v"}
_PATTERN_SITES = {"attn.hook_attn_scores", "attn.hook_pattern"}


def query_axis(name: str) -> int | None:
    """Non-batch axis of query positions at this site (None for key-position sites)."""
    site = parse(name)[1]
    if site in _KEY_SITES:
        return None
    return 1 if site in _PATTERN_SITES else 0


def first_axis(name: str) -> int:
    """Non-batch axis whose index decides the first query position a patch can change."""
    site = parse(name)[1]
    return 2 if site in _PATTERN_SITES else 0  # patterns: key axis; k/v: key positions; else queries


def normalize(patch: Patch, shape: torch.Size) -> Patch:
    """``patch`` with every index made non-negative and checked against ``shape`` (batch first).

    Raises a :class:`MechscopeError` naming the patch if an index does not fit.
    """
    if len(patch.index) > len(shape) - 1:
        raise MechscopeError(
            f"patch {patch} has {len(patch.index)} indices but {patch.name} has {len(shape) - 1} non-batch "
            f"dimensions (shape {tuple(shape)})"
        )
    out: list[Any] = []
    for axis, i in enumerate(patch.index):
        size = shape[axis + 1]
        if isinstance(i, bool) or not isinstance(i, int | slice):
            raise MechscopeError(f"patch {patch}: indices must be ints or slices, got {type(i).__name__}")
        if isinstance(i, int):
            if not -size <= i < size:
                raise MechscopeError(
                    f"patch {patch}: index {i} is out of range for axis {axis} of size {size}"
                )
            out.append(i % size)
        else:
            start, stop, step = i.indices(size)
            if step != 1:
                raise MechscopeError(f"patch {patch}: slices with a step are not supported")
            out.append(slice(start, stop))
    return Patch(patch.name, tuple(out))


def full_index(patch: Patch, ndim: int) -> list[Any]:
    """The patch index padded with ``slice(None)`` to ``ndim`` non-batch axes."""
    return [*patch.index, *([slice(None)] * (ndim - len(patch.index)))]


def first_changed(patch: Patch, source: Tensor, target: Tensor) -> int | None:
    """First query position whose result the patch can change, or None if it changes nothing.

    ``source`` and ``target`` are the full activations ``[n, ...]`` at ``patch.name``.
    """
    idx = full_index(patch, source.dim() - 1)
    axis = first_axis(patch.name)
    length = source.shape[axis + 1]
    keep = torch.zeros(length, dtype=torch.bool, device=source.device)
    keep[idx[axis]] = True
    sel = [slice(None), *idx]
    sel[axis + 1] = slice(None)
    diff = source[tuple(sel)] != target[tuple(sel)]
    # axes of ``diff``: batch, then every non-int index; find where ``axis`` landed
    landed = 1 + sum(1 for a in range(axis) if not isinstance(idx[a], int))
    changed = diff.movedim(landed, 0).reshape(length, -1).any(-1) & keep
    hits = changed.nonzero()
    return int(hits[0]) if len(hits) else None


def local_index(patch: Patch, ndim: int, offset: int) -> tuple[tuple[Any, ...], tuple[Any, ...]] | None:
    """``(target_index, source_index)`` for a run that starts at query position ``offset``.

    The target activation holds query positions ``offset..`` only; key positions stay
    absolute. Both indices include the batch axis. Positions before ``offset`` are left out:
    every patch writes the target's own values there (that is how ``offset`` was chosen),
    so there is nothing to write. Returns None when nothing is left.
    """
    idx = full_index(patch, ndim)
    tgt = [slice(None), *idx]
    src = [slice(None), *idx]
    qa = query_axis(patch.name)
    if offset and qa is not None:  # indices are normalised (non-negative) by ``normalize``
        i = idx[qa]
        if isinstance(i, int):
            if i < offset:
                return None
            tgt[qa + 1] = i - offset
        else:
            start = max(i.start or 0, offset)
            stop = i.stop
            tgt[qa + 1] = slice(start - offset, None if stop is None else max(stop - offset, 0))
            src[qa + 1] = slice(start, stop)
    return tuple(tgt), tuple(src)
