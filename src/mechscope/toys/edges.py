"""The edge graph of a toy transformer and a dense, obviously-correct edge-masked forward.

Nodes, in topological order: ``input`` (token + position embeddings), the attention heads
``a{L}.h{H}``, the MLPs ``m{L}`` and ``logits``. Every node writes into the residual stream,
so an upstream node feeds every downstream *receiver*: a head's query, key and value inputs
(``a{L}.h{H}<q>``, ``<k>``, ``<v>``, each its own receiver), an MLP's input ``m{L}``, and
``logits``. An edge is ``(source node, receiver)``, written ``"input->a1.h0<k>"``.

:func:`edge_forward` runs the model with each receiver's input rebuilt as the sum of its
sources' outputs, taking the clean output along kept edges and the ablated output along the
others (zero, the mean over the batch, or the output on corrupted inputs). With every edge
kept it is the model's ordinary forward. It is slow (one head at a time in spirit, though
vectorised) and meant as the reference that faster circuit methods are checked against.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

Edge = tuple[str, str]
"""``(source node, receiver)``, e.g. ``("a0.h0", "a1.h0<k>")``."""


def node_names(n_layers: int, n_heads: int) -> list[str]:
    """Every node in topological order."""
    nodes = ["input"]
    for layer in range(n_layers):
        nodes += [f"a{layer}.h{h}" for h in range(n_heads)] + [f"m{layer}"]
    return [*nodes, "logits"]


def all_edges(n_layers: int, n_heads: int, mlp: bool = True) -> list[Edge]:
    """Every edge of the graph (without MLP nodes when ``mlp`` is False)."""
    edges: list[Edge] = []
    sources = ["input"]
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        edges += [(s, f"{head}<{port}>") for head in heads for port in "qkv" for s in sources]
        sources = sources + heads
        if mlp:
            edges += [(s, f"m{layer}") for s in sources]
            sources = [*sources, f"m{layer}"]
    return edges + [(s, "logits") for s in sources]


def parse_edge(edge: str | Edge) -> Edge:
    """``"a0.h0->a1.h0<k>"`` or a tuple, as a tuple."""
    if isinstance(edge, tuple):
        return edge
    src, sep, dst = edge.partition("->")
    if not sep:
        raise ValueError(f"an edge is written 'source->receiver', not {edge!r}")
    return src.strip(), dst.strip()


def _toy(model: Any) -> Any:
    hf = getattr(model, "hf_model", model)
    if type(hf).__name__ != "ToyForCausalLM":
        raise TypeError(f"edge_forward runs mechscope's toy transformer, not {type(hf).__name__}")
    return hf


def _node_outputs(
    hf: Any, tokens: Tensor, keep: set[Edge] | None, ablated: dict[str, Any] | None
) -> tuple[dict[str, Tensor], Tensor]:
    """Every node's output ``[batch, pos, d_model]`` and the logits, under the edge mask."""
    cfg, inner = hf.config, hf.model
    n_heads, d_head = cfg.n_heads, cfg.d_head
    outs: dict[str, Tensor] = {
        "input": inner.embed_tokens(tokens) + inner.embed_positions.weight[: tokens.shape[1]]
    }
    const = torch.zeros_like(outs["input"])  # attention output biases: always present, never ablated

    def gather(receiver: str, sources: list[str]) -> Tensor:  # [batch, pos, d_model]
        total = const.clone()
        for s in sources:
            clean = keep is None or (s, receiver) in keep
            total = total + (outs[s] if clean else ablated[s])  # type: ignore[index]
        return total

    for layer, block in enumerate(inner.layers):
        sources = [n for n in outs]
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        attn = block.attn
        per_port = []
        for port, proj in (("q", attn.q_proj), ("k", attn.k_proj), ("v", attn.v_proj)):
            x = torch.stack([gather(f"{h}<{port}>", sources) for h in heads], dim=2)  # [b, p, head, d]
            w = proj.weight.view(n_heads, d_head, -1)  # [head, d_head, d_model]
            y = torch.einsum("bphd,hed->bphe", block.ln_1(x), w)
            per_port.append(y if proj.bias is None else y + proj.bias.view(n_heads, d_head))
        q, k, v = per_port  # [batch, pos, head, d_head]
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) * attn.scaling
        n = tokens.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        pattern = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        w_o = attn.o_proj.weight.view(-1, n_heads, d_head)  # [d_model, head, d_head]
        head_out = torch.einsum("bqhe,dhe->bqhd", z, w_o)
        for h, name in enumerate(heads):
            outs[name] = head_out[:, :, h]
        if attn.o_proj.bias is not None:
            const = const + attn.o_proj.bias
        mlp_in = gather(f"m{layer}", [n for n in outs])
        outs[f"m{layer}"] = block.mlp(block.ln_2(mlp_in))
    final = gather("logits", [n for n in outs])
    return outs, hf.lm_head(inner.ln_f(final))


@torch.no_grad()
def edge_forward(
    model: Any,
    tokens: Tensor,  # [batch, pos]
    keep: Iterable[Edge | str] | None = None,
    ablation: str | Tensor = "zero",
) -> Tensor:  # [batch, pos, vocab]
    """Logits with only the ``keep`` edges carrying clean activations (None: every edge).

    ``ablation``: ``"zero"``, ``"mean"`` (each node's clean output averaged over the batch) or
    corrupted tokens ``[batch, pos]`` (each node's output on them, from an unmasked run).
    """
    hf = _toy(model)
    kept = None if keep is None else {parse_edge(e) for e in keep}
    if kept is not None:
        known = set(all_edges(hf.config.n_layers, hf.config.n_heads))
        unknown = sorted(f"{s}->{d}" for s, d in kept - known)
        if unknown:
            raise ValueError(f"unknown edges {unknown[:5]}; see mechscope.toys.edges.all_edges")
    ablated: dict[str, Any] | None = None
    if kept is not None:
        if isinstance(ablation, Tensor):
            if ablation.shape != tokens.shape:
                raise ValueError(
                    f"corrupted tokens {tuple(ablation.shape)} must match tokens {tuple(tokens.shape)}"
                )
            ablated = _node_outputs(hf, ablation, None, None)[0]
        elif ablation == "mean":
            clean = _node_outputs(hf, tokens, None, None)[0]
            ablated = {k: v.mean(dim=0, keepdim=True).expand_as(v) for k, v in clean.items()}
        elif ablation == "zero":
            ablated = _ZeroDict()
        else:
            raise ValueError(f"ablation must be 'zero', 'mean' or corrupted tokens, not {ablation!r}")
    return _node_outputs(hf, tokens, kept, ablated)[1]


class _ZeroDict(dict):  # type: ignore[type-arg]
    """Zero ablation: every node's ablated output is 0 (broadcasts in the sums)."""

    def __missing__(self, key: str) -> float:  # type: ignore[override]
        return 0.0
