"""A small trainer for the toy transformer: seeds, checkpoints that resume exactly, a progress bar.

Data comes from a function of the step number (``batches(step) -> (tokens, loss_mask)``), so
a run resumed from a checkpoint sees exactly the batches it would have seen, and resuming
gives the same weights as training straight through. A checkpoint is a directory
``checkpoint-<step>`` holding the model (``model/``: ``config.json`` + ``model.safetensors``,
loadable with ``load_model``), the AdamW state (``optimizer.safetensors``) and
``trainer_state.json`` (step, loss history, training config). Each is written under a
temporary name and renamed into place; only the newest is kept.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._fs import atomic_dir, atomic_write_bytes, atomic_write_json
from ..errors import CheckpointError, MechscopeError

BatchFn = Callable[[int], tuple[Tensor, Tensor | None]]
"""``batches(step)``: tokens ``[batch, pos]`` and a loss mask ``[batch, pos - 1]`` (or None: every position)."""

LossFn = Callable[[nn.Module, Tensor, Tensor | None], Tensor]
"""``loss_fn(model, tokens, mask) -> scalar``: a training objective other than next-token loss."""

EvalFn = Callable[[nn.Module], dict[str, Any]]
"""``evaluate(model) -> metrics``: run under ``torch.no_grad`` every ``eval_every`` steps."""

_SCHEMA = 1


@dataclass(frozen=True)
class TrainConfig:
    """How to train a toy transformer with AdamW on next-token prediction."""

    steps: int
    """Total optimiser steps (a resumed run continues up to this many)."""
    lr: float = 1e-3
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up from 0 over this many steps, then constant."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value (None: no clipping)."""
    checkpoint_every: int = 0
    """Write a checkpoint every this many steps (0: only at the end); needs an output directory."""
    eval_every: int = 0
    """Call ``evaluate`` after every this many steps and at the last (0: never)."""
    progress: bool = True
    """Show a tqdm progress bar."""


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    losses: list[float] = field(default_factory=list)
    """Training loss at every step since step 0 (including steps before a resume)."""
    seconds: float = 0.0
    """Wall time of this call."""
    resumed_from: int = 0
    """Step this call started from (0 for a fresh run)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """``{"step": s, **evaluate(model)}`` at every evaluation since step 0 (kept in checkpoints)."""


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator that depends only on ``(seed, step)``: for batch functions that resume exactly."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def next_token_loss(
    logits: Tensor,  # [batch, pos, vocab]
    tokens: Tensor,  # [batch, pos]
    mask: Tensor | None = None,  # [batch, pos - 1], bool: which predictions count
) -> Tensor:  # scalar
    """Mean cross-entropy of predicting ``tokens[:, 1:]`` from ``logits[:, :-1]`` where ``mask``."""
    losses = nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    return losses.mean() if mask is None else losses[mask].mean()


def _default_loss(model: nn.Module, tokens: Tensor, mask: Tensor | None) -> Tensor:
    return next_token_loss(model(input_ids=tokens).logits, tokens, mask)


def train(
    model: nn.Module,
    batches: BatchFn,
    cfg: TrainConfig,
    out: str | os.PathLike[str] | None = None,
    *,
    loss_fn: LossFn | None = None,
    evaluate: EvalFn | None = None,
) -> TrainResult:
    """Train ``model`` (a ``ToyForCausalLM``) in place; resume from the newest checkpoint in ``out``.

    ``loss_fn`` replaces the next-token objective; ``evaluate`` is logged into
    ``TrainResult.history`` every ``cfg.eval_every`` steps.
    """
    out_dir = Path(out) if out is not None else None
    loss_fn = loss_fn or _default_loss
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    result = TrainResult()
    latest = latest_checkpoint(out_dir) if out_dir is not None else None
    if latest is not None:
        result.resumed_from, result.losses, result.history = _load_checkpoint(latest, model, opt, cfg)
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(range(result.resumed_from, cfg.steps), disable=not cfg.progress, desc="train", unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        tokens, mask = batches(step)
        loss = loss_fn(model, tokens, mask)
        if not torch.isfinite(loss):
            raise MechscopeError(f"training loss is {loss.item()} at step {step}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        result.losses.append(loss.item())
        bar.set_postfix(loss=f"{result.losses[-1]:.4f}", refresh=False)
        done = step + 1
        if evaluate is not None and cfg.eval_every and (done == cfg.steps or done % cfg.eval_every == 0):
            model.eval()
            with torch.no_grad():
                result.history.append({"step": done, **evaluate(model)})
            model.train()
        if out_dir is not None and (
            done == cfg.steps or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)
        ):
            _save_checkpoint(out_dir, done, model, opt, cfg, result.losses, result.history)
    model.eval()
    result.seconds = time.perf_counter() - t0
    return result


def latest_checkpoint(out: Path) -> Path | None:
    """The newest ``checkpoint-<step>`` directory under ``out``, or None."""
    found = sorted(out.glob("checkpoint-*")) if out.is_dir() else []
    return found[-1] if found else None


def save_model_dir(model: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` (config.json + model.safetensors) to ``path``, replacing what is there atomically."""
    path = Path(path)
    staged = path.with_name(f".{path.name}.staged-{uuid.uuid4().hex[:8]}")
    with atomic_dir(staged) as tmp:
        write_model(model, tmp)
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    if path.exists():
        os.replace(path, old)
    os.replace(staged, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def write_model(model: Any, path: Path) -> None:
    """``config.json`` + ``model.safetensors`` into the (fresh) directory ``path``: what
    ``from_pretrained`` reads, without ``save_pretrained``'s progress bar."""
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


def _comparable(cfg: TrainConfig) -> dict[str, Any]:
    """The config fields that must match for a resume to be exact."""
    d = asdict(cfg)
    for k in ("steps", "checkpoint_every", "progress", "eval_every"):
        d.pop(k)
    d["betas"] = list(d["betas"])
    return d


def _save_checkpoint(
    out: Path,
    step: int,
    model: Any,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    losses: list[float],
    history: list[dict[str, Any]],
) -> None:
    state = opt.state_dict()
    tensors = {f"{i}.{k}": v.contiguous() for i, s in state["state"].items() for k, v in s.items()}
    with atomic_dir(out / f"checkpoint-{step:08d}") as tmp:
        write_model(model, tmp / "model")
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        atomic_write_json(
            tmp / "trainer_state.json",
            {
                "schema_version": _SCHEMA,
                "step": step,
                "train_config": _comparable(cfg),
                "param_groups": state["param_groups"],
                "losses": losses,
                "history": history,
            },
        )
    for older in out.glob("checkpoint-*"):
        if older.name != f"checkpoint-{step:08d}":
            shutil.rmtree(older, ignore_errors=True)


def _load_checkpoint(
    ckpt: Path, model: nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig
) -> tuple[int, list[float], list[dict[str, Any]]]:
    try:
        meta = json.loads((ckpt / "trainer_state.json").read_text())
        weights = load_file(str(ckpt / "model" / "model.safetensors"))
        flat = load_file(str(ckpt / "optimizer.safetensors"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {ckpt} is unreadable: {e}") from e
    if meta.get("train_config") != _comparable(cfg):
        raise CheckpointError(
            f"checkpoint {ckpt} was written with {meta.get('train_config')}, not {_comparable(cfg)}; "
            "use another output directory or the same training config"
        )
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if k in weights]:
        raise CheckpointError(f"checkpoint {ckpt} does not fit this model: {unexpected or missing}")
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in flat.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if meta["step"] > cfg.steps:
        raise MechscopeError(f"checkpoint {ckpt} is at step {meta['step']}, past steps={cfg.steps}")
    return int(meta["step"]), list(meta["losses"]), list(meta.get("history", []))


def plot_losses(losses: list[float], path: str | os.PathLike[str], title: str = "training loss") -> Path:
    """Save the loss curve (log-scale y) as an image; matplotlib with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, lw=1)
    ax.set(xlabel="step", ylabel="loss", title=title, yscale="log")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=100)
    plt.close(fig)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, buf.getvalue())
