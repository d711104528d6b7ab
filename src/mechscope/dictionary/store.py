"""Activation store: harvest hook activations once, then serve shuffled batches to trainers.

Two modes (see ``docs/activation-store.md``):

* **disk**: :func:`harvest` writes sharded safetensors plus ``manifest.json``
  (:class:`DiskStore`); appendable, resumable after an interruption, checksummed,
  harvestable under ``torchrun`` with one slice of the token stream per rank;
* **streaming**: :class:`StreamingSource` runs the model on the fly through a bounded
  in-memory shuffle buffer.

Every source (also :class:`TensorSource` for tensors already in memory) implements the
trainer-facing protocol :class:`ActivationSource`: ``source.batches(batch_size, *, seed,
start=0, rank=0, world=1, hooks=None)`` yields ``{hook: [batch_size // world, d_hook]}``
float32 dicts; ``source.n_tokens``; ``source.d(hook)``. The exact contract is in
``store_source``'s docstring.
"""

from __future__ import annotations

from .store_disk import CorruptShardError, DiskStore, StoreError, StoreMismatchError
from .store_harvest import dist_info, forward_rows, harvest, hook_widths, stop_layer
from .store_mask import MaskConfig
from .store_source import ActivationSource, TensorSource
from .store_stream import StreamingSource

__all__ = [
    "ActivationSource",
    "CorruptShardError",
    "DiskStore",
    "MaskConfig",
    "StoreError",
    "StoreMismatchError",
    "StreamingSource",
    "TensorSource",
    "dist_info",
    "forward_rows",
    "harvest",
    "hook_widths",
    "stop_layer",
]
