"""The trainer-facing batch protocol and its in-memory implementation, :class:`TensorSource`.

``source.batches(batch_size, *, seed, start=0, rank=0, world=1, hooks=None)`` yields dicts
``{hook: [batch_size // world, d_hook]}`` (float32), one per step:

1. Rows are shuffled epoch by epoch. Epoch ``e`` permutes the chunks (disk shards; a
   ``TensorSource`` is one chunk) with a generator seeded from ``(seed, e)``, groups them in
   that order into windows of at least ``window_tokens`` rows, loads one window at a time
   and permutes its rows with a generator seeded from ``(seed, e, window)``. When one window
   covers everything (any ``TensorSource``; a store no larger than the window) this is a
   uniform random permutation of all rows.
2. The epochs are concatenated into one endless row stream, and global batch ``i`` is rows
   ``[i * batch_size, (i + 1) * batch_size)`` of it: the iterator never stops (a batch may
   straddle two epochs); the trainer decides how many steps to take.
3. ``start`` skips that many global batches without loading the windows before them, so a
   resumed run sees exactly the batches an uninterrupted one would have.
4. Under DDP, ``batch_size`` is the *global* batch: rank ``r`` of ``world`` gets rows
   ``r::world`` of each global batch (``batch_size`` must be divisible by ``world``). The
   ranks' parts are disjoint and together form the single-process batch.
5. ``hooks`` selects hooks (default: all); the rows of different hooks stay aligned.

The output is a function of the arguments and the stored data only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..errors import MechscopeError

Batch = dict[str, Tensor]
Loader = Callable[[int, list[str]], Batch]


@runtime_checkable
class ActivationSource(Protocol):
    """What a trainer reads activations from (disk store, in-memory tensors, streaming buffer)."""

    @property
    def hooks(self) -> tuple[str, ...]:
        """The hooks held, in harvest order."""
        ...

    @property
    def n_tokens(self) -> int:
        """Number of rows (tokens) per hook."""
        ...

    def d(self, hook: str) -> int:
        """Width of ``hook``'s rows."""
        ...

    def batches(
        self,
        batch_size: int,
        *,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world: int = 1,
        hooks: Sequence[str] | None = None,
    ) -> Iterator[Batch]:
        """``{hook: [batch_size // world, d]}`` float32 batches (see the module docstring)."""
        ...


def seeded(*parts: int) -> torch.Generator:
    """A CPU generator seeded from integers (stable across runs and platforms)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def check_batch_args(
    batch_size: int, rank: int, world: int, hooks: Sequence[str] | None, known: Sequence[str]
) -> list[str]:
    """Validate the protocol's arguments; return the hooks to serve."""
    if batch_size < 1:
        raise MechscopeError(f"batch_size must be positive, not {batch_size}")
    if world < 1 or not 0 <= rank < world:
        raise MechscopeError(f"rank {rank} is outside 0..{world - 1}")
    if batch_size % world:
        raise MechscopeError(
            f"the global batch_size {batch_size} must be divisible by the world size {world} "
            "(each rank gets batch_size // world rows of every global batch)"
        )
    wanted = list(known) if hooks is None else [hooks] if isinstance(hooks, str) else list(hooks)
    missing = [h for h in wanted if h not in known]
    if missing:
        raise MechscopeError(f"hooks {missing} are not in this source (it holds {list(known)})")
    return wanted


def _windows(sizes: Sequence[int], order: list[int], window_tokens: int) -> list[list[int]]:
    """Chunks in ``order`` grouped into windows of at least ``window_tokens`` rows (last may be smaller)."""
    out: list[list[int]] = []
    cur: list[int] = []
    rows = 0
    for c in order:
        cur.append(c)
        rows += sizes[c]
        if rows >= window_tokens:
            out.append(cur)
            cur, rows = [], 0
    if cur:
        out.append(cur)
    return out


