"""Circuit-discovery methods, all on :class:`~mechscope.circuits.engine.EdgeEngine`.

Every method returns one score per edge: the (estimated or exact) change in the metric when
that edge alone is ablated, ``metric(edge dropped) − metric(clean)``, averaged over examples.
So a negative score means the edge carries the behaviour (for a metric that is higher when
clean); rank by ``|score|``.

* **Exact edge patching**: one masked run per edge, ``batch`` edges per forward pass.
* **EAP** (Syed, Rager & Conmy 2023): ``(ã_s − o_s) · ∂m/∂x_r`` from one clean forward and
  backward (plus the ablated run the engine made once).
* **EAP-IG** over inputs (Hanna, Pezzelle & Belinkov 2024): the gradient averaged over ``steps``
  points on the straight line from the clean to the ablated input embeddings (midpoints
  ``(k + 1/2)/steps``), times ``(ã_s − o_s)``: ``steps`` forward and backward passes.
* **EAP-IG over activations**: for each group of sources (the input embeddings, each block's
  heads and MLP) in turn, only that group's outputs are moved along the line from clean to
  ablated; its edges get ``(ã_s − o_s)`` times the averaged receiver gradients.
* **ACDC** (Conmy et al. 2023): start from the full graph; visit receivers in reverse
  topological order and, for each, its incoming edges from the latest source back; drop an
  edge for good when the metric moves by less than ``tau`` (absolute) from the current
  circuit's. The score of an edge is the change measured when it was tried.
* **Node attribution**: a node's outgoing edges' scores summed (the node-level EAP or exact
  estimate for comparison).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import MechscopeError
from .engine import EdgeEngine


def exact(engine: EdgeEngine, batch: int = 32, progress: bool = False) -> Tensor:  # [E]
    """``metric(edge dropped) − metric(clean)`` for every edge, ``batch`` edges per forward pass."""
    return exact_edges(engine, torch.arange(engine.graph.n_edges), batch, progress)


def exact_edges(engine: EdgeEngine, edges: Tensor, batch: int = 32, progress: bool = False) -> Tensor:  # [k]
    """Exact scores of the given edge indices. Edges are grouped by their receiver's block and
    each group runs only from that block on (the blocks before it are the clean run's)."""
    n_edges = engine.graph.n_edges
    base = engine.clean_metric.mean().cpu()
    layers = engine.receiver_layer(edges)
    order = torch.argsort(layers, stable=True)
    chunks = []
    for layer in layers.unique().tolist():
        idx = order[layers[order] == layer]
        chunks += [(layer, idx[i : i + batch]) for i in range(0, len(idx), batch)]
    out = torch.empty(len(edges))
    for layer, pos in tqdm(chunks, disable=not progress, desc="exact edge patching", unit="batch"):
        keep = torch.ones(len(pos), n_edges, dtype=torch.bool)
        keep[torch.arange(len(pos)), edges[pos]] = False
        out[pos] = engine.run(keep, start=int(layer)).mean(dim=1) - base
    return out


def eap(engine: EdgeEngine, per_position: bool = False) -> Tensor:  # [E] or [pos, E]
    """Edge attribution patching: the first-order estimate from clean-run gradients."""
    return engine.edge_products(engine.receiver_grads(), per_position)


def eap_ig_grads(engine: EdgeEngine, steps: int = 5, progress: bool = False) -> Tensor:  # [R, n, pos, d]
    """Receiver gradients averaged over ``steps`` midpoints from the clean to the ablated input embeddings."""
    if steps < 1:
        raise MechscopeError(f"EAP-IG needs steps >= 1, not {steps}")
    total = None
    for k in tqdm(range(steps), disable=not progress, desc="EAP-IG", unit="step"):
        g = engine.receiver_grads(alpha=(k + 0.5) / steps)
        total = g if total is None else total + g
    assert total is not None
    return total / steps


def eap_ig(
    engine: EdgeEngine, steps: int = 5, progress: bool = False, per_position: bool = False
) -> Tensor:  # [E] or [pos, E]
    """EAP with integrated gradients over the input embeddings (``steps`` midpoints)."""
    return engine.edge_products(eap_ig_grads(engine, steps, progress), per_position)


def exact_per_position(engine: EdgeEngine, edges: Tensor, batch: int = 32) -> Tensor:  # [pos, k]
    """``metric(edge dropped at one position) − metric(clean)`` for the given edges at every position."""
    n_edges, width = engine.graph.n_edges, engine.clean.tokens.shape[1]
    base = engine.clean_metric.mean().cpu()
    pairs = [(e, p) for e in edges.tolist() for p in range(width)]
    out = torch.empty(len(pairs))
    layers = engine.receiver_layer(edges).tolist()
    start_of = dict(zip(edges.tolist(), layers, strict=True))
    for i in range(0, len(pairs), batch):
        chunk = pairs[i : i + batch]
        keep = torch.ones(len(chunk), width, n_edges, dtype=torch.bool)
        for j, (e, p) in enumerate(chunk):
            keep[j, p, e] = False
        start = min(start_of[e] for e, _ in chunk)
        out[i : i + len(chunk)] = engine.run(keep, start=start).mean(dim=1) - base
    return out.view(len(edges), width).T


def eap_ig_activations(engine: EdgeEngine, steps: int = 5, progress: bool = False) -> Tensor:  # [E]
    """EAP-IG over activations: for each group of sources (the input embeddings, then each block's
    heads and MLP), the receivers' gradients averaged over ``steps`` midpoints with only that
    group's outputs moved from clean to ablated, times ``(ã_s − o_s)``, for that group's edges.
    ``steps * (n_layers + 1)`` forward and backward passes."""
    if steps < 1:
        raise MechscopeError(f"EAP-IG needs steps >= 1, not {steps}")
    graph = engine.graph
    src_layer = torch.tensor([graph.node_info(s)["layer"] for s in graph.sources])[graph.edge_pairs[:, 0]]
    out = torch.zeros(graph.n_edges)
    groups = range(-1, graph.n_layers)
    for layer in tqdm(groups, disable=not progress, desc="EAP-IG (activations)", unit="group"):
        total = engine.receiver_grads(0.5 / steps, layer=layer)
        for k in range(1, steps):
            total = total + engine.receiver_grads((k + 0.5) / steps, layer=layer)
        mine = src_layer == layer
        out[mine] = engine.edge_products(total / steps)[mine]
    return out


def acdc(
    engine: EdgeEngine, tau: float, progress: bool = False
) -> tuple[Tensor, Tensor]:  # scores [E], kept [E] bool
    """Greedy pruning in reverse topological order with threshold ``tau``; see the module docstring."""
    graph = engine.graph
    keep = torch.ones(graph.n_edges, dtype=torch.bool)
    scores = torch.zeros(graph.n_edges)
    current = float(engine.run(keep[None]).mean())
    order = sorted(
        range(graph.n_edges), key=lambda e: (-graph.edge_pairs[e, 1].item(), -graph.edge_pairs[e, 0].item())
    )
    layers = engine.receiver_layer(torch.tensor(order)).tolist()
    steps = list(zip(order, layers, strict=True))
    for e, layer in tqdm(steps, disable=not progress, desc=f"ACDC tau={tau:g}", unit="edge"):
        keep[e] = False
        value = float(engine.run(keep[None], start=layer).mean())  # earlier drops are all downstream
        scores[e] = value - current
        if abs(value - current) < tau:
            current = value
        else:
            keep[e] = True
    return scores, keep


def acdc_sweep(
    engine: EdgeEngine, taus: list[float], progress: bool = False
) -> list[tuple[float, Tensor]]:  # [(tau, kept [E])]
    """ACDC at several thresholds."""
    return [(tau, acdc(engine, tau, progress)[1]) for tau in taus]


def node_scores(engine: EdgeEngine, edge_scores: Tensor) -> dict[str, float]:
    """Each source node's outgoing edge scores summed."""
    out = torch.zeros(len(engine.graph.sources)).index_add_(0, engine.graph.edge_pairs[:, 0], edge_scores)
    return {s: float(v) for s, v in zip(engine.graph.sources, out, strict=True)}


def exact_nodes(engine: EdgeEngine, batch: int = 32) -> dict[str, float]:
    """``metric(node ablated) − metric(clean)``: all of a source node's outgoing edges dropped at once."""
    graph = engine.graph
    sources = graph.edge_pairs[:, 0]
    base = engine.clean_metric.mean().cpu()
    out: dict[str, float] = {}
    names = list(graph.sources)
    for start in range(0, len(names), batch):
        chunk = names[start : start + batch]
        keep = torch.stack([sources != graph.source_pos[s] for s in chunk])
        for s, v in zip(chunk, engine.run(keep).mean(dim=1) - base, strict=True):
            out[s] = float(v)
    return out


METHODS: dict[str, Callable[..., Tensor]] = {
    "exact": exact,
    "eap": eap,
    "eap-ig": eap_ig,
    "eap-ig-activations": eap_ig_activations,
}
"""Edge-scoring methods by name (ACDC returns a circuit as well: see :func:`acdc`)."""
