"""Suffix runs: recompute only the layers and positions a patch can change.

A variant whose patches first change anything at block ``L`` and position ``p`` (see
``sites.first_changed``) sees exactly the target run's activations before block ``L`` and
at positions ``< p``. A suffix run therefore

1. takes the target run's ``resid_pre`` of block ``L`` at positions ``p..`` as input;
2. runs blocks ``L..`` on positions ``p..`` only, attending to the target run's own keys
   and values for positions ``< p`` (a read-only prefix cache);
3. unembeds the last position.

Variants are stacked variant-major; a variant joins the batch at its own first block, so
one pass serves every start layer. The masks and rotary embeddings each block needs are
HF's own, built by running the model's forward on the suffix with a prefix cache of length
``p`` and recording what it passes to each block (``HookedModel.block_inputs``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor
from transformers import DynamicCache

from ..models import HookedModel, TokenBatch
from ..models.adapters import get_path
from ..models.runtime import RunState, finish_block
from ..tasks.metrics import scatter_logits
from .sites import Variant, first_changed, local_index

_POST_ATTENTION = ("attn.hook_z", "hook_attn_out")
_LATE_SITES = {
    "hook_attn_out",
    "hook_resid_mid",
    "hook_mlp_in",
    "ln2.hook_normalized",
    "hook_mlp_out",
    "hook_resid_post",
}


def _writes_late(variants: Sequence[Variant], last: int) -> bool:
    """Whether a patch writes a site of the final block after its attention (then no trimming)."""
    return any(
        p.layer == last and (p.name.split(".", 2)[2] in _LATE_SITES or ".mlp." in p.name)
        for v in variants
        for p in v
    )


class PrefixKV:
    """A read-only stand-in for an HF cache: prepends fixed keys/values for positions ``< p``."""

    def __init__(self, keys: list[Tensor], values: list[Tensor], rows: int) -> None:
        self.keys, self.values, self.rows = keys, values, rows  # per layer [n kv_head p d_head]

    def update(
        self, key: Tensor, value: Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        """Keys and values of positions ``< p`` followed by the new ones (nothing is stored)."""
        reps = key.shape[0] // self.keys[layer_idx].shape[0]
        k = self.keys[layer_idx].repeat(reps, 1, 1, 1)
        v = self.values[layer_idx].repeat(reps, 1, 1, 1)
        return torch.cat([k, key], dim=2), torch.cat([v, value], dim=2)


class SuffixRunner:
    """Runs variant-major batches of patched suffixes against one target run."""

    def __init__(
        self, model: HookedModel, target: TokenBatch, source: Mapping[str, Tensor], base: Mapping[str, Tensor]
    ) -> None:
        """``base``: the target run's ``hook_resid_pre``, ``hook_k`` and ``hook_v`` of every block,
        and its activations at every patched site."""
        self.model, self.target, self.source, self.base = model, target, source, base
        self._inputs: dict[int, list[tuple[tuple[Any, ...], dict[str, Any]]]] = {}
        self._cache_marker: dict[int, Any] = {}

    def start_of(self, variant: Variant) -> tuple[int, int] | str | None:
        """``(first block, first position)`` the variant changes; None if it changes nothing;
        ``"full"`` if it patches a site outside the blocks (then it needs a full forward)."""
        layer, pos = None, None
        for patch in variant:
            if patch.layer is None:
                return "full"
            first = first_changed(patch, self.source[patch.name], self.base[patch.name])
            if first is None:
                continue
            layer = patch.layer if layer is None else min(layer, patch.layer)
            pos = first if pos is None else min(pos, first)
        if layer is None or pos is None:
            return None
        return layer, pos

    def entry_of(self, variant: Variant, layer: int) -> str:
        """Where the variant can join block ``layer``: ``"block"`` (its input), or after attention
        (``"attn.hook_z"`` / ``"hook_attn_out"``) when every patch there is at that one site.

        Joining after attention skips the block's attention for that variant; it is used only
        when no hooks other than the patches are in force (the rest of that block then runs
        without hooks).
        """
        sites = {p.name.split(".", 2)[2] for p in variant if p.layer == layer}
        if len(sites) == 1 and (site := sites.pop()) in _POST_ATTENTION and not self.model._rt.state.fwd:
            return site
        return "block"

    def run(
        self,
        variants: Sequence[Variant],
        starts: Sequence[tuple[int, str]],
        pos: int,
        token_ids: Tensor | None = None,
    ) -> Tensor:
        """Final-position logits ``[len(variants) * n, d_vocab]``.

        ``starts`` gives each variant's first block and entry (``entry_of``), sorted by block
        and then by entry order (block input first). With ``token_ids`` only those logits are
        computed (the rest are -inf).
        """
        from .patching import patch_hooks

        n = self.target.tokens.shape[0]
        inputs, prefix, marker = self._block_inputs(pos), self._prefix(pos), self._cache_marker.get(pos)
        state = self.model._state(patch_hooks(variants, self.source, n, offset=pos))
        state = replace(state, trim_final_block=not _writes_late(variants, self.model.cfg.n_layers - 1))
        hidden: Tensor | None = None
        with self.model._rt.active(state):
            for layer in range(starts[0][0], self.model.cfg.n_layers):
                here = [(i, entry) for i, (start, entry) in enumerate(starts) if start == layer]
                fresh = sum(1 for _, entry in here if entry == "block")
                if fresh:
                    rows = self.base[f"blocks.{layer}.hook_resid_pre"][:, pos:].repeat(
                        fresh, 1, 1
                    )  # [fresh*n q d]
                    hidden = rows if hidden is None else torch.cat([hidden, rows])
                if hidden is not None:
                    k = hidden.shape[0] // n
                    args, kwargs = (_expand(x, k, n, marker, prefix) for x in inputs[layer])
                    hidden = self.model.blocks[layer](hidden, *args, **kwargs)
                for site in _POST_ATTENTION:
                    group = [variants[i] for i, entry in here if entry == site]
                    if group:
                        rows = self._after_attention(group, layer, site, pos, state.trim_final_block)
                        hidden = rows if hidden is None else torch.cat([hidden, rows])
        assert hidden is not None
        if token_ids is None:
            return self.model.unembed(hidden[:, -1])
        return scatter_logits(self.model.unembed(hidden[:, -1], token_ids), token_ids, self.model.cfg.d_vocab)

    def _after_attention(self, group: list[Variant], layer: int, site: str, pos: int, trim: bool) -> Tensor:
        """``resid_post`` of block ``layer`` for variants joining after its attention, ``[k*n q d]``."""
        n, k = self.target.tokens.shape[0], len(group)
        value = self.base[f"blocks.{layer}.{site}"][:, pos:]
        value = value.repeat(k, *([1] * (value.dim() - 1)))
        for slot, variant in enumerate(group):
            for patch in variant:
                loc = local_index(patch, value.dim() - 1, pos)
                if loc is not None:
                    tgt, src = loc
                    value[slot * n : (slot + 1) * n][tgt] = self.source[patch.name][src].to(value.dtype)
        resid_pre = self.base[f"blocks.{layer}.hook_resid_pre"][:, pos:].repeat(k, 1, 1)
        with self.model._rt.active(RunState(trim_final_block=trim)):  # only this group's patches apply here
            if site == "hook_attn_out":
                return finish_block(self.model._rt, layer, resid_pre, value, normed=True)
            o_proj = get_path(
                self.model.blocks[layer], f"{self.model.adapter.attn}.{self.model.adapter.o_proj}"
            )
            return finish_block(self.model._rt, layer, resid_pre, o_proj(value.flatten(-2)))

    def _block_inputs(self, pos: int) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """HF's per-block arguments for the suffix ``pos..`` after a prefix of length ``pos``."""
        if pos in self._inputs:
            return self._inputs[pos]
        t = self.target
        kwargs: dict[str, Any] = {"input_ids": t.tokens[:, pos:], "use_cache": pos > 0}
        if t.is_padded:
            kwargs.update(attention_mask=t.attention_mask, position_ids=t.position_ids[:, pos:])
        if pos > 0:
            cache = DynamicCache()
            c = self.model.cfg
            for layer in range(c.n_layers):
                empty = torch.zeros(t.tokens.shape[0], c.n_kv_heads, pos, c.d_head, device=t.tokens.device)
                cache.update(empty, empty, layer)
            kwargs["cache"] = cache
            self._cache_marker[pos] = cache
        self._inputs[pos] = self.model.block_inputs(**kwargs)
        return self._inputs[pos]

    def _prefix(self, pos: int) -> PrefixKV | None:
        if pos == 0:
            return None
        n_layers = self.model.cfg.n_layers
        keys = [self.base[f"blocks.{i}.attn.hook_k"][:, :pos].transpose(1, 2) for i in range(n_layers)]
        values = [self.base[f"blocks.{i}.attn.hook_v"][:, :pos].transpose(1, 2) for i in range(n_layers)]
        return PrefixKV(keys, values, self.target.tokens.shape[0])


def _expand(obj: Any, k: int, n: int, cache: Any, prefix: PrefixKV | None) -> Any:
    """Tile batch-``n`` tensors to ``k * n`` rows (variant-major); swap the capture cache for the prefix."""
    if cache is not None and obj is cache:
        return prefix
    if isinstance(obj, Tensor):
        return obj.repeat(k, *([1] * (obj.dim() - 1))) if obj.dim() and obj.shape[0] == n and n > 1 else obj
    if isinstance(obj, tuple):
        return tuple(_expand(x, k, n, cache, prefix) for x in obj)
    if isinstance(obj, list):
        return [_expand(x, k, n, cache, prefix) for x in obj]
    if isinstance(obj, dict):
        return {key: _expand(x, k, n, cache, prefix) for key, x in obj.items()}
    return obj
