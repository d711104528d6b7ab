"""The on-disk activation store: sharded safetensors plus ``manifest.json``.

Layout of a store directory::

    manifest.json                 settings, shard list (tokens, bytes, sha256), stream position
    shards/s0000-r000-00000.safetensors   one tensor per hook [n, d] + token metadata
    progress/rank-000.json        only while a harvest segment is in progress (see store_harvest)

Each shard holds, for its ``n`` rows, one tensor ``[n, d_hook]`` per hook (in the store's
dtype) and three metadata tensors: ``__context__`` ``[n]`` (int64, global context index in
the token stream), ``__position__`` ``[n]`` (int32, position in the context) and
``__token__`` ``[n]`` (int32, token id). Row ``i`` of every tensor in a shard is the same
token.

Integrity: opening a store checks that every shard exists and has the recorded size, and
reads each shard's safetensors header to check its tensors' names, shapes and dtypes.
Loading a shard checks its sha256 (``verify=True``, the default), and :meth:`DiskStore.verify`
checks them all. Every problem is a :class:`CorruptShardError` naming the shard.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from torch import Tensor

from .._fs import atomic_write_bytes, atomic_write_json
from .._version import __version__
from ..errors import ArtifactError
from .store_source import Batch, check_batch_args, shuffled_batches

FORMAT = "mechscope-activation-store"
SCHEMA_VERSION = 1
META_TENSORS = {"__context__": torch.int64, "__position__": torch.int32, "__token__": torch.int32}
"""Per-row token metadata stored in every shard beside the hooks' tensors."""
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_ST_DTYPE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32"}


class StoreError(ArtifactError):
    """An activation store is missing, incomplete, or does not match what was asked."""


class StoreMismatchError(StoreError):
    """Harvesting into an existing store with different settings."""


class CorruptShardError(StoreError):
    """A shard is missing, truncated, or its bytes do not match the manifest's checksum."""

    def __init__(self, problems: Sequence[str], root: Path) -> None:
        self.problems = list(problems)
        super().__init__(
            f"activation store {root}: {len(self.problems)} bad shard(s):\n  "
            + "\n  ".join(self.problems)
            + "\nRe-harvest into a fresh directory, or delete the bad shards' entries from the manifest."
        )


def shard_bytes(tensors: dict[str, Tensor], metadata: dict[str, str]) -> tuple[bytes, str]:
    """Serialise one shard; returns ``(bytes, sha256 hex)``.

    Keep ``metadata`` to one key: safetensors writes several in an arbitrary order, and the
    bytes (hence the checksum) of equal shards must be equal.
    """
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    return data, hashlib.sha256(data).hexdigest()


