"""Compiled ground-truth models: hand-set weights that implement a known algorithm through
known heads and paths, in the toy transformer (so every hook name and method works on them).

Each residual stream is laid out in named blocks of dimensions (:class:`Layout`); each head
reads some blocks and writes others, so what each component does, and which edges carry the
algorithm, is known by construction. Each model also has *distractor* components that are
active but outside the circuit (they write into blocks nothing in the circuit reads, or shift
every logit by the same amount), so that finding the circuit is not trivial.

* ``compiled_induction`` (2 layers, attention only): a previous-token head ``a0.h0`` copies
  each token into the next position; the induction head ``a1.h0`` K-composes with it and
  predicts the token that followed the most recent earlier occurrence of the current token
  (the current token when there is none).
* ``compiled_histogram`` (1 layer with MLP; attention then MLP): with token 0 as BOS at
  position 0, the head ``a0.h0`` attends equally to BOS and to every earlier copy of the
  current token, so it reads ``1 / (count + 1)`` off BOS; the MLP ``m0`` turns that number into
  the class ``count`` (tracr's ``hist``, made causal).
* ``compiled_features`` (1 layer): ``m0`` writes a known sparse feature vector per token,
  ``sum_f a_f(token) d_f``, into a known subspace (orthonormal, randomly rotated directions);
  the unembedding promotes token ``target(f)`` by ``a_f``.

:class:`GroundTruth` holds each model's algorithm, circuit (components and edges, in the
names of :mod:`mechscope.toys.edges`) and, for the features model, the feature directions.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._fs import atomic_write_json
from .edges import Edge
from .train import save_model_dir
from .transformer import ToyForCausalLM, TransformerSpec, build

SHARP = 40.0
"""Attention score gap that makes a hand-set pattern effectively one-hot (e^-40 leaks)."""


class Layout:
    """Named, contiguous blocks of residual-stream dimensions."""

    def __init__(self, **sizes: int) -> None:
        self.slices: dict[str, slice] = {}
        start = 0
        for name, size in sizes.items():
            self.slices[name] = slice(start, start + size)
            start += size
        self.d_model = start

    def __getitem__(self, name: str) -> slice:
        return self.slices[name]

    def index(self, name: str, i: int = 0) -> int:
        """The residual dimension of entry ``i`` of block ``name``."""
        return self.slices[name].start + i


@dataclass(frozen=True)
class GroundTruth:
    """What a compiled model computes and through which components."""

    name: str
    """The toy name (``load_model("toy/<name>")``)."""
    description: str
    """The algorithm in one sentence."""
    components: tuple[str, ...]
    """Nodes of the circuit (``input``, ``a{L}.h{H}``, ``m{L}``, ``logits``)."""
    edges: tuple[Edge, ...]
    """Edges of the circuit, ``(source, receiver)``: ablating all others keeps the output."""
    distractors: tuple[str, ...]
    """Active components outside the circuit."""
    algorithm: Callable[[Tensor], Tensor] = field(repr=False, compare=False)
    """``algorithm(tokens [batch, pos]) -> answers [batch, pos]`` (-1 where undefined)."""
    sample: Callable[[int, torch.Generator], Tensor] = field(repr=False, compare=False)
    """``sample(batch, generator) -> tokens [batch, pos]`` from the algorithm's input domain."""
    feature_hook: str | None = None
    """Hook whose activations hold the known features (features model only)."""
    feature_directions: Tensor | None = field(default=None, repr=False, compare=False)
    """``[n_features, d_model]`` unit directions of the features at ``feature_hook``."""
    feature_acts: Tensor | None = field(default=None, repr=False, compare=False)
    """``[d_vocab, n_features]`` each token's feature activations."""

    def edge_names(self) -> list[str]:
        """The circuit's edges as ``"source->receiver"``."""
        return [f"{s}->{d}" for s, d in self.edges]

    def to_json(self) -> dict[str, Any]:
        """The serialisable part (written as ``circuit.json`` next to the weights)."""
        return {
            "name": self.name,
            "description": self.description,
            "components": list(self.components),
            "edges": self.edge_names(),
            "distractors": list(self.distractors),
            "feature_hook": self.feature_hook,
        }