def _epoch_pieces(
    sizes: Sequence[int], load: Loader, hooks: list[str], seed: int, epoch: int, skip: int, piece: int,
    window_tokens: int,
) -> Iterator[Batch]:  # fmt: skip
    """One epoch's rows in shuffled order, as pieces of at most ``piece`` rows, after ``skip`` rows."""
    order = torch.randperm(len(sizes), generator=seeded(seed, epoch)).tolist()
    for w, chunks in enumerate(_windows(sizes, order, window_tokens)):
        n = sum(sizes[c] for c in chunks)
        if skip >= n:
            skip -= n
            continue
        parts = [load(c, hooks) for c in chunks]
        data = {h: torch.cat([p[h] for p in parts]) if len(parts) > 1 else parts[0][h] for h in hooks}
        del parts
        perm = torch.randperm(n, generator=seeded(seed, epoch, w))[skip:]
        skip = 0
        for i in range(0, len(perm), piece):
            idx = perm[i : i + piece]
            yield {h: data[h][idx] for h in hooks}


def shuffled_batches(
    sizes: Sequence[int], load: Loader, hooks: list[str], batch_size: int, *, seed: int, start: int = 0,
    rank: int = 0, world: int = 1, window_tokens: int = 1 << 62,
) -> Iterator[Batch]:  # fmt: skip
    """The protocol's batch stream over chunks of ``sizes`` rows, loaded by ``load(chunk, hooks)``."""
    total = sum(sizes)
    if total == 0:
        raise MechscopeError("the source holds no rows")
    epoch, skip = divmod(start * batch_size, total)
    pending: list[Batch] = []
    held = 0
    while True:
        for piece in _epoch_pieces(sizes, load, hooks, seed, epoch, skip, batch_size, window_tokens):
            pending.append(piece)
            held += len(piece[hooks[0]])
            while held >= batch_size:
                glob = (
                    {h: torch.cat([p[h] for p in pending]) for h in hooks} if len(pending) > 1 else pending[0]
                )
                out = {h: glob[h][:batch_size][rank::world].float().contiguous() for h in hooks}
                rest = {h: glob[h][batch_size:] for h in hooks}
                held -= batch_size
                pending = [rest] if held else []
                yield out
        epoch, skip = epoch + 1, 0


class TensorSource:
    """An in-memory source: ``TensorSource({hook: [n, d]})``, every tensor with the same ``n``.

    Implements the batch protocol (module docstring) with one window: each epoch is a
    uniform random permutation of the rows.
    """

    def __init__(self, tensors: Mapping[str, Tensor]) -> None:
        if not tensors:
            raise MechscopeError("TensorSource needs at least one hook's tensor")
        sizes = {h: t.shape[0] for h, t in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise MechscopeError(f"every hook needs the same number of rows, got {sizes}")
        for h, t in tensors.items():
            if t.dim() != 2:
                raise MechscopeError(f"{h}: expected a [n, d] tensor, got shape {tuple(t.shape)}")
        self.tensors = dict(tensors)
        """The rows, ``{hook: [n, d]}``."""

    @property
    def hooks(self) -> tuple[str, ...]:
        """The hooks held."""
        return tuple(self.tensors)

    @property
    def n_tokens(self) -> int:
        """Rows per hook."""
        return next(iter(self.tensors.values())).shape[0]

    def d(self, hook: str) -> int:
        """Width of ``hook``'s rows."""
        if hook not in self.tensors:
            raise MechscopeError(f"hook {hook!r} is not in this source (it holds {list(self.tensors)})")
        return self.tensors[hook].shape[1]

    def batches(
        self,
        batch_size: int,
        *,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world: int = 1,
        hooks: Sequence[str] | None = None,
    ) -> Iterator[Batch]:
        """``{hook: [batch_size // world, d]}`` float32 batches, endless (see the module docstring)."""
        wanted = check_batch_args(batch_size, rank, world, hooks, self.hooks)
        return shuffled_batches(
            [self.n_tokens],
            lambda _c, hs: {h: self.tensors[h] for h in hs},
            wanted,
            batch_size,
            seed=seed,
            start=start,
            rank=rank,
            world=world,
        )
