"""Harvesting activations into a :class:`~mechscope.dictionary.store.DiskStore`.

1. Every requested hook is recorded in ONE forward pass per batch of contexts, and the pass
   stops right after the deepest hook (``run_with_cache(..., stop_at_layer=L,
   return_logits=False)``; a ``blocks.L.hook_resid_pre`` costs blocks ``< L`` only).
   Activations ``[b, pos, ...]`` become rows ``[b * pos, d]`` (trailing dims flattened, so
   ``attn.hook_z`` rows are ``head * d_head`` wide); the keep-mask (``store_mask``) drops
   the same rows from every hook.
2. Rows accumulate in memory until at least ``shard_tokens`` are held, then go to disk as
   one shard (written atomically, sha256 recorded), so memory stays below
   ``shard_tokens + batch_size * ctx_len`` rows per hook whatever the dataset size.
3. Work is organised in *segments*: contexts ``[c0, c1)`` of the global token stream, where
   ``c0`` is the store's ``contexts_done`` and ``c1 = ceil(n_tokens / ctx_len)``. Rank ``r``
   of ``world`` harvests the contexts with index ``r`` modulo ``world``
   (``TokenStream.shard``) and records, after every shard, its shard list and the next
   context to read in ``progress/rank-r.json``.
4. When every rank has finished the segment (a barrier under ``torch.distributed``), rank 0
   merges the ranks' shard lists into ``manifest.json`` and sets ``contexts_done = c1``.

Resume and append are the same operation: harvesting into an existing store first checks
that the settings match (else :class:`StoreMismatchError` naming the differences), finishes
a segment left unfinished (each rank continues after its last completed shard, so the
result equals an uninterrupted run), then harvests a new segment up to ``n_tokens``.
A finished store with ``n_tokens`` already reached is left as it is.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._fs import atomic_write_json
from ..data import TokenStream
from ..errors import MechscopeError
from ..models import HookedModel
from ..models.names import parse
from .store_disk import (
    DTYPES,
    FORMAT,
    SCHEMA_VERSION,
    DiskStore,
    StoreError,
    StoreMismatchError,
    read_manifest,
    write_manifest,
    write_shard,
)
from .store_mask import MaskConfig, keep_mask, special_ids

OnShard = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------- model side


def hook_widths(model: HookedModel, hooks: Sequence[str]) -> dict[str, int]:
    """Row width of each hook (its trailing dims multiplied); rejects non-token hooks."""
    widths = {}
    for h in hooks:
        dims = model.hook_info(h).shape.split()
        if len(dims) < 3 or dims[1] != "pos":
            raise MechscopeError(
                f"{h} ({' '.join(dims)}) is not one vector per token; it cannot be harvested"
            )
        widths[h] = math.prod(int(d.split("=")[1]) for d in dims[2:])
    return widths


def stop_layer(model: HookedModel, hooks: Sequence[str]) -> int:
    """The ``stop_at_layer`` that computes ``hooks`` and nothing after them."""
    stops = []
    for h in hooks:
        layer, site = parse(h)
        if layer is None:
            stops.append(model.cfg.n_layers if site.startswith("ln_final") else 0)
        else:
            stops.append(layer if site == "hook_resid_pre" else layer + 1)
    return max(stops)


def forward_rows(
    model: HookedModel,
    tokens: Tensor,
    index: Tensor,
    hooks: Sequence[str],
    *,
    stop: int,
    mask: MaskConfig,
    drop_ids: list[int],
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """One forward pass over ``tokens`` ``[b, pos]``: kept rows ``{hook: [n, d]}`` plus token metadata.

    ``index`` ``[b]`` holds the contexts' global indices (stored as ``__context__``).
    """
    _, cache = model.run_with_cache(tokens, names=list(hooks), stop_at_layer=stop, return_logits=False)
    b, pos = tokens.shape
    acts = {h: cache[h].reshape(b, pos, -1) for h in hooks}
    keep = keep_mask(tokens.to(model.device), acts, mask, drop_ids).reshape(-1).cpu()
    rows = {h: x.reshape(b * pos, -1)[keep.to(x.device)].to("cpu", dtype) for h, x in acts.items()}
    rows["__context__"] = index.repeat_interleave(pos)[keep]
    rows["__position__"] = torch.arange(pos, dtype=torch.int32).repeat(b)[keep]
    rows["__token__"] = tokens.cpu().reshape(-1).to(torch.int32)[keep]
    return rows


# --------------------------------------------------------------------- distributed


def dist_info() -> tuple[int, int]:
    """``(rank, world)`` of the initialised ``torch.distributed`` group, else ``(0, 1)``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


