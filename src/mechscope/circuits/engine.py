"""One engine under every circuit method: the model run with edge-level interventions.

Notation (see :mod:`mechscope.circuits.graph`): ``S`` sources, ``R`` receivers, ``E`` edges.
A source's output ``o_s [batch, pos, d_model]`` is what it adds to the residual stream:
``hook_embed`` (+ ``hook_pos_embed``) for ``input``, ``attn.hook_result[:, :, h]`` for head
``h`` (bias excluded), ``hook_mlp_out`` for an MLP. A receiver's input is the sum of its
upstream sources' outputs plus constants (biases), read at ``blocks.L.hook_attn_in`` (layer
mode) or per head through :class:`~mechscope.models.split.SplitAttention` (qkv mode), at
``blocks.L.hook_mlp_in``, and, for ``logits``, at the last block's ``hook_resid_post``.

1. **Edge interventions.** ``V`` edge masks ``keep [V, E]`` run together in one batch
   (variant-major rows). Receiver ``r`` of variant ``v`` reads
   ``x_r' = x_r − Σ_{s: not keep[v, (s, r)]} (o_s − ã_s)``, where ``o_s`` is the source's
   output in this very run and ``ã_s`` its *ablated* output: from the corrupted run
   (``"corrupted"``), the clean outputs' batch mean (``"mean"``) or 0 (``"zero"``). Every
   edge kept is the clean forward; none kept makes every receiver read ablated outputs
   only (the corrupted run, for ``"corrupted"``).
2. **Receiver gradients.** One backward pass gives ``∂metric/∂x_r`` for every receiver (the
   inputs above are separate copies of the residual, so each has its own gradient),
   optionally with the input embeddings moved part of the way to their ablated value
   (EAP-IG's interpolation).

Architectures whose heads' outputs do not add up in the residual stream (Gemma 2/3 apply a
norm after attention) are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..dictionary.base import Dictionary
from ..errors import MechscopeError
from ..models import HookedModel, TokenBatch
from ..models.split import SplitAttention
from .graph import Graph

ABLATIONS = ("corrupted", "mean", "zero")


@dataclass(frozen=True)
class EdgeProblem:
    """What a circuit method measures: inputs, the ablation source, and a metric."""

    clean: TokenBatch | Tensor
    """Clean inputs, ``[n, pos]``."""
    corrupted: TokenBatch | Tensor | None
    """Corrupted inputs aligned with the clean ones (needed for ``"corrupted"`` ablation)."""
    metric: Callable[[Tensor], Tensor]
    """``metric(logits [n, kept_pos, vocab]) -> [n]``; higher means more like the clean behaviour."""
    logits_to_keep: int = 1
    """Logits of the last this many positions reach the metric (0: all)."""
    name: str = "metric"
    """The metric's name, for results."""


def _batch(x: TokenBatch | Tensor) -> TokenBatch:
    if isinstance(x, TokenBatch):
        return x
    return TokenBatch(x, torch.ones_like(x))


def _repeat(batch: TokenBatch, v: int) -> TokenBatch:
    return TokenBatch(batch.tokens.repeat(v, 1), batch.attention_mask.repeat(v, 1), batch.padding_side)


