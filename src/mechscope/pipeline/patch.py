"""``mechscope patch``: one localisation job from a behaviour to a saved, plotted result.

1. Load the model and build the task (a built-in name or a JSONL file).
2. Evaluate it (clean vs corrupted accuracy and metric).
3. Run one method over one sweep: exact activation patching, attribution patching (AtP or
   AtP*), or an ablation.
4. Write the result directory (``PatchResult.save``), a PNG and an interactive HTML heat
   map, and ``eval.json``; return the directory and the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .._fs import atomic_write_json
from ..errors import MechscopeError
from ..interventions import PatchResult, SweepConfig, sweep
from ..interventions.ablation import ablate
from ..interventions.attribution import attribution_patching
from ..models import DEFAULT_MODEL, HookedModel, load_model
from ..tasks import Task, evaluate, load_jsonl, make_task, prepare

METHODS = ("patch", "atp", "atp*", "zero", "mean", "resample")
"""Exact patching, attribution patching, AtP with the QK fix, and the three ablations."""


@dataclass(frozen=True)
class PatchJobConfig:
    """What ``mechscope patch`` runs."""

    task: str = "ioi"
    """A built-in task (ioi, factual, induction, greater_than) or a JSONL file."""
    sweep: str = "heads"
    """Which sites: resid_pre, resid_mid, resid_post, attn_out, mlp_out, heads, heads_by_pos, q, k, v, pattern, neurons."""
    model: str = DEFAULT_MODEL
    """Model: a built-in name, a .gguf file, a local HF directory or a hub id."""
    out: Path = Path("runs")
    """Directory under which the result directory is created."""
    method: str = "patch"
    """patch (exact), atp, atp* (AtP with the QK fix), or an ablation: zero, mean, resample."""
    n: int = 16
    """Number of task examples (built-in tasks)."""
    seed: int = 0
    """Seed for task generation and resampling."""
    direction: str = "denoise"
    """denoise (clean into corrupted) or noise (corrupted into clean); ablations always ablate the clean run."""
    metric: str | None = None
    """Metric name (default: the task's own)."""
    mode: str = "fast"
    """Patching engine mode: fast, batched or loop."""
    layers: tuple[int, ...] | None = None
    """Restrict to these blocks (default: all)."""
    device: str | None = None
    """Device for the model (default: CUDA when available, else CPU)."""


def build_task(model: HookedModel, name: str, n: int, seed: int) -> Task:
    """A built-in task by name, or a task read from a JSONL file."""
    if name.endswith(".jsonl") or Path(name).exists():
        return load_jsonl(name)
    kwargs: dict[str, int] = {"seed": seed, "n": n} if name != "factual" else {"n": n}
    return make_task(name, model, **kwargs)


def run_patch(
    config: PatchJobConfig, progress: Callable[[str], None] | None = None
) -> tuple[Path, PatchResult]:
    """Run the job and write its directory; returns ``(directory, result)``."""
    say = progress or (lambda _msg: None)
    if config.method not in METHODS:
        raise MechscopeError(f"method must be one of {', '.join(METHODS)}, not {config.method!r}")
    say(f"loading {config.model}")
    model = load_model(config.model, device=config.device)
    task = build_task(model, config.task, config.n, config.seed)
    data = prepare(model, task)
    summary = evaluate(model, data, config.metric)
    say(str(summary))
    cfg = SweepConfig(layers=config.layers, direction=config.direction, mode=config.mode)
    say(f"running {config.method} over the {config.sweep} sweep")
    t0 = time.perf_counter()
    if config.method == "patch":
        result = sweep(model, data, config.sweep, metric=config.metric, config=cfg, progress=True)
    elif config.method in ("atp", "atp*"):
        result = attribution_patching(
            model, data, config.sweep, metric=config.metric, direction=config.direction,
            qk_fix=config.method == "atp*", config=cfg,
        )  # fmt: skip
    else:
        result = ablate(
            model, data, config.sweep, kind=config.method, seed=config.seed, metric=config.metric, config=cfg
        )
    say(f"done in {time.perf_counter() - t0:.1f} s")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(config.out) / f"{config.method.replace('*', 'star')}-{data.task.name}-{config.sweep}-{stamp}"
    result.save(out)
    result.plot(out / "heatmap.png")
    result.to_html(out / "heatmap.html")
    atomic_write_json(out / "eval.json", summary.as_dict())
    return out, result
