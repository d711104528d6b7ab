"""``mechscope steer`` and ``mechscope probe``: steering sweeps and linear probes from the command line.

``steer`` builds one kind of steering and sweeps its strength:

* dictionary features (``--sae DIR --feature 123 --feature 456``), clamped to or added at each
  strength (``--mode clamp|add``, optionally only at ``--positions``); the default metric is the
  log-odds of the tokens the features' decoder directions promote over those they suppress;
* a CAA vector from two files of contrastive prompts (``--positive``/``--negative``, one per line);
* an ActAdd vector from the first line of each file (``--method actadd``).

Strength 0 is always the unsteered baseline (identical logits). It prints the generations side by
side with the metric's shift and writes ``steer.json``.

``probe`` trains a logistic-regression probe at one hook on two files of texts, reports accuracy
and AUROC on a held-out split, compares with the best single dictionary feature when ``--sae`` is
given, and writes ``probe.safetensors`` + ``probe.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .._fs import atomic_write_json
from ..errors import MechscopeError
from ..models import DEFAULT_MODEL, HookedModel, load_model
from ..steering import SweepRow, actadd, caa, ids_logodds, steer_features, steering_hooks, strength_sweep
from ..steering.probes import best_feature, collect, train_probe


@dataclass(frozen=True)
class SteerJobConfig:
    """What ``mechscope steer`` sweeps."""

    prompts: tuple[str, ...] = ("I think that",)
    """Prompts to generate from."""
    model: str = DEFAULT_MODEL
    """Model: a built-in name, a .gguf file, a local HF directory, a hub id or toy/<name>."""
    sae: Path | None = None
    """Dictionary directory, for steering with its features."""
    feature: tuple[int, ...] = ()
    """Dictionary features to steer (with --sae)."""
    mode: str = "clamp"
    """Feature steering: clamp (set the features to the strength) or add (add strength x direction)."""
    positions: tuple[int, ...] = ()
    """Prompt positions to steer (negative: from the end; empty: every position, generated ones too)."""
    positive: Path | None = None
    """Prompts with the concept, one per line (CAA / ActAdd)."""
    negative: Path | None = None
    """Prompts without it, one per line (CAA / ActAdd)."""
    method: str = "caa"
    """Vector from the prompt files: caa (mean difference at the last token) or actadd (first lines)."""
    hook: str | None = None
    """Hook for a vector (default: the middle block's hook_resid_pre)."""
    alphas: tuple[float, ...] = (0.0, 4.0, 8.0)
    """Strengths: the clamped value or the added multiple (0: unsteered)."""
    max_new_tokens: int = 16
    """Greedy tokens generated per prompt and strength."""
    out: Path = Path("runs")
    """Directory under which steer-<stamp>/ is written."""
    device: str | None = None
    """Device for the model (default: CUDA when available, else CPU)."""


def _lines(path: Path | None, what: str) -> list[str]:
    if path is None:
        raise MechscopeError(f"give --{what} FILE (one prompt per line)")
    if not Path(path).is_file():
        raise MechscopeError(f"--{what}: {path} does not exist")
    lines = [line.rstrip("\n") for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines:
        raise MechscopeError(f"--{what}: {path} has no prompts")
    return lines


def steering_setup(
    model: HookedModel, config: SteerJobConfig
) -> tuple[Callable[[float], list[Any]], Any, str]:
    """``(hooks(alpha), metric, description)`` for the configured steering."""
    if config.sae is not None:
        from ..dictionary.io import load_dictionary

        if not config.feature:
            raise MechscopeError("with --sae, name at least one --feature")
        if config.mode not in ("clamp", "add"):
            raise MechscopeError(f"--mode must be clamp or add, not {config.mode!r}")
        dic = load_dictionary(config.sae).to(model.device)
        effect = (
            dic.W_dec.detach()[list(config.feature)].float().sum(0) @ model.W_U.detach().float()
        )  # [vocab]
        pos = list(config.positions) or None

        def hooks(a: float) -> list[Any]:
            return [] if a == 0 else [steer_features(dic, dict.fromkeys(config.feature, a), config.mode, pos)]

        what = f"features {list(config.feature)} of {config.sae} ({config.mode})"
        return hooks, ids_logodds(effect.topk(10).indices, (-effect).topk(10).indices), what
    pos_lines, neg_lines = _lines(config.positive, "positive"), _lines(config.negative, "negative")
    hook = config.hook or f"blocks.{model.cfg.n_layers // 2}.hook_resid_pre"
    model.hook_info(hook)  # unknown hook names fail here, with the closest names
    if config.method == "caa":
        vector = caa(model, pos_lines, neg_lines, hook)
    elif config.method == "actadd":
        vector = actadd(model, pos_lines[0], neg_lines[0], hook)
    else:
        raise MechscopeError(f"--method must be caa or actadd, not {config.method!r}")
    with torch.no_grad():
        p = model(pos_lines, padding_side="left", logits_to_keep=1)[:, -1].float().log_softmax(-1).mean(0)
        n = model(neg_lines, padding_side="left", logits_to_keep=1)[:, -1].float().log_softmax(-1).mean(0)
    diff = p - n  # tokens the positive prompts favour over the negative ones
    metric = ids_logodds(diff.topk(10).indices, (-diff).topk(10).indices)
    return (lambda a: steering_hooks(vector, a)), metric, f"{config.method} vector at {hook}"


def run_steer(
    config: SteerJobConfig, progress: Callable[[str], None] | None = None, model: HookedModel | None = None
) -> tuple[Path, list[SweepRow]]:
    """Sweep the strengths, write ``steer.json`` and return ``(directory, rows)``."""
    say = progress or (lambda _msg: None)
    if not config.prompts:
        raise MechscopeError("give at least one prompt")
    if model is None:
        say(f"loading {config.model}")
        model = load_model(config.model, device=config.device)
    hooks, metric, what = steering_setup(model, config)
    say(f"steering with {what} at strengths {list(config.alphas)}")
    rows = strength_sweep(model, config.prompts, hooks, config.alphas, metric, config.max_new_tokens)
    out = Path(config.out) / f"steer-{time.strftime('%Y%m%d-%H%M%S')}"
    atomic_write_json(out / "steer.json", {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "steering": what, "rows": [asdict(r) for r in rows],
    })  # fmt: skip
    return out, rows


@dataclass(frozen=True)
class ProbeJobConfig:
    """What ``mechscope probe`` trains."""

    positive: Path | None = None
    """Texts with the concept, one per line."""
    negative: Path | None = None
    """Texts without it, one per line."""
    model: str = DEFAULT_MODEL
    """Model: a built-in name, a .gguf file, a local HF directory, a hub id or toy/<name>."""
    hook: str | None = None
    """Hook to probe (default: the middle block's hook_resid_pre)."""
    reduce: str = "last"
    """One activation per text: last (its last token) or mean (over its tokens)."""
    val_fraction: float = 0.25
    """Share of the texts held out for validation."""
    seed: int = 0
    """Seed of the train/validation split."""
    l2: float = 1e-2
    """L2 penalty of the logistic regression."""
    sae: Path | None = None
    """Dictionary at the same hook, to compare with its best single feature."""
    out: Path = Path("runs")
    """Directory under which probe-<stamp>/ is written."""
    device: str | None = None
    """Device for the model (default: CUDA when available, else CPU)."""


def run_probe(
    config: ProbeJobConfig, progress: Callable[[str], None] | None = None, model: HookedModel | None = None
) -> tuple[Path, dict[str, Any]]:
    """Train the probe, write it and ``summary.json``; return ``(directory, summary)``."""
    say = progress or (lambda _msg: None)
    pos, neg = _lines(config.positive, "positive"), _lines(config.negative, "negative")
    if model is None:
        say(f"loading {config.model}")
        model = load_model(config.model, device=config.device)
    hook = config.hook or f"blocks.{model.cfg.n_layers // 2}.hook_resid_pre"
    model.hook_info(hook)
    say(f"collecting {len(pos) + len(neg)} activations at {hook}")
    x = collect(model, pos + neg, hook, config.reduce).float()
    labels = torch.tensor([True] * len(pos) + [False] * len(neg))
    probe = train_probe(x, labels, hook, config.val_fraction, config.seed, config.l2)
    out = Path(config.out) / f"probe-{time.strftime('%Y%m%d-%H%M%S')}"
    probe.save(out)
    summary: dict[str, Any] = {
        "hook": hook, "n_positive": len(pos), "n_negative": len(neg), "train_accuracy": probe.train_accuracy,
        "val_accuracy": probe.val_accuracy, "val_auroc": probe.val_auroc,
    }  # fmt: skip
    if config.sae is not None:
        from ..dictionary.io import load_dictionary

        dic = load_dictionary(config.sae)
        if dic.config.hook_name and dic.config.hook_name != hook:
            raise MechscopeError(f"the dictionary reads {dic.config.hook_name}, the probe {hook}: use --hook")
        feature, auc = best_feature(dic, x, labels, config.val_fraction, config.seed)
        summary["best_feature"], summary["best_feature_auroc"] = feature, auc
    atomic_write_json(out / "summary.json", summary)
    return out, summary


__all__ = ["ProbeJobConfig", "SteerJobConfig", "run_probe", "run_steer", "steering_setup"]