class EdgeEngine:
    """Runs ``model`` on ``problem`` with edge interventions over ``graph`` (see the module docstring)."""

    def __init__(
        self,
        model: HookedModel,
        graph: Graph,
        problem: EdgeProblem,
        ablation: str = "corrupted",
        dictionaries: dict[int, Dictionary] | None = None,
    ) -> None:
        if ablation not in ABLATIONS:
            raise MechscopeError(f"ablation must be one of {ABLATIONS}, not {ablation!r}")
        if model.adapter.post_attn_norm:
            raise MechscopeError(
                f"{model.cfg.family} applies a norm after attention, so its heads' outputs do not add up in "
                "the residual stream; mechscope's edge graph needs additive heads (GPT-2, GPT-NeoX, Llama, "
                "Mistral, Qwen2 and the toy transformer have them)"
            )
        c = model.cfg
        if (graph.n_layers, graph.n_heads, graph.n_kv_heads, graph.mlp) != (
            c.n_layers,
            c.n_heads,
            c.n_kv_heads,
            c.d_mlp > 0,
        ):
            raise MechscopeError(
                f"the graph ({graph.n_layers} layers, {graph.n_heads} heads) is not this model's "
                f"({c.n_layers} layers, {c.n_heads} heads): build it with Graph.from_model(model)"
            )
        self.model, self.graph, self.problem, self.ablation = model, graph, problem, ablation
        self.dictionaries = dict(dictionaries or {})
        missing = [layer for layer, _ in graph.features if layer not in self.dictionaries]
        if missing:
            raise MechscopeError(f"the graph splits MLPs {missing} into features: pass their dictionaries")
        for layer, d in self.dictionaries.items():
            if d.config.d_in != c.d_model:
                raise MechscopeError(
                    f"the dictionary for m{layer} reads width {d.config.d_in}, not {c.d_model}"
                )
        self.clean = _batch(problem.clean)
        self.n = self.clean.tokens.shape[0]
        with torch.no_grad():
            self.clean_out, logits = self.sources(self.clean)  # [S, n, pos, d_model]
            self.clean_resid = self.last_resid  # n_layers + 1 of [n, pos, d_model]
            self.clean_metric = problem.metric(logits).float()  # [n]
            if ablation == "corrupted":
                if problem.corrupted is None:
                    raise MechscopeError("corrupted ablation needs corrupted inputs")
                corrupt = _batch(problem.corrupted)
                if corrupt.tokens.shape != self.clean.tokens.shape:
                    raise MechscopeError(
                        f"corrupted inputs {tuple(corrupt.tokens.shape)} must align with the clean ones "
                        f"{tuple(self.clean.tokens.shape)}"
                    )
                self.abl_out, logits = self.sources(corrupt)
                self.corrupt_metric: Tensor | None = problem.metric(logits).float()
            elif ablation == "mean":
                self.abl_out = self.clean_out.mean(dim=1, keepdim=True).expand_as(self.clean_out).contiguous()
                self.corrupt_metric = None
            else:
                self.abl_out = torch.zeros_like(self.clean_out)
                self.corrupt_metric = None
        self._pairs = graph.edge_pairs  # [E, 2]
        self._receiver_layer = torch.tensor([r.layer for r in graph.receivers])  # [R]
        self._source_layer = [graph.node_info(s)["layer"] for s in graph.sources]
        self._inputs: dict[int, list[tuple[tuple[Any, ...], dict[str, Any]]]] = {}

    def receiver_layer(self, edges: Tensor) -> Tensor:  # [k] long -> [k] long
        """The block of each edge's receiver (``n_layers`` for logits)."""
        return self._receiver_layer[self._pairs[edges, 1]]

    # ------------------------------------------------------------------ sources

    def _source_names(self) -> list[str]:
        names = ["hook_embed"] + (["hook_pos_embed"] if "hook_pos_embed" in self.model.hook_names else [])
        for layer in range(self.graph.n_layers):
            names.append(f"blocks.{layer}.attn.hook_result")
            if self.graph.mlp:
                names.append(f"blocks.{layer}.hook_mlp_out")
        return names

    def sources(self, batch: TokenBatch) -> tuple[Tensor, Tensor]:
        """Every source's output ``[S, n, pos, d_model]`` and the logits of a plain run.

        The run's residual stream entering each block (and leaving the last) is kept in
        ``self.last_resid``.
        """
        n_layers = self.graph.n_layers
        resid = [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)]
        resid.append(f"blocks.{n_layers - 1}.hook_resid_post")
        logits, cache = self.model.run_with_cache(
            batch, names=self._source_names() + resid, logits_to_keep=self.problem.logits_to_keep
        )
        assert logits is not None
        self.last_resid = [cache[name] for name in resid]
        out = [cache["hook_embed"] + cache.get("hook_pos_embed", 0)]
        for layer in range(self.graph.n_layers):
            out += list(cache[f"blocks.{layer}.attn.hook_result"].unbind(dim=2))
            if self.graph.mlp:
                out += self.split_mlp(layer, cache[f"blocks.{layer}.hook_mlp_out"])
        return torch.stack(out), logits

    def split_mlp(self, layer: int, out: Tensor) -> list[Tensor]:
        """An MLP's output ``[batch, pos, d]`` as its source nodes' outputs: itself, or each chosen
        feature's contribution ``f_i W_dec[i]`` and the error node (the rest, ``b_dec`` included)."""
        ids = dict(self.graph.features).get(layer)
        if ids is None:
            return [out]
        d = self.dictionaries[layer]
        idx = torch.tensor(ids, dtype=torch.long)
        with torch.no_grad():
            f = d.encode(out.reshape(-1, out.shape[-1]).to(d.W_dec.dtype))[:, idx]  # [rows, k]
        parts = (f[..., None] * d.W_dec.detach()[idx]).view(*out.shape[:-1], len(ids), -1).to(out.dtype)
        return [*parts.unbind(dim=-2), out - parts.sum(dim=-2)]

    # ------------------------------------------------------------------ masked runs

    def run(self, keep: Tensor, start: int = 0) -> Tensor:  # keep [V, E] or [V, pos, E] bool -> metric [V, n]
        """The metric of each variant: receivers read ablated outputs along its dropped edges
        (``keep [V, pos, E]``: each edge kept or dropped position by position).

        ``start``: every dropped edge goes into a receiver of block ``start`` or later (``n_layers``:
        only into ``logits``), so blocks before it are the clean run's and are not recomputed.
        """
        keep = keep.to(torch.bool)
        width = self.clean.tokens.shape[1]
        if (
            keep.shape[-1] != self.graph.n_edges
            or keep.dim() not in (2, 3)
            or (keep.dim() == 3 and keep.shape[1] != width)
        ):
            raise MechscopeError(
                f"edge masks must be [variants, {self.graph.n_edges}] or [variants, {width}, "
                f"{self.graph.n_edges}], got {tuple(keep.shape)}"
            )
        v = keep.shape[0]
        shape = (v, len(self.graph.sources), len(self.graph.receivers))
        if keep.dim() == 2:
            dropped = torch.zeros(shape)
            dropped[:, self._pairs[:, 0], self._pairs[:, 1]] = (~keep.cpu()).float()
        else:  # [V, S, R, pos]
            dropped = torch.zeros(*shape, width)
            dropped[:, self._pairs[:, 0], self._pairs[:, 1]] = (~keep.cpu()).float().transpose(1, 2)
        if start and bool(dropped[:, :, self._receiver_layer < start].any()):
            raise MechscopeError(f"a dropped edge goes into a receiver before block {start}")
        state = _RunState(self, v, dropped.to(self.model.device))  # masks live with the activations
        with torch.no_grad():
            if start == 0:
                with self.model.hooks(state.hooks(), split_attention=state.splits()):
                    logits = self.model(_repeat(self.clean, v), logits_to_keep=self.problem.logits_to_keep)
            else:
                logits = self._run_from(state, v, start)
        return self._metric(logits, v).cpu()  # scores are gathered on the CPU

    def _run_from(self, state: _RunState, v: int, start: int) -> Tensor:
        """Blocks ``start..`` only, from the clean run's residual stream (sources before it: clean)."""
        for s in range(len(self.graph.sources)):
            if self._source_layer[s] < start:
                state.cur[s] = self.clean_out[s].repeat(v, 1, 1)
        x = self.clean_resid[start].repeat(v, 1, 1)
        inputs = self._block_inputs(v)
        with self.model.hooks(state.hooks(), split_attention=state.splits()):
            for layer in range(start, self.graph.n_layers):
                args, kwargs = inputs[layer]
                x = self.model.blocks[layer](x, *args, **kwargs)
        if start == self.graph.n_layers:  # only the logits receiver: apply it here
            delta = state._delta([self.graph.receiver_index("logits")])
            x = x if delta is None else x - delta[:, 0]
        k = self.problem.logits_to_keep
        return self.model.unembed(x[:, -k:] if k else x)

    def _block_inputs(self, v: int) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """HF's arguments to each block for ``v`` copies of the clean batch (kept for one ``v``)."""
        if v not in self._inputs:
            batch = _repeat(self.clean, v)
            kwargs: dict[str, Any] = {"input_ids": batch.tokens, "use_cache": False}
            if batch.is_padded:
                kwargs.update(attention_mask=batch.attention_mask, position_ids=batch.position_ids)
            self._inputs = {v: self.model.block_inputs(**kwargs)}
        return self._inputs[v]

    def _metric(self, logits: Tensor, v: int) -> Tensor:
        chunks = logits.view(v, self.n, *logits.shape[1:])
        return torch.stack([self.problem.metric(c).float() for c in chunks])

    # ------------------------------------------------------------------ gradients

    def receiver_grads(self, alpha: float = 0.0, layer: int = -1) -> Tensor:  # [R, n, pos, d_model]
        """``∂(Σ metric)/∂x_r`` for every receiver, with the outputs of one group of sources moved to
        ``clean + alpha (ablated − clean)``: the input embeddings (``layer=-1``), or block ``layer``'s
        heads and MLP."""
        state = _GradState(self, alpha, layer)
        with torch.enable_grad(), self.model.hooks(state.hooks(), split_attention=state.splits(), grad=True):
            logits = self.model(self.clean, logits_to_keep=self.problem.logits_to_keep)
            total = self.problem.metric(logits).sum()
            return state.grads(total)

    def edge_products(self, grads: Tensor, per_position: bool = False) -> Tensor:  # -> [E] or [pos, E]
        """``mean_n Σ_pos (ã_s − o_s) · g_r`` for every edge (``grads [R, n, pos, d]``): the linear
        estimate of dropping it; ``per_position``: one estimate per position, ``[pos, E]``."""
        delta = self.abl_out - self.clean_out  # [S, n, pos, d]
        if per_position:
            per_pos = torch.einsum("snpd,rnpd->psr", delta, grads) / self.n
            return per_pos[:, self._pairs[:, 0], self._pairs[:, 1]]
        per_pair = torch.einsum("snpd,rnpd->sr", delta, grads) / self.n
        return per_pair[self._pairs[:, 0], self._pairs[:, 1]]


