"""Streaming activations: harvest on the fly through a bounded in-memory shuffle buffer.

1. Fill: forward passes (``batch_size`` contexts each, stopped at the deepest hook, masked
   like a disk harvest) add rows until the buffer holds ``buffer_tokens`` rows.
2. Shuffle the buffer (a generator seeded from ``(seed, rank)``) and serve the first half
   as batches (a whole number of batches), keeping the other half.
3. Refill to ``buffer_tokens`` and repeat; when the token budget is spent, serve what is
   left in whole batches and stop (the last partial batch is dropped). Streaming does not
   wrap around.

Memory: the buffer is preallocated at ``buffer_tokens`` rows per hook; rows of the forward
pass that did not fit wait in a staging area of at most one forward pass
(``batch_size * ctx_len`` rows) until the next refill.

Determinism: for a fixed model, machine and thread count the batches are a function of the
arguments. ``start`` is honoured by recomputing and discarding the skipped batches, so
resuming is slow, and it is not bit-exact across machines (forward passes may round
differently); train from a disk store when exact resumption matters. Under DDP each rank
streams its own shard of the token stream (``TokenStream.shard(rank, world)``) and yields
``batch_size // world`` rows per step: the ranks' rows are disjoint, but the union is not
the single-process batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from ..data import TokenStream
from ..errors import MechscopeError
from ..models import HookedModel
from .store_harvest import forward_rows, hook_widths, stop_layer
from .store_mask import MaskConfig, special_ids
from .store_source import Batch, check_batch_args, seeded


class StreamingSource:
    """Activations of ``hooks`` over the first ``n_tokens`` tokens of ``stream``, served through a shuffle buffer."""

    def __init__(
        self,
        model: HookedModel,
        stream: TokenStream,
        hooks: Sequence[str],
        *,
        n_tokens: int,
        buffer_tokens: int = 1 << 16,
        batch_size: int = 32,
        mask: MaskConfig | None = None,
    ) -> None:
        self.model, self.stream, self.hooks_ = model, stream, list(hooks)
        self.n_input_tokens = n_tokens
        """Stream tokens read per pass (masked ones included)."""
        self.buffer_tokens = buffer_tokens
        """Shuffle-buffer capacity in rows."""
        self.forward_batch = batch_size
        """Contexts per forward pass."""
        self.mask = mask or MaskConfig()
        """Token masks (as in a disk harvest)."""
        self.widths = hook_widths(model, self.hooks_)
        self.max_held = 0
        """High-water mark of rows held in the buffer (tests check it never exceeds ``buffer_tokens``)."""
        self.max_staged = 0
        """High-water mark of rows waiting in the staging area."""

    @property
    def hooks(self) -> tuple[str, ...]:
        """The hooks served."""
        return tuple(self.hooks_)

    @property
    def n_tokens(self) -> int:
        """Stream tokens per pass (an upper bound on rows: masked tokens yield none)."""
        return self.n_input_tokens

    def d(self, hook: str) -> int:
        """Width of ``hook``'s rows."""
        if hook not in self.widths:
            raise MechscopeError(f"hook {hook!r} is not streamed (hooks: {self.hooks_})")
        return self.widths[hook]

    def _forward_rows(self, rank: int, world: int) -> Iterator[dict[str, Tensor]]:
        n_ctx = -(-self.n_input_tokens // self.stream.ctx_len)
        stop = stop_layer(self.model, self.hooks_)
        drop = special_ids(self.stream.tokenizer, self.mask)
        for index, tokens in self.stream.shard(rank, world).batches(self.forward_batch, stop=n_ctx):
            yield forward_rows(self.model, tokens.to(self.model.device), index, self.hooks_,
                               stop=stop, mask=self.mask, drop_ids=drop)  # fmt: skip

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
        """``{hook: [batch_size // world, d]}`` float32 batches until the token budget is spent."""
        wanted = check_batch_args(batch_size, rank, world, hooks, self.hooks)
        local = batch_size // world
        if self.buffer_tokens < 2 * local:
            raise MechscopeError(
                f"buffer_tokens ({self.buffer_tokens}) must hold at least two batches of {local}"
            )
        return self._serve(local, wanted, seeded(seed, rank), start, rank, world)

    def _serve(
        self, local: int, hooks: list[str], gen: torch.Generator, start: int, rank: int, world: int
    ) -> Iterator[Batch]:
        cap = self.buffer_tokens
        buf = {h: torch.empty(cap, self.widths[h]) for h in hooks}
        held = 0
        staged: list[dict[str, Tensor]] = []
        source = self._forward_rows(rank, world)
        served = 0
        done = False
        while True:
            while held < cap and not done:  # fill
                if not staged:
                    nxt = next(source, None)
                    if nxt is None:
                        done = True
                        break
                    staged = [nxt]
                    self.max_staged = max(self.max_staged, len(nxt["__context__"]))
                rows = staged.pop()
                k = min(cap - held, len(rows["__context__"]))
                for h in hooks:
                    buf[h][held : held + k] = rows[h][:k]
                held += k
                if k < len(rows["__context__"]):
                    staged = [{key: v[k:] for key, v in rows.items()}]
                self.max_held = max(self.max_held, held)
            n_serve = (held if done else held // 2) // local * local
            if n_serve == 0:
                return
            perm = torch.randperm(held, generator=gen)
            for i in range(0, n_serve, local):
                if served >= start:
                    idx = perm[i : i + local]
                    yield {h: buf[h][idx] for h in hooks}  # advanced indexing copies
                served += 1
            keep = perm[n_serve:]
            for h in hooks:
                buf[h][: len(keep)] = buf[h][keep]
            held = len(keep)
