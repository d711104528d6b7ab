"""Packing documents into fixed-length contexts, and the shardable :class:`TokenStream`.

Packing. Documents are tokenised without special tokens and concatenated into one token
stream, each document followed by the tokenizer's EOS token when it has one. The stream
is cut into contexts of exactly ``ctx_len`` tokens; a final partial context is dropped.
The BOS policy says where BOS tokens go:

* ``"bos"`` (default): every context starts with BOS, followed by the next
  ``ctx_len - 1`` stream tokens (a document may continue across contexts, as in SAELens
  with ``prepend_bos``). Position 0 is always BOS, so masking BOS drops exactly one row
  per context.
* ``"doc"``: BOS before every document in the stream (``BOS d1 EOS BOS d2 EOS ...``), then
  plain ``ctx_len`` chunks: BOS appears wherever a document starts. When BOS and EOS are
  the same token, no separate EOS is added (BOS already separates documents).
* ``"none"``: no BOS at all (``d1 EOS d2 EOS ...`` chunks).

Empty documents are skipped. ``"bos"`` and ``"doc"`` need a tokenizer with a BOS token.

Sharding. Contexts are numbered ``0, 1, 2, ...`` in stream order (the *global* index).
``stream.shard(rank, world)`` keeps the contexts whose index is ``rank`` modulo ``world``:
the shards of one world are disjoint and together hold every context. Each shard still
tokenises the whole stream (tokenising is cheap next to a forward pass), which keeps the
numbering identical on every rank.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import MechscopeError

BOS_POLICIES = ("bos", "doc", "none")
"""Where BOS tokens go when packing (see the module docstring)."""


def _tokenizer_of(obj: Any) -> Any:
    """A tokenizer, or a HookedModel's tokenizer."""
    tok = getattr(obj, "tokenizer", None) if hasattr(obj, "hf_model") else obj
    if tok is None:
        raise MechscopeError("a token stream needs a tokenizer; this model was loaded without one")
    return tok


def _special(tokenizer: Any, bos: str) -> tuple[int | None, int | None]:
    if bos not in BOS_POLICIES:
        raise MechscopeError(f"BOS policy must be one of {', '.join(BOS_POLICIES)}, not {bos!r}")
    bos_id = getattr(tokenizer, "bos_token_id", None)
    eos_id = getattr(tokenizer, "eos_token_id", None)
    if bos != "none" and bos_id is None:
        raise MechscopeError(f"BOS policy {bos!r} needs a BOS token, and this tokenizer has none; use 'none'")
    return bos_id, eos_id


def _token_chunks(
    documents: Iterable[str], tokenizer: Any, bos: str, doc_batch: int = 32, doc_chars: int = 1 << 16
) -> Iterator[list[int]]:
    """The packed token stream, one document's tokens (with separators) at a time.

    Documents are tokenised in batches of up to ``doc_batch`` documents or ``doc_chars``
    characters (whichever comes first), so little is tokenised ahead of what is used.
    """
    bos_id, eos_id = _special(tokenizer, bos)
    lead: list[int] = [bos_id] if bos == "doc" and bos_id is not None else []
    tail: list[int] = [] if eos_id is None or (bos == "doc" and eos_id == bos_id) else [eos_id]
    pending: list[str] = []

    def flush() -> Iterator[list[int]]:
        ids = tokenizer(pending, add_special_tokens=False, verbose=False)["input_ids"]
        pending.clear()
        for x in ids:
            if x:
                yield [*lead, *x, *tail]

    chars = 0
    for doc in documents:
        if doc:
            pending.append(doc)
            chars += len(doc)
        if len(pending) >= doc_batch or chars >= doc_chars:
            yield from flush()
            chars = 0
    if pending:
        yield from flush()


def pack(documents: Iterable[str], tokenizer: Any, ctx_len: int, bos: str = "bos") -> Iterator[list[int]]:
    """Contexts of exactly ``ctx_len`` token ids, packed under the BOS policy ``bos``."""
    if ctx_len < 2:
        raise MechscopeError(f"ctx_len must be at least 2, not {ctx_len}")
    tokenizer = _tokenizer_of(tokenizer)
    bos_id, _ = _special(tokenizer, bos)
    head: list[int] = [bos_id] if bos == "bos" and bos_id is not None else []
    body = ctx_len - len(head)
    buf: list[int] = []
    pos = 0
    for chunk in _token_chunks(documents, tokenizer, bos):
        buf.extend(chunk)
        while len(buf) - pos >= body:
            yield [*head, *buf[pos : pos + body]]
            pos += body
        if pos > 1 << 16:  # drop consumed tokens now and then (bounded memory)
            del buf[:pos]
            pos = 0


