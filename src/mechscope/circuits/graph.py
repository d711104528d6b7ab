"""The computational graph of a transformer for circuit discovery.

Nodes are the components that write into the residual stream: ``input`` (token plus position
embeddings), the attention heads ``a{L}.h{H}`` and the MLPs ``m{L}``; plus ``logits``, which
only reads. Every upstream node writes into every downstream *receiver*, so edges follow the
residual stream. Receivers, in topological order within layer ``L``:

* ``mode="layer"``: ``a{L}``, the attention input of layer ``L`` (shared by its heads);
* ``mode="qkv"``: ``a{L}.h{H}<q>`` per query head, and ``a{L}.h{G}<k>``, ``a{L}.h{G}<v>`` per
  key/value head (named ``a{L}.kv{G}<k>`` when heads share keys and values, GQA/MQA);
* ``m{L}``, the MLP input (absent in attention-only models);

and finally ``logits``. A parallel block (GPT-NeoX) feeds its MLP from ``resid_pre``, so
layer ``L``'s heads are not upstream of ``m{L}`` there. An edge is ``(source, receiver)``,
written ``"a0.h3->a2.h1<k>"``; edges are numbered source-major within receivers
(:attr:`Graph.edges`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from ..errors import MechscopeError

MODES = ("layer", "qkv")


@dataclass(frozen=True)
class Receiver:
    """One receiver: what it is and which nodes it feeds."""

    name: str
    """E.g. ``a2.h1<k>``, ``a2``, ``m2``, ``logits``."""
    layer: int
    """Its block (``n_layers`` for logits)."""
    kind: str
    """``attn`` (layer mode), ``q``, ``k``, ``v``, ``mlp`` or ``logits``."""
    index: int
    """Query head (``q``), key/value head (``k``, ``v``); 0 otherwise."""
    feeds: tuple[str, ...]
    """The nodes this receiver's input flows into."""