def _blank(spec: TransformerSpec) -> ToyForCausalLM:
    model = build(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model.eval()


def _set_head(model: ToyForCausalLM, layer: int, head: int, **weights: Tensor) -> None:
    """Set head ``(layer, head)``'s ``q``, ``k``, ``v`` ``[d_head, d_model]`` and ``o`` ``[d_model, d_head]``."""
    attn = model.model.layers[layer].attn
    rows = slice(head * attn.d_head, (head + 1) * attn.d_head)
    with torch.no_grad():
        for port in "qkv":
            if port in weights:
                getattr(attn, f"{port}_proj").weight[rows] = weights[port]
        if "o" in weights:
            attn.o_proj.weight[:, rows] = weights["o"]


def _qk_scale(model: ToyForCausalLM) -> float:
    """Multiply query weights by this to undo the ``1 / sqrt(d_head)`` score scaling."""
    return math.sqrt(model.config.d_head)


# ------------------------------------------------------------------ induction


def induction_answers(tokens: Tensor) -> Tensor:  # [batch, pos] -> [batch, pos]
    """The token after the most recent earlier occurrence of the current token, else the current one."""
    b, n = tokens.shape
    # match[b, i, j]: tokens[j - 1] == tokens[i] for 1 <= j <= i
    prev = torch.cat([torch.full((b, 1), -1), tokens[:, :-1]], dim=1)
    match = (prev[:, None, :] == tokens[:, :, None]) & torch.ones(n, n, dtype=torch.bool).tril()
    last = torch.where(match, torch.arange(n), -1).max(dim=2).values  # [batch, pos]
    return torch.where(last >= 0, tokens.gather(1, last.clamp(min=0)), tokens)


def _set_induction_weights(model: ToyForCausalLM, lay: Layout, d_vocab: int, n_ctx: int) -> None:
    """Embeddings, unembedding and the four heads of :func:`compile_induction`."""
    d_head = model.config.d_head
    s = _qk_scale(model)
    eye_v, eye_n = torch.eye(d_vocab), torch.eye(n_ctx)

    def zeros() -> Tensor:
        return torch.zeros(d_head, lay.d_model)

    with torch.no_grad():
        model.model.embed_tokens.weight[:, lay["tok"]] = eye_v
        model.model.embed_tokens.weight[:, lay.index("one")] = 1.0
        model.model.embed_positions.weight[:, lay["pos"]] = eye_n
        model.lm_head.weight[:, lay["out"]] = eye_v
    # a0.h0: query at i points at position i - 1 (0 at i = 0); value: the token -> prev.
    q, k, v, o = zeros(), zeros(), zeros(), torch.zeros(lay.d_model, d_head)
    to_prev = torch.zeros(n_ctx, n_ctx)  # column i (query position) -> row i - 1 (key position)
    to_prev[torch.arange(n_ctx - 1), torch.arange(1, n_ctx)] = 1.0
    to_prev[0, 0] = 1.0
    q[:n_ctx, lay["pos"]] = SHARP * s * to_prev
    k[:n_ctx, lay["pos"]] = eye_n
    v[:d_vocab, lay["tok"]] = eye_v
    o[lay["prev"], :d_vocab] = eye_v
    _set_head(model, 0, 0, q=q, k=k, v=v, o=o)
    # a0.h1 (distractor): uniform causal attention, the mean token -> junk.
    v, o = zeros(), torch.zeros(lay.d_model, d_head)
    v[:d_vocab, lay["tok"]] = eye_v
    o[lay["junk"], :d_vocab] = eye_v
    _set_head(model, 0, 1, v=v, o=o)
    # a1.h0: score = BIG [tok_i == prev_j] + RECENT j / n_ctx - BIG [j == 0]; value: token -> out.
    recent, big = 2.0 * n_ctx, 8.0 * n_ctx
    q, k, v, o = zeros(), zeros(), zeros(), torch.zeros(lay.d_model, d_head)
    q[:d_vocab, lay["tok"]] = big * s * eye_v
    k[:d_vocab, lay["prev"]] = eye_v
    q[d_vocab, lay.index("one")] = recent * s
    k[d_vocab, lay["pos"]] = torch.arange(n_ctx) / n_ctx
    q[d_vocab + 1, lay.index("one")] = -big * s
    k[d_vocab + 1, lay.index("pos", 0)] = 1.0
    v[:d_vocab, lay["tok"]] = eye_v
    o[lay["out"], :d_vocab] = eye_v
    _set_head(model, 1, 0, q=q, k=k, v=v, o=o)
    # a1.h1 (distractor): uniform attention, sum of junk -> the same amount on every logit.
    v, o = zeros(), torch.zeros(lay.d_model, d_head)
    v[0, lay["junk"]] = 1.0
    o[lay["out"], 0] = 3.0
    _set_head(model, 1, 1, v=v, o=o)


def compile_induction(d_vocab: int = 8, n_ctx: int = 16) -> tuple[ToyForCausalLM, GroundTruth]:
    """Previous-token head ``a0.h0`` K-composing with induction head ``a1.h0``; distractors ``a0.h1``
    (averages the tokens into ``junk``) and ``a1.h1`` (reads ``junk``, shifts every logit equally)."""
    lay = Layout(tok=d_vocab, pos=n_ctx, one=1, prev=d_vocab, junk=d_vocab, out=d_vocab)
    d_head = max(d_vocab, n_ctx) + 2
    spec = TransformerSpec(
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        d_model=lay.d_model,
        n_layers=2,
        n_heads=2,
        d_head=d_head,
        d_mlp=0,
        layer_norm=False,
        bias=False,
    )
    model = _blank(spec)
    _set_induction_weights(model, lay, d_vocab, n_ctx)

    def sample(batch: int, gen: torch.Generator) -> Tensor:
        return torch.randint(0, d_vocab, (batch, n_ctx), generator=gen)

    truth = GroundTruth(
        name="compiled_induction",
        description="predict the token after the most recent earlier occurrence of the current token",
        components=("input", "a0.h0", "a1.h0", "logits"),
        edges=(
            ("input", "a0.h0<q>"),
            ("input", "a0.h0<k>"),
            ("input", "a0.h0<v>"),
            ("input", "a1.h0<q>"),
            ("input", "a1.h0<k>"),
            ("a0.h0", "a1.h0<k>"),
            ("input", "a1.h0<v>"),
            ("a1.h0", "logits"),
        ),
        distractors=("a0.h1", "a1.h1"),
        algorithm=induction_answers,
        sample=sample,
    )
    return model, truth


# ------------------------------------------------------------------ histogram


def histogram_answers(tokens: Tensor) -> Tensor:  # [batch, pos] -> [batch, pos]
    """How many times the current token occurred so far (itself included); -1 at the BOS position."""
    n = tokens.shape[1]
    same = (tokens[:, :, None] == tokens[:, None, :]) & torch.ones(n, n, dtype=torch.bool).tril()
    counts = same.sum(dim=2)
    counts[:, 0] = -1
    return counts


def _set_histogram_heads(model: ToyForCausalLM, lay: Layout, vocab: int) -> None:
    """Embeddings, unembedding and the two heads of :func:`compile_histogram`."""
    d_head = model.config.d_head
    s = _qk_scale(model)
    eye = torch.eye(vocab)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, lay["tok"]] = eye
        model.model.embed_tokens.weight[:, lay.index("one")] = 1.0
        model.model.embed_tokens.weight[0, lay.index("bos")] = 1.0
        model.lm_head.weight[:, lay["out"]] = eye
    # a0.h0: score = SHARP ([tok_i == tok_j] + [j is BOS]); value: the BOS flag -> frac.
    q, k = torch.zeros(d_head, lay.d_model), torch.zeros(d_head, lay.d_model)
    q[:vocab, lay["tok"]] = SHARP * s * eye
    q[0, lay.index("tok", 0)] = 0.0  # BOS as a query matches nothing
    k[:vocab, lay["tok"]] = eye
    k[0, lay.index("tok", 0)] = 0.0
    q[vocab, lay.index("one")] = SHARP * s
    k[vocab, lay.index("bos")] = 1.0
    v, o = torch.zeros(d_head, lay.d_model), torch.zeros(lay.d_model, d_head)
    v[0, lay.index("bos")] = 1.0
    o[lay.index("frac"), 0] = 1.0
    _set_head(model, 0, 0, q=q, k=k, v=v, o=o)
    # a0.h1 (distractor): attends to itself, adds 2 x (its BOS flag + 1) to every logit.
    v, o = torch.zeros(d_head, lay.d_model), torch.zeros(lay.d_model, d_head)
    v[0, lay.index("one")] = 1.0
    v[0, lay.index("bos")] = 1.0
    o[lay["out"], 0] = 2.0
    _set_head(model, 0, 1, v=v, o=o)


