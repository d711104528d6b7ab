"""The dictionary trainer: Adam with schedules, dead-latent tracking, checkpoints, DDP.

One run trains one or several dictionaries (different hooks or hyper-parameters) from ONE
pass over an activation source: each global batch is read once and fed to all of them.

1. Initialise (fresh run): read ``init_batches`` global batches; per dictionary estimate the
   normalisation scalar ``c`` (``schedule.norm_scale``; transcoders also ``c_out`` from the
   target), record it in ``config.norm_scale`` / ``norm_scale_out``, and set ``b_dec`` from
   the normalised targets (geometric median, mean or zeros).
   Resumed run: load the newest complete checkpoint instead (``checkpoint.latest``).
2. For each global batch ``s`` (``s = 0 .. total_steps - 1``, ``total_steps = total_tokens //
   batch_size``), per dictionary, the step protocol every architecture implements:
   ``out = d.training_forward(c x, c_out y, sparsity_coefficient=lam_s, dead_mask=m)``;
   ``out.loss.backward()``; (DDP: gradients all-reduced); non-finite check;
   ``d.before_optimizer_step()``; Adam step at ``lr_s``; ``zero_grad(set_to_none=True)``;
   ``d.after_step()``. Dead tracking: ``tokens_since_fired += batch_size`` and is reset to 0
   where ``out.fired``; ``m = tokens_since_fired >= dead_window_tokens``.
3. Every ``checkpoint_every`` steps write an atomic checkpoint (``checkpoint.py``); every
   ``log_every`` steps log loss, its terms, L0, batch FVU and dead fraction.
4. At the end fold ``c`` into the weights (``Dictionary.fold_norm_scale``) and save each
   dictionary under ``<output_dir>/dictionaries/<name>`` so it takes raw activations.

A resumed run replays exactly the uninterrupted one: the source is deterministic given
``(seed, start)``, the LR and sparsity schedules are functions of the step, and the
checkpoint holds every tensor of state (weights, buffers, Adam moments and step counts,
dead-latent counters). Distributed training is described in ``distributed.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MechscopeError
from . import schedule
from .base import Dictionary, DictionaryConfig
from .store_source import ActivationSource


@dataclass(frozen=True)
class TrainConfig:
    """How dictionaries are trained (shared by every dictionary of a run unless noted)."""

    lr: float = 3e-4
    """Adam learning rate after warm-up (per dictionary)."""
    adam_beta1: float = 0.9
    """Adam beta1 (per dictionary)."""
    adam_beta2: float = 0.999
    """Adam beta2 (per dictionary)."""
    adam_eps: float = 1e-8
    """Adam epsilon (per dictionary)."""
    lr_warmup_steps: int = 0
    """Linear LR warm-up from 0 over this many steps (per dictionary)."""
    lr_decay: str = "linear"
    """LR decay to 0 over the last lr_decay_fraction of the steps: linear, cosine (half cosine), or none."""
    lr_decay_fraction: float = 0.2
    """Fraction of the steps over which the LR decays to 0 (1.0 with cosine: a full cosine schedule)."""
    sparsity_coefficient: float = 1.0
    """Weight of the sparsity term (L1 for relu, L0 for jumprelu; ignored by TopK-style architectures)."""
    sparsity_warmup_steps: int = 0
    """Linear warm-up of the sparsity coefficient from 0 over this many steps (per dictionary)."""
    batch_size: int = 4096
    """Global batch in tokens (rows); under DDP each of W ranks gets batch_size / W rows."""
    total_tokens: int = 1_000_000
    """Tokens to train on; steps = total_tokens // batch_size."""
    seed: int = 0
    """Seed of the data order and of the initial weights."""
    dead_window_tokens: int = 10_000_000
    """A latent is dead when it has not fired for this many tokens (feeds the AuxK dead mask)."""
    checkpoint_every: int = 1000
    """Write a checkpoint every this many steps (0: only at the end)."""
    keep_checkpoints: int = 2
    """Keep this many newest checkpoints (older ones are deleted)."""
    output_dir: Path = Path("runs/sae")
    """Directory for checkpoints, metrics.jsonl, train.json and the final dictionaries."""
    logging: str = "none"
    """Extra metrics backend: none, tensorboard or wandb (optional packages)."""
    log_every: int = 10
    """Log metrics (JSONL, progress bar, backend) every this many steps."""
    progress: bool = True
    """Show a tqdm progress bar with live loss, L0, FVU and dead fraction."""
    b_dec_init: str = "geometric_median"
    """Initial decoder bias from the first init_batches: geometric_median, mean or zeros (per dictionary)."""
    normalisation: str = "unit_mean_squared_norm"
    """Input scaling c: unit_mean_squared_norm (1/sqrt(E||x||^2)), sqrt_d_over_mean_norm (sqrt(d)/E||x||) or none."""
    init_batches: int = 4
    """Global batches read before training to estimate the normalisation and b_dec."""
    max_grad_norm: float = 0.0
    """Clip the global gradient norm to this value (0: no clipping; per dictionary)."""
    resume: bool = False
    """Continue from the newest complete checkpoint in output_dir (a fresh start if there is none)."""
    device: str = "cpu"
    """Device the dictionaries train on (cpu, cuda, cuda:1 ...)."""
    distributed: str = "ddp"
    """Under torchrun: ddp (every rank trains every dictionary on its slice) or per_dictionary."""


