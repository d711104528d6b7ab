"""Modular addition and grokking (Nanda et al. 2023, "Progress measures for grokking").

The recipe is theirs: inputs ``a b =`` (tokens ``a, b`` in ``[0, p)`` and ``=`` = ``p``), the
answer ``(a + b) mod p`` read from the last position's logits over the first ``p`` classes;
p = 113, one layer, d_model 128, 4 heads of 32, d_mlp 512, ReLU, no LayerNorm, no biases,
30 % of the p² pairs for training, full batch, AdamW lr 1e-3, weight decay 1.0, betas
(0.9, 0.98), a 10-step warm-up. The model first memorises the training set, then, thanks to
weight decay, generalises ("groks") to the held-out 70 %.

Training computes only what the last position's logits need (:func:`last_logits`: keys and
values of the three positions, the query, MLP and unembedding of the last), which is exact,
about 2.5x cheaper than the full forward, and checked against it in the tests.

The Fourier analysis (key frequencies, neuron clusters, restricted and excluded loss) is in
:mod:`mechscope.toys.fourier`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._fs import atomic_write_json
from .fourier import embedding_spectrum
from .registry import save_toy, user_dir
from .train import TrainConfig, TrainResult, train
from .transformer import TransformerSpec, build

NAME = "modular_addition"
"""The toy's name: ``load_model("toy/modular_addition")``."""


@dataclass(frozen=True)
class ModularRecipe:
    """Model, data split and optimiser of the modular-addition toy (Nanda et al.'s recipe)."""

    p: int = 113
    """The modulus (a prime); the vocabulary is ``0..p-1`` plus ``=`` (token ``p``)."""
    frac_train: float = 0.3
    """Fraction of the p² pairs used for training; the rest is the test set."""
    d_model: int = 128
    """Residual width."""
    n_heads: int = 4
    """Attention heads (of width ``d_model // n_heads``)."""
    d_mlp: int = 512
    """MLP width (ReLU)."""
    steps: int = 25_000
    """Full-batch optimiser steps."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1.0
    """AdamW weight decay: what makes the model generalise."""
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW betas."""
    warmup_steps: int = 10
    """Linear learning-rate warm-up."""
    init_std: float = 0.8 / math.sqrt(128)
    """Initialisation scale (TransformerLens's default ``0.8 / sqrt(d_model)``)."""
    seed: int = 0
    """Seed of the initialisation and of the train/test split."""
    eval_every: int = 100
    """Log train/test loss and accuracy and the embedding's Fourier spectrum every this many steps."""
    checkpoint_every: int = 1000
    """Checkpoint every this many steps when training into an output directory."""

    def spec(self) -> TransformerSpec:
        """One layer with an MLP, no LayerNorm, no biases, a context of 3 (``a b =``)."""
        return TransformerSpec(
            d_vocab=self.p + 1,
            n_ctx=3,
            d_model=self.d_model,
            n_layers=1,
            n_heads=self.n_heads,
            d_mlp=self.d_mlp,
            layer_norm=False,
            bias=False,
            act="relu",
            init_std=self.init_std,
        )

    def train_config(self, progress: bool = True) -> TrainConfig:
        """The optimiser settings."""
        return TrainConfig(
            steps=self.steps,
            lr=self.lr,
            weight_decay=self.weight_decay,
            betas=self.betas,
            warmup_steps=self.warmup_steps,
            checkpoint_every=self.checkpoint_every,
            eval_every=self.eval_every,
            progress=progress,
        )


def all_pairs(p: int) -> tuple[Tensor, Tensor]:
    """Every input ``[a, b, =]`` in row-major ``(a, b)`` order (``[p*p, 3]``) and its answer (``[p*p]``)."""
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    return torch.stack([a, b, torch.full_like(a, p)], dim=1), (a + b) % p


def split(recipe: ModularRecipe) -> tuple[Tensor, Tensor]:
    """Indices (into :func:`all_pairs`) of the training and the test pairs; seeded."""
    perm = torch.randperm(recipe.p**2, generator=torch.Generator().manual_seed(recipe.seed))
    n_train = int(recipe.frac_train * recipe.p**2)
    return perm[:n_train].sort().values, perm[n_train:].sort().values