def compile_histogram(d_vocab: int = 8, n_ctx: int = 16) -> tuple[ToyForCausalLM, GroundTruth]:
    """Head ``a0.h0`` reads ``1 / (count + 1)`` off BOS, MLP ``m0`` maps it to the class ``count``.

    Token 0 is BOS (position 0 only); answers are logits over classes ``1..n_ctx - 1`` (the
    vocabulary has at least ``n_ctx`` entries). Distractor ``a0.h1`` attends to the previous
    token and shifts every logit by the same amount.
    """
    vocab = max(d_vocab, n_ctx)
    n_classes = n_ctx - 1  # counts 1..n_ctx-1
    lay = Layout(tok=vocab, one=1, bos=1, frac=1, out=vocab)
    d_head = vocab + 1
    spec = TransformerSpec(
        d_vocab=vocab,
        n_ctx=n_ctx,
        d_model=lay.d_model,
        n_layers=1,
        n_heads=2,
        d_head=d_head,
        d_mlp=4 * n_classes,
        layer_norm=False,
        bias=False,
    )
    model = _blank(spec)
    _set_histogram_heads(model, lay, vocab)
    _set_count_mlp(model, lay, n_classes)

    def sample(batch: int, gen: torch.Generator) -> Tensor:
        tokens = torch.randint(1, d_vocab, (batch, n_ctx), generator=gen)
        tokens[:, 0] = 0
        return tokens

    truth = GroundTruth(
        name="compiled_histogram",
        description="count the occurrences of the current token so far (BOS first): attention, then MLP",
        components=("input", "a0.h0", "m0", "logits"),
        edges=(
            ("input", "a0.h0<q>"),
            ("input", "a0.h0<k>"),
            ("input", "a0.h0<v>"),
            ("a0.h0", "m0"),
            ("input", "m0"),
            ("m0", "logits"),
        ),
        distractors=("a0.h1",),
        algorithm=histogram_answers,
        sample=sample,
    )
    return model, truth