def write_shard(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> dict[str, Any]:
    """Write a shard atomically; returns its manifest entry (without bookkeeping fields)."""
    data, digest = shard_bytes(tensors, metadata)
    atomic_write_bytes(path, data)
    n = next(iter(tensors.values())).shape[0]
    return {"file": f"shards/{path.name}", "n_tokens": int(n), "bytes": len(data), "sha256": digest}


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (raises ValueError if it cannot be parsed)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise ValueError(f"header length {n} is not plausible")
        raw = f.read(n)
        if len(raw) < n:
            raise ValueError("header is truncated")
    return json.loads(raw)


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the store at ``root`` (StoreError if absent or not a store)."""
    path = root / "manifest.json"
    if not path.is_file():
        raise StoreError(f"{root} is not an activation store (no manifest.json)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StoreError(f"{path} is not valid JSON: {e}") from None
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{path} is not an activation-store manifest (format {manifest.get('format')!r})")
    if manifest.get("schema_version", 0) > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema {manifest['schema_version']}; this mechscope reads {SCHEMA_VERSION}"
        )
    return manifest


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically, with the totals recomputed from the shard list."""
    manifest["n_tokens"] = sum(s["n_tokens"] for s in manifest["shards"])
    manifest["mechscope_version"] = __version__
    atomic_write_json(root / "manifest.json", manifest)


class DiskStore:
    """A harvested activation store on disk; implements the trainer's batch protocol.

    ``window_tokens`` bounds memory while shuffling: ``batches`` holds at most one window
    (shards totalling about ``window_tokens`` rows, per hook asked for) at a time.
    """

    def __init__(self, root: str | Path, *, verify: bool = True, window_tokens: int = 1 << 17) -> None:
        self.root = Path(root)
        """The store directory."""
        self.manifest = read_manifest(self.root)
        """The parsed ``manifest.json``."""
        self.verify_checksums = verify
        """Check each shard's sha256 when loading it."""
        self.window_tokens = window_tokens
        """Rows per shuffle window (memory bound of ``batches``)."""
        self._check_files()

    # ----------------------------------------------------------------- description

    @property
    def settings(self) -> dict[str, Any]:
        """How the store was harvested (model, hooks, widths, dtype, stream, masks)."""
        return dict(self.manifest["settings"])

    @property
    def hooks(self) -> tuple[str, ...]:
        """The hooks held, in harvest order."""
        return tuple(self.manifest["settings"]["hooks"])

    @property
    def n_tokens(self) -> int:
        """Rows per hook (tokens kept after masking), summed over the manifest's shard list."""
        return sum(int(s["n_tokens"]) for s in self.manifest["shards"])

    @property
    def n_shards(self) -> int:
        """Number of shards."""
        return len(self.manifest["shards"])

    @property
    def dtype(self) -> torch.dtype:
        """Storage dtype (``batches`` always returns float32)."""
        return DTYPES[self.manifest["settings"]["dtype"]]

    def d(self, hook: str) -> int:
        """Width of ``hook``'s rows."""
        widths = self.manifest["settings"]["d"]
        if hook not in widths:
            raise StoreError(f"hook {hook!r} is not in the store {self.root} (it holds {list(widths)})")
        return int(widths[hook])

    def __repr__(self) -> str:
        return f"DiskStore({str(self.root)!r}, hooks={list(self.hooks)}, n_tokens={self.n_tokens}, shards={self.n_shards})"

    # ----------------------------------------------------------------- integrity

    def _expected_header(self, entry: dict[str, Any]) -> dict[str, tuple[str, list[int]]]:
        s = self.manifest["settings"]
        n = entry["n_tokens"]
        want = {h: (_ST_DTYPE[s["dtype"]], [n, int(s["d"][h])]) for h in s["hooks"]}
        want.update({k: (_ST_DTYPE[str(dt).removeprefix("torch.")], [n]) for k, dt in META_TENSORS.items()})
        return want

    def _check_files(self) -> None:
        problems = []
        for entry in self.manifest["shards"]:
            path = self.root / entry["file"]
            if not path.is_file():
                problems.append(f"{entry['file']}: missing")
                continue
            size = path.stat().st_size
            if size != entry["bytes"]:
                problems.append(
                    f"{entry['file']}: {size} bytes on disk, the manifest records {entry['bytes']}"
                )
                continue
            try:
                header = read_header(path)
            except (ValueError, UnicodeDecodeError) as e:
                problems.append(f"{entry['file']}: unreadable safetensors header ({e})")
                continue
            try:
                got = {k: (v["dtype"], v["shape"]) for k, v in header.items() if k != "__metadata__"}
            except (KeyError, TypeError, AttributeError):
                problems.append(f"{entry['file']}: unreadable safetensors header (not a tensor table)")
                continue
            if got != self._expected_header(entry):
                problems.append(f"{entry['file']}: tensors {got} differ from the manifest's hooks and shapes")
        if problems:
            raise CorruptShardError(problems, self.root)

    def _read(self, i: int) -> bytes:
        entry = self.manifest["shards"][i]
        path = self.root / entry["file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CorruptShardError([f"{entry['file']}: missing"], self.root) from None
        if len(data) != entry["bytes"]:
            raise CorruptShardError(
                [f"{entry['file']}: {len(data)} bytes on disk, the manifest records {entry['bytes']}"],
                self.root,
            )
        if self.verify_checksums:
            digest = hashlib.sha256(data).hexdigest()
            if digest != entry["sha256"]:
                raise CorruptShardError(
                    [
                        f"{entry['file']}: sha256 {digest[:16]}... differs from the manifest's {entry['sha256'][:16]}..."
                    ],
                    self.root,
                )
        return data

    def verify(self) -> None:
        """Check every shard's size and sha256; raise :class:`CorruptShardError` naming all bad ones."""
        problems = []
        for i in range(self.n_shards):
            try:
                self._read(i)
            except CorruptShardError as e:
                problems.extend(e.problems)
        if problems:
            raise CorruptShardError(problems, self.root)

    # ----------------------------------------------------------------- reading

    def shard(self, i: int, hooks: Sequence[str] | None = None, *, meta: bool = False) -> dict[str, Tensor]:
        """Shard ``i`` as stored: ``{hook: [n, d]}`` in the store dtype (plus token metadata if ``meta``)."""
        tensors = st_load(self._read(i))
        keep = list(self.hooks if hooks is None else hooks) + (list(META_TENSORS) if meta else [])
        return {k: tensors[k] for k in keep}

    def tensors(self, hooks: Sequence[str] | None = None, *, meta: bool = False) -> dict[str, Tensor]:
        """Every row in shard order, ``{hook: [n_tokens, d]}`` (loads the whole store: small stores only)."""
        parts = [self.shard(i, hooks, meta=meta) for i in range(self.n_shards)]
        keys = list(self.hooks if hooks is None else hooks) + (list(META_TENSORS) if meta else [])
        if not parts:
            return {k: torch.empty(0) for k in keys}
        return {k: torch.cat([p[k] for p in parts]) for k in keys}

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
        """``{hook: [batch_size // world, d]}`` float32 batches, shuffled across shards, endless.

        See ``store_source``'s docstring for the exact contract (epochs, ``start``, ranks).
        """
        wanted = check_batch_args(batch_size, rank, world, hooks, self.hooks)
        sizes = [int(s["n_tokens"]) for s in self.manifest["shards"]]
        return shuffled_batches(
            sizes,
            lambda i, hs: self.shard(i, hs),
            wanted,
            batch_size,
            seed=seed,
            start=start,
            rank=rank,
            world=world,
            window_tokens=self.window_tokens,
        )
