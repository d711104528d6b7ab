"""The demo's dictionary stage: a TopK SAE on SmolLM2's middle residual stream, evaluated.

1. Pack the offline corpus (the Python standard library's sources and ``pydoc_data``
   prose) into ``ctx_len`` contexts with BOS first; stream the hook's activations through a
   bounded shuffle buffer (BOS rows masked: they are attention-sink outliers), stopping each
   forward at the hook's block.
2. Train a TopK SAE (AuxK on) with the standard trainer: unit-mean-squared-norm
   normalisation folded into the saved weights, geometric-median ``b_dec``.
3. Evaluate it on held-out contexts (those after the training ones): FVU, L0, dead/dense
   fractions, cosine, CE loss recovered against zero and mean ablation, delta LM loss, KL.
4. Write ``sae/`` (the saved dictionary, ``metrics.jsonl``, ``train.json``; no checkpoints),
   ``sae/density.png`` and ``sae.json`` (the summary the report reads).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._fs import atomic_write_json
from ..data import TokenStream, open_documents
from ..dictionary import DictionaryConfig
from ..dictionary.evaluate import evaluate_dictionary, plot_density
from ..dictionary.store import MaskConfig, StreamingSource
from ..dictionary.train import TrainConfig, train
from ..models import HookedModel


@dataclass(frozen=True)
class SAEStageConfig:
    """The demo's SAE: where it reads, how big it is and how long it trains."""

    layer: int | None = None
    """Block whose ``hook_resid_pre`` the SAE reads (None: the middle block)."""
    expansion: int = 8
    """Latents per residual dimension (SmolLM2: 576 x 8 = 4608 latents)."""
    k: int = 32
    """Active latents per token."""
    train_tokens: int = 49_152
    """Training tokens (each seen once)."""
    batch_size: int = 1024
    """Tokens per training step."""
    lr: float = 1e-3
    """Adam learning rate (warm-up over the first 10 steps, linear decay over the last 20%)."""
    ctx_len: int = 128
    """Tokens per context."""
    eval_contexts: int = 8
    """Held-out contexts for the evaluation (CE/KL need full forward passes)."""
    seed: int = 0
    """Seed of the shuffle, the initialisation and the training order."""


def sae_stage(
    model: HookedModel, run_dir: Path, config: SAEStageConfig, say: Callable[[str], None]
) -> dict[str, Any]:
    """Train and evaluate the demo SAE; write ``sae/`` and ``sae.json``; return the summary."""
    layer = model.cfg.n_layers // 2 if config.layer is None else config.layer
    stream = TokenStream(open_documents("stdlib"), model, ctx_len=config.ctx_len, bos="bos")
    summary = train_and_evaluate(
        model, f"blocks.{layer}.hook_resid_pre", stream, config, run_dir / "sae", say
    )
    rel = {k: str((run_dir / "sae" / summary[k]).relative_to(run_dir)) for k in ("dictionary", "density_png")}
    summary = {**summary, **rel}
    atomic_write_json(run_dir / "sae.json", summary)
    return summary


def train_and_evaluate(
    model: HookedModel, hook: str, stream: TokenStream, config: SAEStageConfig, out: Path,
    say: Callable[[str], None], on_step: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train a TopK SAE at ``hook`` on ``stream``'s first contexts, evaluate it on the next ones.

    Writes ``out/`` (``topk/`` the dictionary, ``metrics.jsonl``, ``train.json``,
    ``density.png``); returns the summary, with paths relative to ``out``. ``on_step(step,
    steps)`` is called after every optimiser step.
    """
    per_ctx = config.ctx_len - 1  # BOS rows are masked out
    train_ctx = math.ceil(config.train_tokens / per_ctx) + 1
    source = StreamingSource(
        model, stream, [hook], n_tokens=train_ctx * config.ctx_len, buffer_tokens=8 * config.batch_size,
        batch_size=16, mask=MaskConfig(bos=True),
    )  # fmt: skip
    d_in = model.cfg.d_model
    dcfg = DictionaryConfig(
        architecture="topk", d_in=d_in, d_sae=config.expansion * d_in, k=config.k, hook_name=hook,
        model_name=model.cfg.name, metadata={"ctx_len": config.ctx_len, "bos": "bos", "source": stream.name},
    )  # fmt: skip
    steps = max(1, config.train_tokens // config.batch_size)
    tcfg = TrainConfig(
        lr=config.lr, lr_warmup_steps=min(10, steps // 5), batch_size=config.batch_size,
        total_tokens=config.train_tokens, seed=config.seed, output_dir=out,
        checkpoint_every=0, keep_checkpoints=1, log_every=max(1, steps // 20), progress=False,
        dead_window_tokens=config.train_tokens // 2,
    )  # fmt: skip
    say(f"training a TopK SAE ({dcfg.d_sae} latents, k={config.k}) on {hook}: {config.train_tokens} tokens")
    t0 = time.perf_counter()
    callbacks = [] if on_step is None else [lambda info: on_step(info.step, steps)]
    result = train(dcfg, source, tcfg, names=["topk"], callbacks=callbacks)
    train_s = time.perf_counter() - t0
    d = result.dictionaries["topk"]
    # Short and streamed (not resumable bit-exactly), so the trainer's final checkpoint
    # (weights plus Adam moments, ~6x the dictionary) is dropped.
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    say(f"trained in {train_s:.0f} s; evaluating on {config.eval_contexts} held-out contexts")
    tokens = stream.take(config.eval_contexts, start=train_ctx + 1)
    t0 = time.perf_counter()
    ev = evaluate_dictionary(model, d, tokens, batch_size=4, exclude_bos=True)
    eval_s = time.perf_counter() - t0
    say(ev.summary())
    plot_density(ev, out / "density.png", title=f"Feature density, TopK SAE at {hook}")
    return {
        "hook": hook,
        "architecture": "topk",
        "d_in": d_in,
        "d_sae": dcfg.d_sae,
        "k": config.k,
        "train_tokens": result.tokens,
        "train_contexts": train_ctx,
        "steps": result.steps,
        "train_seconds": round(train_s, 1),
        "eval_seconds": round(eval_s, 1),
        "eval_tokens": int(tokens.numel()),
        "dictionary": str(result.paths["topk"].relative_to(out)),
        "density_png": "density.png",
        "metrics": ev.as_dict(),
        "source": stream.describe(),
    }