_SHARED = ("batch_size", "total_tokens", "seed", "checkpoint_every", "keep_checkpoints", "output_dir",
           "logging", "log_every", "progress", "init_batches", "resume", "device", "distributed")  # fmt: skip
_NOT_STATE = ("checkpoint_every", "keep_checkpoints", "output_dir", "logging", "log_every", "progress", "resume",
              "device")  # fmt: skip
"""TrainConfig fields that may change when resuming (they do not affect the weights)."""


class TrainingDivergedError(MechscopeError):
    """Training produced a non-finite loss or gradient (or read non-finite activations)."""

    def __init__(self, message: str, *, step: int, dictionary: str, term: str, checkpoint: Path | None):
        self.step = step
        self.dictionary = dictionary
        self.term = term
        self.checkpoint = checkpoint
        super().__init__(message)


@dataclass
class StepInfo:
    """What a callback sees after each step."""

    step: int
    """Completed optimiser steps."""
    tokens: int
    """Tokens (global) consumed so far."""
    dictionaries: dict[str, Dictionary]
    """The live dictionaries of this rank (normalised units; do not modify)."""
    records: list[dict[str, Any]] | None
    """The metric records logged at this step, or None when this step was not logged."""


@dataclass
class TrainResult:
    """The outcome of :func:`train` on this rank."""

    dictionaries: dict[str, Dictionary]
    """Trained dictionaries with the normalisation folded in (they take raw activations)."""
    paths: dict[str, Path]
    """Where each was saved."""
    steps: int
    """Optimiser steps done in total (including those before a resume)."""
    tokens: int
    """Tokens consumed in total."""
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The last logged record of each dictionary."""


def _check_configs(configs: Sequence[TrainConfig], n: int) -> None:
    if len(configs) != n:
        raise MechscopeError(f"got {len(configs)} TrainConfigs for {n} dictionaries (give one, or one each)")
    for cfg in configs[1:]:
        diff = [k for k in _SHARED if getattr(cfg, k) != getattr(configs[0], k)]
        if diff:
            raise MechscopeError(
                f"these TrainConfig fields must be the same for every dictionary of a run: {diff}"
            )
    c = configs[0]
    if c.batch_size <= 0 or c.total_tokens < c.batch_size:
        raise MechscopeError(
            f"total_tokens ({c.total_tokens}) must be at least batch_size ({c.batch_size}) > 0: no step to train"
        )
    for cfg in configs:
        schedule.lr_factor(0, 1, 0, cfg.lr_decay, cfg.lr_decay_fraction)  # validates lr_decay
        if cfg.b_dec_init not in schedule.B_DEC_INITS or cfg.normalisation not in schedule.NORMALISATIONS:
            raise MechscopeError(
                f"b_dec_init must be one of {schedule.B_DEC_INITS} and normalisation one of "
                f"{schedule.NORMALISATIONS}; got {cfg.b_dec_init!r}, {cfg.normalisation!r}"
            )


def train(
    dictionaries: Dictionary | DictionaryConfig | Sequence[Dictionary | DictionaryConfig],
    source: ActivationSource,
    config: TrainConfig | Sequence[TrainConfig] = TrainConfig(),
    *,
    names: Sequence[str] | None = None,
    callbacks: Sequence[Callable[[StepInfo], None]] = (),
) -> TrainResult:
    """Train one or several dictionaries from one pass over ``source``; see the module docstring.

    ``dictionaries`` are configs (built with ``make_dictionary`` and seeded from
    ``config.seed``) or ready ``Dictionary`` objects (trained in place). ``config`` is one
    ``TrainConfig`` or one per dictionary (fields other than the per-dictionary ones must
    agree). ``callbacks`` run after every step (after any checkpoint); an exception from one
    stops training and propagates, which is how tests simulate a crash. Under ``torchrun``
    the run is distributed (``distributed.py``); returns this rank's dictionaries.
    """
    items = [dictionaries] if isinstance(dictionaries, (Dictionary, DictionaryConfig)) else list(dictionaries)
    configs = [config] * len(items) if isinstance(config, TrainConfig) else list(config)
    _check_configs(configs, len(items))
    from .train_run import Run

    run = Run(items, source, configs, names, callbacks)
    try:
        return run.run()
    finally:
        run.close()
