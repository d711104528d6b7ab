"""A circuit: every edge's score, the method that produced them, and a chosen subgraph.

Pruning keeps the top ``n`` edges by ``|score|`` (or those above a threshold), then only the
edges that lie on a path from ``input`` to ``logits`` through kept edges: an edge
``s -> r`` survives when ``s`` is reachable from ``input`` and some node ``r`` feeds reaches
``logits``. So a circuit never contains an edge that cannot matter.

Saved as a directory: ``circuit.json`` (graph shape, nodes, every edge with its score and
whether it is in the circuit, the method and its settings, the ablation and metric: the form
:mod:`mechscope.circuits.render` draws), ``scores.safetensors`` and ``meta.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import Tensor

from .._fs import atomic_write_bytes, atomic_write_json
from .._version import __version__
from ..errors import ArtifactError
from .graph import Graph

SCHEMA = 1


@dataclass(frozen=True)
class Circuit:
    """Scored edges of a graph and the subgraph chosen from them."""

    graph: Graph
    """The graph the scores are over."""
    scores: Tensor
    """``[n_edges]`` float: the metric change when each edge alone is ablated (or its estimate)."""
    method: str
    """``exact``, ``eap``, ``eap-ig``, ``acdc``..."""
    ablation: str
    """``corrupted``, ``mean`` or ``zero``."""
    metric: str
    """The metric's name."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The method's settings (steps, tau...)."""
    in_circuit: Tensor | None = None
    """``[n_edges]`` bool: the chosen subgraph (None: not pruned yet)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Model, task, baselines and anything else worth keeping with the result."""

    @property
    def per_position(self) -> bool:
        """Whether the scores (and the subgraph) are per position, ``[pos, n_edges]``."""
        return self.scores.dim() == 2

    def ranked(self) -> Tensor:  # [n_edges] (or [pos * n_edges], flat) long
        """Edge indices (flat ``pos * n_edges + edge`` when per position) by decreasing ``|score|``."""
        return torch.sort(self.scores.abs().flatten(), descending=True, stable=True).indices

    def _connect(self, chosen: Tensor) -> Tensor:
        if self.per_position:
            return connected_by_position(self.graph, chosen)
        return connected(self.graph, chosen)

    def top(self, n: int) -> Circuit:
        """The top ``n`` edges (or edge-positions) by ``|score|``, pruned to those connected to input
        and logits."""
        chosen = torch.zeros(self.scores.numel(), dtype=torch.bool)
        chosen[self.ranked()[: max(0, n)]] = True
        return replace(self, in_circuit=self._connect(chosen.view(self.scores.shape)))

    def above(self, threshold: float) -> Circuit:
        """Edges with ``|score| >= threshold``, pruned to those connected to input and logits."""
        return replace(self, in_circuit=self._connect(self.scores.abs() >= threshold))

    def _name(self, i: int) -> str:
        e = self.graph.n_edges
        return self.graph.edge_names[i % e] + (f"@{i // e}" if self.per_position else "")

    @property
    def edges(self) -> list[str]:
        """Names of the edges in the circuit (all edges when not pruned), best first."""
        mask = (
            self.in_circuit if self.in_circuit is not None else torch.ones_like(self.scores, dtype=torch.bool)
        )
        flat = mask.flatten()
        return [self._name(i) for i in self.ranked().tolist() if flat[i]]

    def top_edges(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` best-scored edges (``name@position`` when per position) with their scores."""
        flat = self.scores.flatten()
        return [(self._name(i), float(flat[i])) for i in self.ranked()[:k].tolist()]

    def _repr_html_(self) -> str:
        """An interactive layered graph of the largest edges in Jupyter (see :mod:`mechscope.viz`)."""
        from ..viz.results import circuit

        return circuit(self.to_json()).fragment()

    def to_json(self) -> dict[str, Any]:
        """Everything as plain JSON (what ``circuit.json`` holds); per-position circuits are drawn
        with each edge's scores summed over positions, in the circuit at any position."""
        full = (
            self.in_circuit
            if self.in_circuit is not None
            else torch.zeros_like(self.scores, dtype=torch.bool)
        )
        scores = self.scores.sum(dim=0) if self.per_position else self.scores
        mask = full.any(dim=0) if self.per_position else full
        recv = {r.name: r for r in self.graph.receivers}
        edges = []
        for i, (s, r) in enumerate(self.graph.edges):
            rec = recv[r]
            port = rec.kind if rec.kind in ("q", "k", "v") else None
            target = rec.feeds[0] if len(rec.feeds) == 1 else r
            edges.append(
                {"name": self.graph.edge_names[i], "source": s, "receiver": r, "target": target, "port": port,
                 "score": float(scores[i]), "in_circuit": bool(mask[i])}
            )  # fmt: skip
        nodes = [self.graph.node_info(n) for n in self.graph.nodes]
        nodes += [self.graph.node_info(f"m{layer}") for layer, _ in self.graph.features]  # split MLPs' inputs
        if self.graph.mode == "layer":  # layer receivers are drawn as nodes of their own
            nodes += [
                {"name": f"a{L}", "kind": "attn_in", "layer": L, "head": None}
                for L in range(self.graph.n_layers)
            ]
        return {
            "kind": "circuit",
            "schema_version": SCHEMA,
            "method": self.method,
            "ablation": self.ablation,
            "metric": self.metric,
            "settings": self.settings,
            **self.graph.describe(),
            **self.info,
            "per_position": self.per_position,
            "nodes": nodes,
            "edges": edges,
        }

    def save(self, path: str | Path) -> Path:
        """Write ``circuit.json``, ``scores.safetensors`` and ``meta.json`` into directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {"scores": self.scores.float().contiguous()}
        if self.in_circuit is not None:
            tensors["in_circuit"] = self.in_circuit.to(torch.uint8).contiguous()
        atomic_write_bytes(path / "scores.safetensors", save(tensors))
        atomic_write_json(path / "circuit.json", self.to_json())
        atomic_write_json(
            path / "meta.json",
            {"kind": "circuit", "schema_version": SCHEMA, "mechscope_version": __version__},
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Circuit:
        """Rebuild a saved circuit from its files; a missing or inconsistent file raises ``ArtifactError``."""
        path = Path(path)
        try:
            data = json.loads((path / "circuit.json").read_text())
            tensors = load_file(str(path / "scores.safetensors"))
        except (OSError, ValueError) as e:
            raise ArtifactError(f"{path} is not a readable circuit: {e}") from e
        if data.get("kind") != "circuit" or data.get("schema_version") != SCHEMA:
            raise ArtifactError(f"{path}/circuit.json is not a circuit of schema {SCHEMA}")
        features = tuple((int(layer), tuple(int(i) for i in ids)) for layer, ids in data.get("features", []))
        graph = Graph(
            data["n_layers"], data["n_heads"], data["n_kv_heads"], data["mlp"], data["parallel"], data["mode"],
            features,
        )  # fmt: skip
        scores = tensors["scores"]
        if scores.shape[-1:] != (graph.n_edges,) or scores.dim() > 2 or not torch.isfinite(scores).all():
            raise ArtifactError(
                f"{path}: scores do not match the graph ({graph.n_edges} edges) or are not finite"
            )
        mask = tensors.get("in_circuit")
        keys = {
            "kind",
            "schema_version",
            "method",
            "ablation",
            "metric",
            "settings",
            "nodes",
            "edges",
            "per_position",
        }
        keys |= set(graph.describe())
        return cls(
            graph, scores, data["method"], data["ablation"], data["metric"], data.get("settings", {}),
            None if mask is None else mask.bool(), {k: v for k, v in data.items() if k not in keys},
        )  # fmt: skip


def connected(graph: Graph, chosen: Tensor) -> Tensor:  # chosen [E] bool -> [E] bool
    """The chosen edges that lie on an ``input`` -> ``logits`` path of chosen edges."""
    feeds = {r.name: r.feeds for r in graph.receivers}
    idx = chosen.nonzero().flatten().tolist()
    into: dict[str, list[str]] = {}
    out_of: dict[str, list[str]] = {}
    for i in idx:
        s, r = graph.edges[i]
        for n in feeds[r]:
            into.setdefault(n, []).append(s)
            out_of.setdefault(s, []).append(n)
    reach = {"input"}
    for node in graph.nodes:  # topological order
        if any(s in reach for s in into.get(node, ())):
            reach.add(node)
    alive = {"logits"}
    for node in reversed(graph.nodes):
        if any(n in alive for n in out_of.get(node, ())):
            alive.add(node)
    keep = torch.zeros_like(chosen, dtype=torch.bool)
    for i in idx:
        s, r = graph.edges[i]
        keep[i] = s in reach and any(n in alive and n in reach for n in feeds[r])
    return keep


def connected_by_position(graph: Graph, chosen: Tensor) -> Tensor:  # chosen [pos, E] -> [pos, E]
    """Per-position pruning: the chosen ``(position, edge)`` pairs on an ``input -> logits`` path.

    An edge at position ``p`` carries its source's output at ``p`` into its receiver at ``p``.
    Positions then move only through attention: a head's query input at ``p`` reaches its output
    at ``p``; its key or value input (or a layer-mode attention input) at ``p`` reaches its output
    at every position ``>= p``. MLP and logits inputs stay at their position. The logits count as
    read at every position.
    """
    width = chosen.shape[0]
    feeds = {r.name: r for r in graph.receivers}
    pairs = chosen.nonzero().tolist()  # [(pos, edge)]
    into: dict[str, list[tuple[str, int, bool]]] = {}
    out_of: dict[str, list[tuple[str, int, bool]]] = {}
    for p, e in pairs:
        s, r = graph.edges[e]
        spread = feeds[r].kind in ("attn", "k", "v")  # reaches later positions too
        for n in feeds[r].feeds:
            into.setdefault(n, []).append((s, p, spread))
            out_of.setdefault(s, []).append((n, p, spread))
    reach: dict[str, set[int]] = {"input": set(range(width))}
    for node in graph.nodes:
        got: set[int] = reach.setdefault(node, set())
        for s, p, spread in into.get(node, ()):
            if p in reach.get(s, ()):
                got.update(range(p, width) if spread else (p,))
    alive: dict[str, set[int]] = {"logits": set(range(width))}
    for node in reversed(graph.nodes):
        live = alive.setdefault(node, set())
        for n, p, spread in out_of.get(node, ()):
            ok = alive.get(n, set()) & reach.get(n, set())
            if (max(ok, default=-1) >= p) if spread else (p in ok):
                live.add(p)
    keep = torch.zeros_like(chosen, dtype=torch.bool)
    for p, e in pairs:
        s, r = graph.edges[e]
        spread = feeds[r].kind in ("attn", "k", "v")
        targets = [alive.get(n, set()) & reach.get(n, set()) for n in feeds[r].feeds]
        hit = any((max(t, default=-1) >= p) if spread else (p in t) for t in targets)
        keep[p, e] = p in reach.get(s, set()) and hit
    return keep