def _set_count_mlp(model: ToyForCausalLM, lay: Layout, n_classes: int) -> None:
    """``m0``: ``frac = 1 / (c + 1)`` -> logit 10 on class ``c`` (tracr's categorical MLP).

    ``u_c = [c' <= c]`` is a step at the midpoint ``t_c`` between ``1/(c+1)`` and ``1/(c+2)``,
    built from two ReLUs, ``relu(g (x - t_c) + 1) - relu(g (x - t_c))``, exact whenever ``x`` is
    at least ``1/g`` away from ``t_c``; then class ``c`` gets ``u_c - u_{c-1}``.
    """
    mlp = model.model.layers[0].mlp
    c = torch.arange(1, n_classes + 1, dtype=torch.float64)
    thresholds = (1 / (c + 1) + 1 / (c + 2)) / 2
    gain = 4.0 / float((1 / (c + 1) - 1 / (c + 2)).min())  # values sit >= 2/gain from a threshold
    w_in = torch.zeros(mlp.fc_in.weight.shape, dtype=torch.float64)
    w_out = torch.zeros(mlp.fc_out.weight.shape, dtype=torch.float64)
    for i in range(n_classes):
        for j, offset in enumerate((1.0, 0.0)):  # unit 2i: relu(g(x-t)+1); unit 2i+1: relu(g(x-t))
            unit = 2 * i + j
            w_in[unit, lay.index("frac")] = gain
            w_in[unit, lay.index("one")] = offset - gain * thresholds[i]
            sign = 1.0 if j == 0 else -1.0  # u_c = unit 2i - unit 2i+1
            w_out[lay.index("out", i + 1), unit] += 10.0 * sign
            if i + 2 <= n_classes:
                w_out[lay.index("out", i + 2), unit] -= 10.0 * sign
    with torch.no_grad():
        mlp.fc_in.weight.copy_(w_in.float())
        mlp.fc_out.weight.copy_(w_out.float())


# ------------------------------------------------------------------ sparse features


