"""Induction heads: a 2-layer attention-only toy trained on sequences that repeat themselves.

Data: each sequence is a random block of ``period`` tokens repeated to fill the context, with
the period drawn per sequence from ``[min_period, max_period]``. Only by looking up the
previous occurrence of the current token and copying its successor (an induction circuit:
a previous-token head in layer 0 K-composing with an induction head in layer 1) can a model
predict the repeats; a fixed positional offset cannot, because the period varies.

Analysis (all through ``HookedModel`` and the standard hook names):

* previous-token score of each head: mean attention from position i to i - 1;
* prefix-matching score: on repeated random tokens, mean attention from a repeated token to
  the token just after its previous occurrence (i - period + 1);
* loss on first-occurrence versus repeated tokens;
* ablation: zeroing one head's ``attn.hook_z`` and the loss on repeated tokens;
* K-composition between every layer-0 head and every layer-1 head (Elhage et al. 2021).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._fs import atomic_write_json
from ..models import HookedModel
from .registry import save_toy, user_dir
from .train import TrainConfig, next_token_loss, plot_losses, step_generator, train
from .transformer import TransformerSpec, build


@dataclass(frozen=True)
class InductionRecipe:
    """Model, data and optimiser of the induction toy (calibrated for a 2-core CPU)."""

    d_vocab: int = 64
    """Vocabulary size of the random tokens."""
    n_ctx: int = 48
    """Sequence length."""
    min_period: int = 6
    """Shortest repeated block."""
    max_period: int = 24
    """Longest repeated block (``n_ctx // 2``: two copies, the evaluation's case)."""
    d_model: int = 64
    """Residual width."""
    n_heads: int = 2
    """Heads per layer (with 4, the induction work spreads over redundant heads)."""
    batch: int = 64
    """Sequences per step."""
    steps: int = 2500
    """Optimiser steps."""
    lr: float = 3e-3
    """AdamW learning rate (after warm-up)."""
    warmup_steps: int = 50
    """Linear warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    init_std: float = 0.125
    """Initialisation scale, about 1/sqrt(d_model): without LayerNorm, a smaller one leaves attention
    near-uniform for thousands of steps."""
    seed: int = 0
    """Seed of the initialisation and of the data."""

    def spec(self) -> TransformerSpec:
        """The toy transformer: 2 layers, attention-only, no LayerNorm, no biases."""
        return TransformerSpec(
            d_vocab=self.d_vocab,
            n_ctx=self.n_ctx,
            d_model=self.d_model,
            n_layers=2,
            n_heads=self.n_heads,
            d_mlp=0,
            layer_norm=False,
            bias=False,
            init_std=self.init_std,
        )

    def train_config(self, progress: bool = True) -> TrainConfig:
        """The optimiser settings."""
        return TrainConfig(
            steps=self.steps,
            lr=self.lr,
            warmup_steps=self.warmup_steps,
            weight_decay=self.weight_decay,
            betas=(0.9, 0.99),
            grad_clip=1.0,
            progress=progress,
        )


def repeated_sequences(
    recipe: InductionRecipe, batch: int, gen: torch.Generator, period: int | None = None
) -> tuple[Tensor, Tensor]:  # tokens [batch, n_ctx], period [batch]
    """Random blocks repeated to fill the context; ``period`` fixed or drawn per sequence."""
    if period is None:
        periods = torch.randint(recipe.min_period, recipe.max_period + 1, (batch,), generator=gen)
    else:
        periods = torch.full((batch,), period)
    block = torch.randint(
        0, recipe.d_vocab, (batch, max(recipe.max_period, int(periods.max()))), generator=gen
    )
    pos = torch.arange(recipe.n_ctx)[None] % periods[:, None]  # [batch, n_ctx]
    return block.gather(1, pos), periods


def train_induction(
    recipe: InductionRecipe = InductionRecipe(),
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[Any, list[float], float]:
    """Train the induction toy; returns (model, per-step losses, seconds). ``out``: checkpoints."""
    model = build(recipe.spec(), seed=recipe.seed)

    def batches(step: int) -> tuple[Tensor, None]:
        return repeated_sequences(recipe, recipe.batch, step_generator(recipe.seed, step))[0], None

    result = train(model, batches, recipe.train_config(progress), out)
    return model, result.losses, result.seconds


def save_induction(
    model: Any, losses: list[float], seconds: float, recipe: InductionRecipe, base: Path
) -> Path:
    """Save as toy ``induction`` under ``base``, with the loss curve and the recipe."""
    where = save_toy(model, "induction", base=base)
    plot_losses(losses, where / "loss.png", title="induction toy: training loss")
    atomic_write_json(
        where / "training.json",
        {"recipe": recipe.__dict__, "seconds": round(seconds, 1), "losses": [round(x, 4) for x in losses]},
    )
    return where


# ---------------------------------------------------------------- analysis


def eval_batch(recipe: InductionRecipe, period: int, batch: int = 128, seed: int = 12345) -> Tensor:
    """Held-out repeated random tokens with a fixed period (``[batch, n_ctx]``)."""
    return repeated_sequences(recipe, batch, torch.Generator().manual_seed(seed), period)[0]


def head_scores(model: HookedModel, tokens: Tensor, period: int) -> tuple[Tensor, Tensor]:
    """Previous-token and prefix-matching scores, each ``[layer, head]``.

    Previous-token: mean attention from i to i - 1 (i >= 1). Prefix-matching: mean attention
    from i to i - period + 1, over repeated positions i >= period.
    """
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names=names)
    prev, prefix = [], []
    for name in names:
        pattern = cache[name]  # [batch, head, q_pos, k_pos]
        prev.append(pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2)))
        diag = pattern.diagonal(offset=-(period - 1), dim1=-2, dim2=-1)  # q = k + period - 1
        prefix.append(diag[..., 1:].mean(dim=(0, 2)))  # q >= period
    return torch.stack(prev), torch.stack(prefix)


def split_losses(
    model: HookedModel, tokens: Tensor, period: int, hooks: list[Any] | None = None
) -> dict[str, float]:
    """Next-token loss on first-occurrence tokens (targets < period) and repeated ones (>= period)."""
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, hooks or [])
    target = torch.arange(1, tokens.shape[1])[None].expand(tokens.shape[0], -1)  # position of each target
    first = next_token_loss(logits, tokens, target < period).item()
    repeated = next_token_loss(logits, tokens, target >= period).item()
    return {"first": first, "repeated": repeated}


def ablate_head(layer: int, head: int) -> list[tuple[str, Any]]:
    """Hooks that zero one head's output (its ``attn.hook_z``)."""

    def zero(z: Tensor, hook: Any) -> Tensor:  # [batch, pos, head, d_head]
        z = z.clone()
        z[:, :, head] = 0.0
        return z

    return [(f"blocks.{layer}.attn.hook_z", zero)]


def k_composition(model: HookedModel) -> Tensor:
    """K-composition of every layer-0 head (rows) into every layer-1 head's keys (columns).

    ``||W_QK^{h1} (W_OV^{h0})^T||_F / (||W_QK^{h1}||_F ||W_OV^{h0}||_F)`` with row-vector
    conventions (``x W_OV`` is what h0 writes; ``q W_QK k^T`` is h1's score).
    """
    hf, c = model.hf_model, model.cfg

    def per_head(linear: torch.nn.Linear) -> Tensor:  # [head, d_model, d_head]
        return linear.weight.T.reshape(c.d_model, c.n_heads, c.d_head).transpose(0, 1)

    a0, a1 = hf.model.layers[0].attn, hf.model.layers[1].attn
    w_ov = per_head(a0.v_proj) @ a0.o_proj.weight.T.reshape(c.n_heads, c.d_head, c.d_model)  # [h, d, d]
    w_qk = per_head(a1.q_proj) @ per_head(a1.k_proj).transpose(1, 2)  # [h, d, d]
    prod = torch.einsum("jab,icb->ijac", w_qk, w_ov)  # [h0, h1, d, d]: W_QK^{h1} (W_OV^{h0})^T
    norms = w_ov.flatten(1).norm(dim=1)[:, None] * w_qk.flatten(1).norm(dim=1)[None]
    return (prod.flatten(2).norm(dim=2) / norms).detach()


@dataclass(frozen=True)
class InductionReport:
    """The analysis of a trained induction toy."""

    prev_token: list[list[float]]
    """Previous-token score per ``[layer][head]``."""
    prefix_matching: list[list[float]]
    """Prefix-matching score per ``[layer][head]``."""
    loss_first: float
    """Loss on first-occurrence tokens (about ln d_vocab: they are unpredictable)."""
    loss_repeated: float
    """Loss on repeated tokens."""
    induction_head: tuple[int, int]
    """(layer, head) with the highest prefix-matching score in layer 1."""
    prev_token_head: tuple[int, int]
    """(layer, head) with the highest previous-token score in layer 0."""
    loss_repeated_ablated: float
    """Loss on repeated tokens with the induction head zero-ablated."""
    k_composition: list[list[float]]
    """K-composition ``[layer-0 head][layer-1 head]``."""


def analyze_induction(
    model: HookedModel, recipe: InductionRecipe = InductionRecipe(), period: int | None = None
) -> InductionReport:
    """Scores, split losses, ablation of the top induction head, K-composition.

    Evaluated on held-out sequences made of two copies of one random block (``period``
    defaults to ``n_ctx // 2``), so each repeated token has exactly one earlier occurrence.
    """
    period = period or recipe.n_ctx // 2
    tokens = eval_batch(recipe, period)
    prev, prefix = head_scores(model, tokens, period)
    base = split_losses(model, tokens, period)
    ind = (1, int(prefix[1].argmax()))
    ablated = split_losses(model, tokens, period, ablate_head(*ind))
    return InductionReport(
        prev_token=prev.tolist(),
        prefix_matching=prefix.tolist(),
        loss_first=base["first"],
        loss_repeated=base["repeated"],
        induction_head=ind,
        prev_token_head=(0, int(prev[0].argmax())),
        loss_repeated_ablated=ablated["repeated"],
        k_composition=k_composition(model).tolist(),
    )


def train_and_save(base: str | os.PathLike[str] | None = None) -> Path:
    """``TOYS["induction"].train()``: train with the default recipe and save (default: user cache)."""
    recipe = InductionRecipe()
    t0 = time.perf_counter()
    model, losses, _ = train_induction(recipe)
    return save_induction(model, losses, time.perf_counter() - t0, recipe, Path(base) if base else user_dir())


__all__ = [
    "InductionRecipe",
    "InductionReport",
    "ablate_head",
    "analyze_induction",
    "eval_batch",
    "head_scores",
    "k_composition",
    "repeated_sequences",
    "save_induction",
    "split_losses",
    "train_and_save",
    "train_induction",
]
