"""``mechscope harvest``: activations of one or several hooks, from a token source to a disk store.

1. Load the model; open the documents (``source``) and pack them into ``ctx_len`` contexts
   under the BOS policy (``mechscope.data``).
2. Under ``torchrun`` (``WORLD_SIZE > 1``) join the process group (gloo on CPU, NCCL on
   CUDA, one GPU per local rank) unless the caller already did.
3. Harvest every hook in one forward pass per batch, stopped at the deepest hook, into the
   store ``out`` (``mechscope.dictionary.store.harvest``): a new store, or the resumption /
   extension of an existing one with the same settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import TokenStream, open_documents
from ..dictionary.store import DiskStore, MaskConfig, harvest
from ..models import DEFAULT_MODEL, load_model


@dataclass(frozen=True)
class HarvestConfig:
    """What ``mechscope harvest`` runs."""

    model: str = DEFAULT_MODEL
    """Model: a built-in name, a .gguf file, a local HF directory or a hub id."""
    hooks: tuple[str, ...] = ("blocks.15.hook_resid_pre",)
    """Hook names to harvest, all in one forward pass (e.g. an input/output pair for a transcoder)."""
    source: str = "stdlib"
    """Documents: stdlib (the offline corpus), a text file or directory, .jsonl, .parquet, or a saved HF dataset directory."""
    text_field: str = "text"
    """JSONL field / Parquet or dataset column holding the text."""
    split: str | None = None
    """Split of a saved DatasetDict (needed when it has several)."""
    ctx_len: int = 128
    """Tokens per context."""
    n_tokens: int = 1_000_000
    """Stream tokens to read in total (a rerun continues up to this; a larger value extends the store)."""
    batch_size: int = 32
    """Contexts per forward pass."""
    bos_policy: str = "bos"
    """bos: every context starts with BOS; doc: BOS at each document start; none: no BOS."""
    mask_bos: bool = True
    """Leave BOS tokens out of the store."""
    mask_special: bool = False
    """Leave every special token (BOS, EOS, PAD, ...) out of the store."""
    outlier_factor: float | None = None
    """Leave out tokens whose norm at any hook exceeds this multiple of their context's median norm."""
    out: Path = Path("runs/activations")
    """Store directory (created, resumed or extended)."""
    shard_tokens: int = 65536
    """Rows per shard (a shard ends at the first forward-batch boundary past this)."""
    dtype: str = "float32"
    """Storage dtype: float32, bfloat16 or float16 (batches are always served as float32)."""
    device: str | None = None
    """Device for the model (default: CUDA when available, else CPU; under torchrun, cuda:LOCAL_RANK)."""
    progress_bar: bool = True
    """Show a tqdm progress bar (rank 0 only)."""


def _init_distributed(device: str | None) -> tuple[bool, str | None]:
    """Join the torchrun process group if launched by torchrun; returns (joined here, device)."""
    dist = torch.distributed
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False, device
    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True, device or "cpu"


def run_harvest(config: HarvestConfig, progress: Callable[[str], None] | None = None) -> DiskStore:
    """Run the harvest described by ``config``; returns the (complete) store."""
    say = progress or (lambda _msg: None)
    joined, device = _init_distributed(config.device)
    try:
        say(f"loading {config.model}")
        model = load_model(config.model, device=device)
        docs = open_documents(config.source, field=config.text_field, split=config.split)
        stream = TokenStream(docs, model, ctx_len=config.ctx_len, bos=config.bos_policy)
        mask = MaskConfig(
            bos=config.mask_bos, special=config.mask_special, outlier_factor=config.outlier_factor
        )
        say(f"harvesting {', '.join(config.hooks)} from {docs.name} into {config.out}")
        store = harvest(
            model, stream, config.hooks, config.out, n_tokens=config.n_tokens, batch_size=config.batch_size,
            mask=mask, shard_tokens=config.shard_tokens, dtype=config.dtype, progress=config.progress_bar,
        )  # fmt: skip
        say(f"{store.n_tokens} rows in {store.n_shards} shards")
        return store
    finally:
        if joined:
            torch.distributed.destroy_process_group()
