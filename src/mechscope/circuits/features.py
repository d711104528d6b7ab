"""SAE features (plus an error term) as circuit nodes, in the style of Marks et al. (2024),
*Sparse feature circuits*.

A dictionary trained on an MLP's output (``blocks.L.hook_mlp_out``) splits that source node
``m{L}`` exactly into features and an error term, on the clean and on the ablated run alike::

    o = Σ_i f_i(o) W_dec[i] + b_dec + err(o),   err(o) = o − dictionary(o)

So the edge ``m{L} -> r`` splits into one edge per feature and one for the error, and the
linear estimate of dropping each (EAP, or EAP-IG with integrated gradients) is

    score(i -> r) = mean_n Σ_pos (f_i(ã) − f_i(o)) W_dec[i] · g_r,
    score(err -> r) = mean_n Σ_pos (err(ã) − err(o)) · g_r,

which add up to the edge's own score. A feature's node score sums its edges. The exact
counterpart, :func:`exact_feature_effects`, swaps one feature's clean contribution for its
ablated one in ``hook_mlp_out`` (every downstream receiver sees it) and reruns the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..dictionary.base import Dictionary
from ..errors import MechscopeError
from .engine import EdgeEngine, _repeat


@dataclass(frozen=True)
class FeatureScores:
    """Feature-level scores of one MLP node."""

    node: str
    """The decomposed source node, ``m{L}``."""
    receivers: list[str]
    """The node's downstream receivers, in graph order."""
    edges: Tensor
    """``[d_sae, len(receivers)]``: the score of each feature -> receiver edge."""
    error_edges: Tensor
    """``[len(receivers)]``: the error term's edges."""

    @property
    def nodes(self) -> Tensor:  # [d_sae]
        """Each feature's node score (its edges summed)."""
        return self.edges.sum(dim=1)

    @property
    def error(self) -> float:
        """The error node's score."""
        return float(self.error_edges.sum())

    def top(self, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` features with the largest ``|node score|``."""
        idx = self.nodes.abs().argsort(descending=True)[:k]
        return [(int(i), float(self.nodes[i])) for i in idx]


def _split(engine: EdgeEngine, dictionary: Dictionary, node: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Codes and errors of the node's clean and ablated outputs: ``f [n, pos, d_sae]``, ``err [n, pos, d]``."""
    if not node.startswith("m") or node not in engine.graph.source_pos:
        raise MechscopeError(
            f"feature nodes decompose an MLP node m<layer>; {node!r} is not one of this graph's"
        )
    s = engine.graph.source_pos[node]
    out = []
    with torch.no_grad():
        for o in (engine.clean_out[s], engine.abl_out[s]):
            flat = o.reshape(-1, o.shape[-1])
            if flat.shape[-1] != dictionary.config.d_in:
                raise MechscopeError(
                    f"the dictionary reads width {dictionary.config.d_in}, {node}'s output is {flat.shape[-1]}"
                )
            f = dictionary.encode(flat)
            err = flat - dictionary.decode(f)
            out += [f.view(*o.shape[:-1], -1), err.view(o.shape)]
    return out[0], out[1], out[2], out[3]


def feature_scores(
    engine: EdgeEngine, dictionary: Dictionary, node: str, grads: Tensor | None = None
) -> FeatureScores:
    """Scores of every feature -> receiver edge of ``node`` (``grads``: receiver gradients
    ``[R, n, pos, d]``, default the clean run's; pass EAP-IG's averaged ones for EAP-IG)."""
    f_clean, e_clean, f_abl, e_abl = _split(engine, dictionary, node)
    grads = engine.receiver_grads() if grads is None else grads
    graph = engine.graph
    receivers = [r for s, r in graph.edges if s == node]
    idx = [graph.receiver_index(r) for r in receivers]
    g = grads[idx]  # [r, n, pos, d]
    w_dec = dictionary.W_dec.detach()  # [d_sae, d]
    along = torch.einsum("rnpd,id->rnpi", g, w_dec)  # each receiver's gradient along each feature
    edges = torch.einsum("rnpi,npi->ir", along, f_abl - f_clean) / engine.n
    error = torch.einsum("rnpd,npd->r", g, e_abl - e_clean) / engine.n
    return FeatureScores(node, receivers, edges, error)


def exact_feature_effects(
    engine: EdgeEngine, dictionary: Dictionary, node: str, features: Tensor, batch: int = 16
) -> Tensor:  # [k]
    """``metric − clean metric`` with one feature's clean contribution to ``node``'s output replaced
    by its ablated one (every downstream receiver sees the change), for each of ``features``."""
    f_clean, _, f_abl, _ = _split(engine, dictionary, node)
    layer = int(node[1:])
    w_dec = dictionary.W_dec.detach()
    base = engine.clean_metric.mean()
    out = torch.empty(len(features))
    for start in range(0, len(features), batch):
        chunk = features[start : start + batch]
        # [v, n, pos, d]: feature i's contribution on the ablated run minus on the clean run
        shift = (f_abl - f_clean)[..., chunk].permute(2, 0, 1)[..., None] * w_dec[chunk][:, None, None, :]
        shift = shift.flatten(0, 1)

        def swap(t: Tensor, hook: object, shift: Tensor = shift) -> Tensor:
            return t + shift

        v = len(chunk)
        with torch.no_grad(), engine.model.hooks([(f"blocks.{layer}.hook_mlp_out", swap)]):
            logits = engine.model(_repeat(engine.clean, v), logits_to_keep=engine.problem.logits_to_keep)
        out[start : start + v] = engine._metric(logits, v).mean(dim=1) - base
    return out