class _RunState:
    """The hooks of one masked run (see :meth:`EdgeEngine.run`)."""

    def __init__(self, engine: EdgeEngine, v: int, dropped: Tensor) -> None:
        self.e, self.v, self.dropped = engine, v, dropped  # dropped [V, S, R]
        self.cur: list[Tensor | None] = [None] * len(engine.graph.sources)
        g = engine.graph
        self.head0 = {layer: g.source_pos[f"a{layer}.h0"] for layer in range(g.n_layers)}

    def _delta(self, receivers: list[int]) -> Tensor | None:  # [V*n, len(receivers), pos, d] or None
        mask = self.dropped[:, :, receivers]  # [V, S, r] or [V, S, r, pos]
        if not bool(mask.any()):
            return None
        avail = [s for s, t in enumerate(self.cur) if t is not None and bool(mask[:, s].any())]
        n = self.e.n
        cur = torch.stack([self.cur[s] for s in avail]).view(len(avail), self.v, n, *self.e.abl_out.shape[2:])  # type: ignore[misc]
        diff = cur - self.e.abl_out[avail][:, None]  # [s, V, n, pos, d]
        if mask.dim() == 4:  # per position: [V, S, r, pos]
            out = torch.einsum("svnpd,vsrp->vnrpd", diff, mask[:, avail].to(diff.dtype))
        else:
            out = torch.einsum("svnpd,vsr->vnrpd", diff, mask[:, avail].to(diff.dtype))
        return out.flatten(0, 1)

    def hooks(self) -> list[tuple[str, Any]]:
        g = self.e.graph
        hooks: list[tuple[str, Any]] = []

        def embed(t: Tensor, hook: Any) -> None:
            self.cur[0] = t

        def pos_embed(t: Tensor, hook: Any) -> None:
            self.cur[0] = self.cur[0] + t  # type: ignore[operator]

        hooks.append(("hook_embed", embed))
        if "hook_pos_embed" in self.e.model.hook_names:
            hooks.append(("hook_pos_embed", pos_embed))
        for layer in range(g.n_layers):
            hooks.append((f"blocks.{layer}.attn.hook_result", self._heads(layer)))
            if g.mlp:
                hooks.append((f"blocks.{layer}.hook_mlp_out", self._store(layer)))
                hooks.append((f"blocks.{layer}.hook_mlp_in", self._receive([g.receiver_index(f"m{layer}")])))
            if g.mode == "layer":
                hooks.append((f"blocks.{layer}.hook_attn_in", self._receive([g.receiver_index(f"a{layer}")])))
        hooks.append(
            (f"blocks.{g.n_layers - 1}.hook_resid_post", self._receive([g.receiver_index("logits")]))
        )
        return hooks

    def _heads(self, layer: int) -> Callable[[Tensor, Any], None]:
        def store(t: Tensor, hook: Any) -> None:  # [V*n, pos, head, d_model]
            for h in range(t.shape[2]):
                self.cur[self.head0[layer] + h] = t[:, :, h]

        return store

    def _store(self, layer: int) -> Callable[[Tensor, Any], None]:
        first = self.e.graph.source_pos[self.e.graph.mlp_nodes(layer)[0]]

        def store(t: Tensor, hook: Any) -> None:
            for j, part in enumerate(self.e.split_mlp(layer, t)):
                self.cur[first + j] = part

        return store

    def _receive(self, receivers: list[int]) -> Callable[[Tensor, Any], Tensor | None]:
        def receive(t: Tensor, hook: Any) -> Tensor | None:
            delta = self._delta(receivers)
            return None if delta is None else t - delta[:, 0]

        return receive

    def splits(self) -> dict[int, SplitAttention]:
        g = self.e.graph
        if g.mode != "qkv":
            return {}
        return {layer: self._split(layer) for layer in range(g.n_layers)}

    def _split(self, layer: int) -> SplitAttention:
        g = self.e.graph
        idx = [i for i, r in enumerate(g.receivers) if r.layer == layer and r.kind in ("q", "k", "v")]

        def inputs(x: Tensor) -> Tensor:  # [V*n, pos, d] -> [V*n, copies, pos, d]
            delta = self._delta(idx)
            base = x[:, None].expand(-1, len(idx), -1, -1)
            return base if delta is None else base - delta

        h, kv = g.n_heads, g.n_kv_heads
        return SplitAttention(inputs, torch.arange(h), h + torch.arange(kv), h + kv + torch.arange(kv))