# --------------------------------------------------------------------- store side


def harvest_settings(
    model: HookedModel, stream: TokenStream, hooks: Sequence[str], mask: MaskConfig, dtype: str
) -> dict[str, Any]:
    """Everything two harvests must share to write into one store."""
    if dtype not in DTYPES:
        raise MechscopeError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if len(set(hooks)) != len(hooks) or not hooks:
        raise MechscopeError(f"hooks must be a non-empty list without repeats, got {list(hooks)}")
    return {
        "model": model.cfg.name,
        "hooks": list(hooks),
        "d": hook_widths(model, hooks),
        "dtype": dtype,
        **stream.describe(),
        "masks": mask.as_dict(),
    }


def _open(root: Path, settings: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    """Create the store (rank 0) or check an existing one's settings; return its manifest."""
    if rank == 0 and not (root / "manifest.json").exists():
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        manifest: dict[str, Any] = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "created": now, "settings": settings,
                    "shards": [], "segments": [], "contexts_done": 0, "exhausted": False}  # fmt: skip
        write_manifest(root, manifest)
    _barrier(world)
    manifest = read_manifest(root)
    old: dict[str, Any] = manifest["settings"]
    settings = json.loads(json.dumps(settings))  # compare as stored (tuples become lists)
    diff = [f"{k}: store has {old.get(k)!r}, asked {settings.get(k)!r}"
            for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]  # fmt: skip
    if diff:
        raise StoreMismatchError(
            f"{root} was harvested with different settings; harvest into a new directory or match them:\n  "
            + "\n  ".join(diff)
        )
    return manifest


def _progress_path(root: Path, rank: int) -> Path:
    return root / "progress" / f"rank-{rank:03d}.json"


def _rank_state(root: Path, manifest: dict[str, Any], rank: int, world: int, target: int) -> dict | None:
    """This rank's work in the current segment (resumed or new), or None if the store is complete."""
    c0 = manifest["contexts_done"]
    path = _progress_path(root, rank)
    if path.exists():
        state = json.loads(path.read_text())
        if state["segment"][0] == c0:  # unfinished segment: resume it
            if state["world"] != world:
                raise StoreError(
                    f"{root} has a harvest segment interrupted with {state['world']} processes; "
                    f"resume it with the same number of processes (now {world})"
                )
            return state
        if state["segment"][1] <= c0:  # left over from a segment already merged
            path.unlink(missing_ok=True)
    if c0 >= target or manifest.get("exhausted"):
        return None
    seg = len(manifest["segments"])
    return {"segment": [c0, target], "world": world, "index": seg, "next": c0, "shards": [], "rows": 0}


def _merge(root: Path, manifest: dict[str, Any], world: int, seg: list[int]) -> dict[str, Any]:
    """Rank 0: fold every rank's finished segment into the manifest."""
    states = [json.loads(_progress_path(root, r).read_text()) for r in range(world)]
    for r, s in enumerate(states):
        if s["segment"] != seg or s["next"] != seg[1]:
            raise StoreError(f"rank {r} did not finish the segment {seg} of {root}")
    for s in states:
        manifest["shards"].extend(s["shards"])
    manifest["segments"].append({"contexts": seg, "world": world})
    manifest["contexts_done"] = seg[1]
    manifest["exhausted"] = any(s.get("exhausted") for s in states)
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_manifest(root, manifest)
    for r in range(world):
        _progress_path(root, r).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (root / "progress").rmdir()
    return manifest


