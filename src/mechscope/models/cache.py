"""The activations recorded by :meth:`HookedModel.run_with_cache`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from .names import SITES, hook_name, parse
from .tokens import TokenBatch


class ActivationCache(Mapping[str, Tensor]):
    """A read-only mapping from hook name to the tensor recorded there.

    ``cache["blocks.3.hook_resid_pre"]`` and ``cache["resid_pre", 3]`` are the same entry.
    Entries are detached views of the live activations, not copies: a hook that edits a
    tensor in place later in the same run is visible here.
    """

    def __init__(
        self, data: dict[str, Tensor], batch: TokenBatch | None, known: list[str], n_layers: int
    ) -> None:
        self._data = data
        self._known = known
        self.n_layers = n_layers
        """Number of blocks of the model that produced the cache."""
        self.batch = batch
        """The tokens and attention mask of the run (None if unknown)."""

    @property
    def tokens(self) -> Tensor | None:
        """Token ids of the run, ``[batch pos]``."""
        return None if self.batch is None else self.batch.tokens

    @property
    def attention_mask(self) -> Tensor | None:
        """1 at real tokens, 0 at padding, ``[batch pos]``."""
        return None if self.batch is None else self.batch.attention_mask

    def _key(self, key: Any) -> str:
        if isinstance(key, tuple):
            return hook_name(*key)
        return key

    def __getitem__(self, key: Any) -> Tensor:
        name = self._key(key)
        try:
            return self._data[name]
        except KeyError:
            raise KeyError(self._missing(name)) from None

    def _missing(self, name: str) -> str:
        if name not in self._known:
            from .names import suggest

            return str(suggest(name, self._known, self.n_layers))
        _, suffix = parse(name)
        msg = f"{name!r} was not recorded in this run"
        if SITES[suffix].on_demand:
            msg += f"; {suffix} is computed on demand, so name it explicitly in run_with_cache(names=[...])"
        return msg

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def _repr_html_(self) -> str:
        """A table of the entries and an attention widget per cached pattern, in Jupyter."""
        from ..viz.results import cache

        return cache(self)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self)} entries: {', '.join(list(self._data)[:4])}{', ...' if len(self) > 4 else ''})"

    def stack(self, site: str) -> Tensor:
        """One per-block site across all blocks: ``[layer, *shape]``, e.g. ``stack("resid_pre")``."""
        return torch.stack([self[site, layer] for layer in range(self.n_layers)])

    def accumulated_resid(self) -> Tensor:
        """The residual stream before each block and after the last: ``[n_layers + 1, batch, pos, d_model]``.

        Needs every ``hook_resid_pre`` and the last ``hook_resid_post`` in the cache.
        """
        return torch.stack(
            [*(self["resid_pre", i] for i in range(self.n_layers)), self["resid_post", self.n_layers - 1]]
        )

    def to(self, device: torch.device | str) -> ActivationCache:
        """A copy of the cache with every tensor on ``device``."""
        data = {k: v.to(device) for k, v in self._data.items()}
        return ActivationCache(data, self.batch, self._known, self.n_layers)