class _GradState:
    """The hooks of one gradient run: receiver inputs as separate tensors; interpolated inputs."""

    def __init__(self, engine: EdgeEngine, alpha: float, layer: int = -1) -> None:
        self.e, self.alpha, self.layer = engine, alpha, layer
        self.captured: list[tuple[Tensor, list[int]]] = []
        """(tensor, receivers): one receiver's input, or a split layer's copies [batch, copies, pos, d]."""

    def grads(self, total: Tensor) -> Tensor:  # [R, n, pos, d_model]
        tensors = [t for t, _ in self.captured]
        found = torch.autograd.grad(total, tensors, allow_unused=True)
        out: list[Tensor | None] = [None] * len(self.e.graph.receivers)
        for (t, receivers), g in zip(self.captured, found, strict=True):
            g = torch.zeros_like(t) if g is None else g
            if len(receivers) == 1 and g.dim() == 3:
                out[receivers[0]] = g
            else:
                for j, r in enumerate(receivers):
                    out[r] = g[:, j]
        missing = [self.e.graph.receivers[i].name for i, g in enumerate(out) if g is None]
        if missing:
            raise MechscopeError(f"no gradient reached receivers {missing[:4]}")
        return torch.stack(out)  # type: ignore[arg-type]

    def hooks(self) -> list[tuple[str, Any]]:
        g = self.e.graph
        hooks: list[tuple[str, Any]] = []
        if self.alpha:
            hooks += self._interpolation()
        for layer in range(g.n_layers):
            if g.mode == "layer":
                hooks.append((f"blocks.{layer}.hook_attn_in", self._capture(g.receiver_index(f"a{layer}"))))
            if g.mlp:
                hooks.append((f"blocks.{layer}.hook_mlp_in", self._capture(g.receiver_index(f"m{layer}"))))
        hooks.append((f"blocks.{g.n_layers - 1}.hook_resid_post", self._capture(g.receiver_index("logits"))))
        return hooks

    def _interpolation(self) -> list[tuple[str, Any]]:
        """Hooks moving one group of sources ``alpha`` of the way to their ablated outputs."""
        e, a = self.e, self.alpha
        delta = e.abl_out - e.clean_out  # [S, n, pos, d]
        if self.layer < 0:  # the input node (embed + pos), through the embedding
            return [("hook_embed", lambda t, hook: t + a * delta[0])]
        g = e.graph
        first = g.source_pos[f"a{self.layer}.h0"]
        heads = delta[first : first + g.n_heads].permute(1, 2, 0, 3)  # [n, pos, head, d]
        hooks: list[tuple[str, Any]] = [
            (f"blocks.{self.layer}.attn.hook_result", lambda t, hook: t + a * heads)
        ]
        if g.mlp:
            mlp = delta[[g.source_pos[m] for m in g.mlp_nodes(self.layer)]].sum(dim=0)
            hooks.append((f"blocks.{self.layer}.hook_mlp_out", lambda t, hook: t + a * mlp))
        return hooks

    def _capture(self, r: int) -> Callable[[Tensor, Any], Tensor]:
        def capture(t: Tensor, hook: Any) -> Tensor:
            t = t.clone()
            self.captured.append((t, [r]))
            return t

        return capture

    def splits(self) -> dict[int, SplitAttention]:
        g = self.e.graph
        if g.mode != "qkv":
            return {}
        out = {}
        for layer in range(g.n_layers):
            idx = [i for i, r in enumerate(g.receivers) if r.layer == layer and r.kind in ("q", "k", "v")]

            def inputs(x: Tensor, idx: list[int] = idx) -> Tensor:
                copies = x[:, None].repeat(1, len(idx), 1, 1)
                self.captured.append((copies, idx))
                return copies

            h, kv = g.n_heads, g.n_kv_heads
            out[layer] = SplitAttention(
                inputs, torch.arange(h), h + torch.arange(kv), h + kv + torch.arange(kv)
            )
        return out