class _ShardBuffer:
    """Rows waiting to be written as the next shard of one rank's segment."""

    def __init__(self, root: Path, state: dict[str, Any], rank: int, meta: dict[str, str]) -> None:
        self.root, self.state, self.rank, self.meta = root, state, rank, meta
        self.parts: list[dict[str, Tensor]] = []
        self.held = 0
        """Rows held in memory (the memory bound is on this)."""

    def add(self, rows: dict[str, Tensor]) -> None:
        self.parts.append(rows)
        self.held += len(rows["__context__"])

    def flush(self, next_ctx: int, on_shard: OnShard | None) -> None:
        """Write the held rows as a shard (if any) and record that contexts ``< next_ctx`` are done."""
        st = self.state
        entry = None
        if self.held:
            tensors = {k: torch.cat([p[k] for p in self.parts]) for k in self.parts[0]}
            name = f"s{st['index']:04d}-r{self.rank:03d}-{len(st['shards']):05d}.safetensors"
            entry = write_shard(self.root / "shards" / name, tensors, self.meta)
            entry.update(rank=self.rank, segment=st["index"])
            entry["contexts"] = [int(tensors["__context__"].min()), int(tensors["__context__"].max())]
            st["shards"].append(entry)
            st["rows"] += self.held
        self.parts, self.held = [], 0
        st["next"] = next_ctx
        atomic_write_json(_progress_path(self.root, self.rank), st)
        if entry is not None and on_shard is not None:
            on_shard(entry)


def _run_segment(
    model: HookedModel, stream: TokenStream, hooks: Sequence[str], root: Path, state: dict[str, Any],
    rank: int, world: int, *, batch_size: int, shard_tokens: int, mask: MaskConfig, dtype: str,
    progress: bool, on_shard: OnShard | None,
) -> None:  # fmt: skip
    """Harvest this rank's contexts of the segment, from ``state['next']`` on."""
    c1 = state["segment"][1]
    todo = len(range(state["next"] + (rank - state["next"]) % world, c1, world))
    buf = _ShardBuffer(root, state, rank, {"format": FORMAT})
    kwargs: dict[str, Any] = dict(stop=stop_layer(model, hooks), mask=mask, dtype=DTYPES[dtype],
                                  drop_ids=special_ids(stream.tokenizer, mask))  # fmt: skip
    seen = 0
    bar = tqdm(total=todo * stream.ctx_len, unit="tok", unit_scale=True, desc="harvest",
               disable=not progress or rank != 0, dynamic_ncols=True)  # fmt: skip
    with bar:
        for index, tokens in stream.shard(rank, world).batches(batch_size, start=state["next"], stop=c1):
            buf.add(forward_rows(model, tokens.to(model.device), index, hooks, **kwargs))
            seen += len(index)
            bar.update(tokens.numel())
            if buf.held >= shard_tokens:
                buf.flush(int(index[-1]) + 1, on_shard)
    if seen < todo:
        state["exhausted"] = True
        warnings.warn(f"the token stream {stream.name!r} ended before context {c1}", stacklevel=3)
    buf.flush(c1, on_shard)


def harvest(
    model: HookedModel,
    stream: TokenStream,
    hooks: Sequence[str],
    out: str | Path,
    *,
    n_tokens: int,
    batch_size: int = 32,
    mask: MaskConfig | None = None,
    shard_tokens: int = 1 << 16,
    dtype: str = "float32",
    progress: bool = True,
    on_shard: OnShard | None = None,
) -> DiskStore:
    """Harvest ``hooks`` over the first ``n_tokens`` tokens of ``stream`` into the store ``out``.

    ``stream`` is the whole (unsharded) token stream; under ``torch.distributed`` each rank
    harvests its shard of it into the same directory (see the module docstring). Creates the
    store, or resumes / appends to an existing one with the same settings. ``n_tokens``
    counts stream tokens read (``ceil(n_tokens / ctx_len)`` contexts), masked ones included;
    the store's ``n_tokens`` counts rows kept. ``batch_size`` is contexts per forward pass.
    ``on_shard(entry)`` is called after each shard is written and recorded.
    """
    if batch_size < 1 or shard_tokens < 1 or n_tokens < 1:
        raise MechscopeError("batch_size, shard_tokens and n_tokens must be positive")
    mask = mask or MaskConfig()
    hooks = list(hooks)
    rank, world = dist_info()
    root = Path(out)
    settings = harvest_settings(model, stream, hooks, mask, dtype)
    target = math.ceil(n_tokens / stream.ctx_len)
    manifest = _open(root, settings, rank, world)
    while (state := _rank_state(root, manifest, rank, world, target)) is not None:
        _run_segment(model, stream, hooks, root, state, rank, world, batch_size=batch_size,
                     shard_tokens=shard_tokens, mask=mask, dtype=dtype, progress=progress,
                     on_shard=on_shard)  # fmt: skip
        _barrier(world)
        if rank == 0:
            _merge(root, manifest, world, state["segment"])
        _barrier(world)
        manifest = read_manifest(root)
    return DiskStore(root)