@dataclass(frozen=True)
class TokenStream:
    """Documents packed into ``[ctx_len]`` contexts; deterministic, shardable, restartable.

    ``tokenizer`` is a HF tokenizer or a :class:`~mechscope.models.HookedModel` (its
    ``model.tokenizer`` is used).
    """

    documents: Iterable[str]
    """The documents (a :class:`~mechscope.data.Documents` or any re-iterable of strings)."""
    tokenizer: Any
    """A HF tokenizer, or a HookedModel whose tokenizer is used."""
    ctx_len: int = 128
    """Tokens per context."""
    bos: str = "bos"
    """BOS policy: bos (every context starts with BOS), doc (BOS at each document start) or none."""
    rank: int = 0
    """This shard: contexts whose global index is ``rank`` modulo ``world``."""
    world: int = 1
    """Number of shards."""

    def __post_init__(self) -> None:
        if iter(self.documents) is self.documents:  # type: ignore[comparison-overlap]
            raise MechscopeError(
                "a TokenStream needs re-iterable documents (a list, or a reader such as stdlib_documents()), "
                "not a one-shot iterator or generator: every pass and every shard reads them from the start"
            )
        object.__setattr__(self, "tokenizer", _tokenizer_of(self.tokenizer))
        _special(self.tokenizer, self.bos)
        if not 0 <= self.rank < self.world:
            raise MechscopeError(f"shard rank {self.rank} is outside 0..{self.world - 1}")

    @property
    def name(self) -> str:
        """The documents' name (``Documents.name``, else the type's name)."""
        return str(getattr(self.documents, "name", type(self.documents).__name__))

    def shard(self, rank: int, world: int) -> TokenStream:
        """Shard ``rank`` of ``world`` of this stream (shards of a shard compose)."""
        if not 0 <= rank < world:
            raise MechscopeError(f"shard rank {rank} is outside 0..{world - 1}")
        return TokenStream(
            self.documents, self.tokenizer, self.ctx_len, self.bos, self.rank + self.world * rank,
            self.world * world,
        )  # fmt: skip

    def contexts(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, list[int]]]:
        """``(global index, ids)`` of this shard's contexts with ``start <= index < stop``."""
        for i, ids in enumerate(pack(self.documents, self.tokenizer, self.ctx_len, self.bos)):
            if stop is not None and i >= stop:
                return
            if i >= start and i % self.world == self.rank:
                yield i, ids

    def __iter__(self) -> Iterator[Tensor]:
        """This shard's contexts, each ``[ctx_len]`` (long)."""
        for _, ids in self.contexts():
            yield torch.tensor(ids, dtype=torch.long)

    def batches(
        self, batch_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """``(index [b], tokens [b, ctx_len])`` batches of this shard's contexts in ``[start, stop)``.

        Every batch has ``batch_size`` contexts except possibly the last.
        """
        idx: list[int] = []
        rows: list[list[int]] = []
        for i, ids in self.contexts(start, stop):
            idx.append(i)
            rows.append(ids)
            if len(rows) == batch_size:
                yield torch.tensor(idx, dtype=torch.long), torch.tensor(rows, dtype=torch.long)
                idx, rows = [], []
        if rows:
            yield torch.tensor(idx, dtype=torch.long), torch.tensor(rows, dtype=torch.long)

    def take(self, n_ctx: int, start: int = 0) -> Tensor:
        """The first ``n_ctx`` contexts of this shard at global index ``>= start``, ``[n_ctx, ctx_len]``."""
        rows: list[list[int]] = []
        for _, ids in self.contexts(start):
            if len(rows) == n_ctx:
                break
            rows.append(ids)
        if len(rows) < n_ctx:
            raise MechscopeError(f"the stream {self.name!r} holds only {len(rows)} contexts, not {n_ctx}")
        return torch.tensor(rows, dtype=torch.long).reshape(n_ctx, self.ctx_len)

    def describe(self) -> dict[str, Any]:
        """What a store manifest records about the stream."""
        tok = self.tokenizer
        return {
            "source": self.name,
            "ctx_len": self.ctx_len,
            "bos": self.bos,
            "bos_token_id": getattr(tok, "bos_token_id", None),
            "eos_token_id": getattr(tok, "eos_token_id", None),
            "tokenizer": str(getattr(tok, "name_or_path", "")),
        }