def compile_features(
    d_vocab: int = 32, n_features: int = 16, per_token: int = 2, seed: int = 0
) -> tuple[ToyForCausalLM, GroundTruth]:
    """``m0`` writes ``sum_f a_f(token) d_f`` into the ``feat`` block; the unembedding promotes
    token ``f % d_vocab`` by ``a_f`` for each feature ``f``.

    Each token activates ``per_token`` features (seeded choice) with magnitudes in ``[0.5, 1.5]``;
    the ``d_f`` are orthonormal but randomly rotated inside the ``feat`` block, so they are not
    neuron- or axis-aligned. Distractor ``a0.h0`` shifts every logit by the same amount.
    """
    gen = torch.Generator().manual_seed(seed)
    lay = Layout(tok=d_vocab, one=1, feat=n_features, shift=1)
    acts = torch.zeros(d_vocab, n_features)
    for t in range(d_vocab):
        chosen = torch.randperm(n_features, generator=gen)[:per_token]
        acts[t, chosen] = 0.5 + torch.rand(per_token, generator=gen)
    rotation, _ = torch.linalg.qr(torch.randn(n_features, n_features, generator=gen, dtype=torch.float64))
    directions = torch.zeros(n_features, lay.d_model)
    directions[:, lay["feat"]] = rotation.float()  # row f: d_f
    spec = TransformerSpec(
        d_vocab=d_vocab,
        n_ctx=8,
        d_model=lay.d_model,
        n_layers=1,
        n_heads=1,
        d_head=4,
        d_mlp=n_features,
        layer_norm=False,
        bias=False,
    )
    model = _blank(spec)
    mlp = model.model.layers[0].mlp
    targets = torch.zeros(n_features, d_vocab)
    targets[torch.arange(n_features), torch.arange(n_features) % d_vocab] = 1.0
    with torch.no_grad():
        model.model.embed_tokens.weight[:, lay["tok"]] = torch.eye(d_vocab)
        model.model.embed_tokens.weight[:, lay.index("one")] = 1.0
        mlp.fc_in.weight[:, lay["tok"]] = acts.T  # neuron f = relu(a_f(token)) = a_f(token)
        mlp.fc_out.weight.copy_(directions.T)
        model.lm_head.weight.copy_(targets.T @ directions)  # logit v = sum_{f -> v} <d_f, resid>
        model.lm_head.weight[:, lay.index("shift")] = 1.0
    v, o = torch.zeros(4, lay.d_model), torch.zeros(lay.d_model, 4)
    v[0, lay.index("one")] = 1.0
    o[lay.index("shift"), 0] = 5.0
    _set_head(model, 0, 0, v=v, o=o)

    def algorithm(tokens: Tensor) -> Tensor:
        return (acts[tokens] @ targets).argmax(dim=-1)

    def sample(batch: int, g: torch.Generator) -> Tensor:
        return torch.randint(0, d_vocab, (batch, spec.n_ctx), generator=g)

    truth = GroundTruth(
        name="compiled_features",
        description="each token's known sparse features, written by m0 into a known subspace, pick the output",
        components=("input", "m0", "logits"),
        edges=(("input", "m0"), ("m0", "logits")),
        distractors=("a0.h0",),
        algorithm=algorithm,
        sample=sample,
        feature_hook="blocks.0.hook_mlp_out",
        feature_directions=directions,
        feature_acts=acts,
    )
    return model, truth


COMPILED: dict[str, Callable[[], tuple[ToyForCausalLM, GroundTruth]]] = {
    "compiled_induction": compile_induction,
    "compiled_histogram": compile_histogram,
    "compiled_features": compile_features,
}
"""Every compiled model by toy name, with its default size."""


def ground_truth(name: str) -> GroundTruth:
    """The ground truth of compiled toy ``name``."""
    if name not in COMPILED:
        raise KeyError(f"no compiled toy {name!r}; known: {', '.join(COMPILED)}")
    return COMPILED[name]()[1]


VERSION = 1
"""Bumped whenever a construction changes, so that cached model directories are rebuilt."""


def build_compiled(name: str, base: str | os.PathLike[str]) -> Path:
    """Write compiled toy ``name`` (weights, ``config.json``, ``circuit.json``) under ``base``.

    Returns at once when ``base/name`` already holds this version of the construction.
    """
    where = Path(base) / name
    stamp = where / "circuit.json"
    if stamp.is_file() and (where / "model.safetensors").is_file():
        try:
            if json.loads(stamp.read_text()).get("version") == VERSION:
                return where
        except (OSError, ValueError):
            pass  # unreadable: rebuild
    if name not in COMPILED:
        raise KeyError(f"no compiled toy {name!r}; known: {', '.join(COMPILED)}")
    model, truth = COMPILED[name]()
    save_model_dir(model, where)
    atomic_write_json(stamp, {**truth.to_json(), "version": VERSION})
    return where