@dataclass(frozen=True)
class Graph:
    """Nodes, receivers and edges of one model's residual-stream graph."""

    n_layers: int
    """Blocks."""
    n_heads: int
    """Query heads per layer."""
    n_kv_heads: int
    """Key/value heads per layer."""
    mlp: bool = True
    """Whether the blocks have MLP nodes."""
    parallel: bool = False
    """Parallel blocks: the MLP reads the block's input, not the heads' output."""
    mode: str = "layer"
    """Receiver granularity: ``"layer"`` or ``"qkv"`` (see the module docstring)."""
    features: tuple[tuple[int, tuple[int, ...]], ...] = ()
    """``(layer, feature ids)``: MLP nodes split into those dictionary features (``m{L}.f{i}``)
    plus an error node (``m{L}.err``: the rest of the MLP's output), as sources."""
    receivers: tuple[Receiver, ...] = field(init=False)
    """Every receiver, in topological order."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise MechscopeError(f"graph mode must be one of {MODES}, not {self.mode!r}")
        object.__setattr__(self, "receivers", tuple(self._receivers()))

    @classmethod
    def from_model(
        cls, model: Any, mode: str = "layer", features: dict[int, list[int]] | None = None
    ) -> Graph:
        """The graph of a :class:`~mechscope.models.HookedModel` (``features``: layer -> feature ids)."""
        c = model.cfg
        split = tuple((layer, tuple(int(i) for i in ids)) for layer, ids in sorted((features or {}).items()))
        return cls(c.n_layers, c.n_heads, c.n_kv_heads, c.d_mlp > 0, c.parallel_attn_mlp, mode, split)

    def mlp_nodes(self, layer: int) -> list[str]:
        """The source nodes of one layer's MLP: ``m{L}``, or its features and error node."""
        if not self.mlp:
            return []
        ids = dict(self.features).get(layer)
        return [f"m{layer}"] if ids is None else [f"m{layer}.f{i}" for i in ids] + [f"m{layer}.err"]

    # -- nodes and receivers

    def heads(self, layer: int) -> list[str]:
        """The head nodes of one layer."""
        return [f"a{layer}.h{h}" for h in range(self.n_heads)]

    @cached_property
    def sources(self) -> tuple[str, ...]:
        """Nodes that write into the residual stream, in topological order."""
        out = ["input"]
        for layer in range(self.n_layers):
            out += self.heads(layer) + self.mlp_nodes(layer)
        return tuple(out)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node: the sources, then ``logits``."""
        return (*self.sources, "logits")

    def _receivers(self) -> list[Receiver]:
        out: list[Receiver] = []
        group = self.n_heads // self.n_kv_heads
        kv = "h" if group == 1 else "kv"
        for layer in range(self.n_layers):
            heads = self.heads(layer)
            if self.mode == "layer":
                out.append(Receiver(f"a{layer}", layer, "attn", 0, tuple(heads)))
            else:
                out += [Receiver(f"{h}<q>", layer, "q", i, (h,)) for i, h in enumerate(heads)]
                for port in "kv":
                    out += [
                        Receiver(
                            f"a{layer}.{kv}{g}<{port}>",
                            layer,
                            port,
                            g,
                            tuple(heads[g * group : (g + 1) * group]),
                        )
                        for g in range(self.n_kv_heads)
                    ]
            if self.mlp:
                out.append(Receiver(f"m{layer}", layer, "mlp", 0, tuple(self.mlp_nodes(layer))))
        out.append(Receiver("logits", self.n_layers, "logits", 0, ("logits",)))
        return out

    def receiver_index(self, name: str) -> int:
        """Position of receiver ``name`` in :attr:`receivers`."""
        return self._receiver_pos[name]

    @cached_property
    def _receiver_pos(self) -> dict[str, int]:
        return {r.name: i for i, r in enumerate(self.receivers)}

    def upstream(self, receiver: Receiver) -> list[str]:
        """The sources that write into ``receiver``'s input."""
        out = ["input"]
        for layer in range(receiver.layer):
            out += self.heads(layer) + self.mlp_nodes(layer)
        if receiver.kind == "mlp" and not self.parallel:
            out += self.heads(receiver.layer)
        return out

    # -- edges

    @cached_property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """Every edge ``(source, receiver)``, receiver by receiver, sources in topological order."""
        return tuple((s, r.name) for r in self.receivers for s in self.upstream(r))

    @cached_property
    def edge_names(self) -> tuple[str, ...]:
        """Every edge as ``"source->receiver"``."""
        return tuple(f"{s}->{r}" for s, r in self.edges)

    @cached_property
    def edge_index(self) -> dict[tuple[str, str], int]:
        """Edge number of each ``(source, receiver)``."""
        return {e: i for i, e in enumerate(self.edges)}

    @property
    def n_edges(self) -> int:
        """Number of edges."""
        return len(self.edges)

    @cached_property
    def source_pos(self) -> dict[str, int]:
        """Position of each source in :attr:`sources`."""
        return {s: i for i, s in enumerate(self.sources)}

    @cached_property
    def edge_pairs(self) -> Tensor:  # [n_edges, 2] long: (source position, receiver position)
        """Each edge as (source index, receiver index)."""
        return torch.tensor(
            [[self.source_pos[s], self._receiver_pos[r]] for s, r in self.edges], dtype=torch.long
        ).view(-1, 2)

    def edges_of(self, names: list[str] | tuple[str, ...] | list[tuple[str, str]]) -> Tensor:
        """A bool mask ``[n_edges]`` of the given edges (``"s->r"`` strings or tuples); unknown edges raise."""
        mask = torch.zeros(self.n_edges, dtype=torch.bool)
        for e in names:
            pair = tuple(e.split("->", 1)) if isinstance(e, str) else tuple(e)
            pair = (pair[0].strip(), pair[1].strip())
            if pair not in self.edge_index:
                raise MechscopeError(f"edge {pair[0]}->{pair[1]} is not in this {self.mode}-mode graph")
            mask[self.edge_index[pair]] = True  # type: ignore[index]
        return mask

    def node_info(self, name: str) -> dict[str, Any]:
        """Kind, layer and head of a node (for export and drawing)."""
        if name == "input":
            return {"name": name, "kind": "input", "layer": -1, "head": None}
        if name == "logits":
            return {"name": name, "kind": "logits", "layer": self.n_layers, "head": None}
        if name.startswith("m"):
            layer, _, part = name[1:].partition(".")
            if part.startswith("f"):
                return {
                    "name": name,
                    "kind": "feature",
                    "layer": int(layer),
                    "head": None,
                    "feature": int(part[1:]),
                }
            kind = "error" if part == "err" else "mlp"
            return {"name": name, "kind": kind, "layer": int(layer), "head": None}
        layer, head = name[1:].split(".h")
        return {"name": name, "kind": "head", "layer": int(layer), "head": int(head)}

    def describe(self) -> dict[str, Any]:
        """The shape of the graph, as JSON."""
        return {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "mlp": self.mlp,
            "parallel": self.parallel,
            "mode": self.mode,
            "features": [[layer, list(ids)] for layer, ids in self.features],
            "n_edges": self.n_edges,
        }