def last_logits(model: Any, tokens: Tensor) -> Tensor:  # tokens [batch, pos] -> [batch, vocab]
    """Logits at the last position of a one-layer toy, computing only what they depend on.

    Equal to ``model(input_ids=tokens).logits[:, -1]``; models with more layers take that path.
    """
    inner = model.model
    if len(inner.layers) != 1:
        return model(input_ids=tokens).logits[:, -1]
    block, n = inner.layers[0], tokens.shape[1]
    attn = block.attn
    x = inner.embed_tokens(tokens) + inner.embed_positions.weight[:n]  # [batch, pos, d_model]
    h = block.ln_1(x)
    heads = (tokens.shape[0], -1, attn.n_heads, attn.d_head)
    q = attn.q_proj(h[:, -1]).view(heads[0], attn.n_heads, attn.d_head)  # [batch, head, d_head]
    k, v = attn.k_proj(h).view(heads), attn.v_proj(h).view(heads)  # [batch, pos, head, d_head]
    pattern = torch.softmax(torch.einsum("bhd,bphd->bhp", q, k) * attn.scaling, dim=-1)
    z = torch.einsum("bhp,bphd->bhd", pattern, v).flatten(1)  # [batch, head * d_head]
    mid = x[:, -1] + attn.o_proj(z)
    post = mid + block.mlp(block.ln_2(mid))
    return model.lm_head(inner.ln_f(post))


def answer_loss(model: nn.Module, tokens: Tensor, answers: Tensor, p: int) -> Tensor:
    """Cross-entropy of the answers from the last position's logits over the ``p`` residues.

    In float64, as Nanda et al. do: in float32 the memorised training loss bottoms out near
    1e-7, where rounding makes it spike and slows grokking down.
    """
    return nn.functional.cross_entropy(last_logits(model, tokens)[:, :p].double(), answers)


def train_modular_addition(
    recipe: ModularRecipe = ModularRecipe(),
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[Any, TrainResult]:
    """Train the toy; returns (model, result with the evaluation ``history``). ``out``: checkpoints."""
    model = build(recipe.spec(), seed=recipe.seed)
    tokens, answers = all_pairs(recipe.p)
    train_idx, test_idx = split(recipe)
    x_train, y_train = tokens[train_idx], answers[train_idx]

    def batches(step: int) -> tuple[Tensor, None]:
        return x_train, None

    def loss_fn(model: nn.Module, x: Tensor, _: Tensor | None) -> Tensor:
        return answer_loss(model, x, y_train, recipe.p)

    def evaluate(model: nn.Module) -> dict[str, Any]:
        logits = last_logits(model, tokens)[:, : recipe.p]
        losses = nn.functional.cross_entropy(logits.double(), answers, reduction="none")
        correct = (logits.argmax(-1) == answers).float()
        spectrum = embedding_spectrum(model, recipe.p)
        return {
            "train_loss": _sig(losses[train_idx].mean()),
            "test_loss": _sig(losses[test_idx].mean()),
            "train_acc": _sig(correct[train_idx].mean()),
            "test_acc": _sig(correct[test_idx].mean()),
            "embed_spectrum": [round(float(x), 5) for x in spectrum],
        }

    result = train(model, batches, recipe.train_config(progress), out, loss_fn=loss_fn, evaluate=evaluate)
    return model, result


def _sig(x: Tensor | float) -> float:
    return float(f"{float(x):.6g}")


def save_modular(model: Any, result: TrainResult, recipe: ModularRecipe, base: Path) -> Path:
    """Save as toy ``modular_addition`` under ``base``, with ``training.json`` and the curves."""
    from .modular_plots import plot_training

    where = save_toy(model, NAME, base=base)
    recipe_json = {**asdict(recipe), "betas": list(recipe.betas)}
    atomic_write_json(
        where / "training.json",
        {"recipe": recipe_json, "seconds": round(result.seconds, 1), "history": result.history},
    )
    plot_training(result.history, where / "training.png")
    return where


def train_and_save(base: str | os.PathLike[str] | None = None, progress: bool = True) -> Path:
    """``TOYS["modular_addition"].train()``: train with the default recipe (checkpointed, resumable)."""
    recipe = ModularRecipe()
    root = Path(base) if base else user_dir()
    t0 = time.perf_counter()
    model, result = train_modular_addition(recipe, out=root / f".{NAME}-checkpoints", progress=progress)
    result.seconds = time.perf_counter() - t0
    return save_modular(model, result, recipe, root)
