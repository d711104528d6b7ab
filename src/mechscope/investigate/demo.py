"""``make demo``: the built-in investigation of SmolLM2-135M, IOI then factual recall.

1. ``configs/demo-ioi.toml``: every stage on IOI; the dictionary sits at the layer whose heads
   carry most of the behaviour.
2. ``configs/demo-factual.toml``: every stage on factual recall, loading part 1's
   dictionaries (same layers), so the two runs' features are the same latents.
3. ``mechscope compare`` of the two runs, written to ``compare.html``.

The run directories are fixed (``OUT/ioi``, ``OUT/factual``), so running the demo again skips
every stage whose inputs are unchanged. ``configs/full-gpu.toml`` is the IOI investigation at
research size for one GPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._fs import atomic_write_text
from .config import InvestigationConfig
from .run import Investigation, investigate, read_config
from .runner import read_stage_json

__all__ = ["CONFIGS", "config_path", "run_demo_investigation"]

CONFIGS = Path(__file__).resolve().parent / "configs"
"""The packaged configs: ``demo-ioi.toml``, ``demo-factual.toml``, ``full-gpu.toml``."""


def config_path(name: str) -> Path:
    """The packaged config ``name`` (``demo-ioi``, ``demo-factual`` or ``full-gpu``)."""
    return CONFIGS / f"{name}.toml"


def _with(config: InvestigationConfig, model: str | None, device: str | None) -> InvestigationConfig:
    m = config.model
    return dataclasses.replace(
        config, model=dataclasses.replace(m, name=model or m.name, device=device or m.device)
    )


def _reuse_dictionaries(config: InvestigationConfig, ioi_run: Path) -> InvestigationConfig:
    """``config`` loading the IOI run's dictionaries at their layers."""
    meta = read_stage_json(ioi_run / "dictionaries")
    if meta is None:
        return config
    settings = {**config.stages.dictionaries.settings, "layers": list(meta["summary"]["layers"]),
                "load": str((ioi_run / "dictionaries").resolve())}  # fmt: skip
    stage = dataclasses.replace(config.stages.dictionaries, settings=settings)
    return dataclasses.replace(config, stages=dataclasses.replace(config.stages, dictionaries=stage))


def run_demo_investigation(
    out: str | Path,
    *,
    model: str | None = None,
    device: str | None = None,
    progress: Callable[[str, int, int, str], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> tuple[Investigation, Investigation, dict[str, Any]]:
    """Run both demo investigations under ``out`` and compare them."""
    from .compare import compare_runs, render_comparison

    out = Path(out)
    ioi = investigate(
        _with(read_config(config_path("demo-ioi")), model, device), out / "ioi", progress=progress, say=say
    )
    factual_cfg = _reuse_dictionaries(
        _with(read_config(config_path("demo-factual")), model, device), out / "ioi"
    )
    factual = investigate(factual_cfg, out / "factual", progress=progress, say=say)
    cmp = compare_runs(out / "ioi", out / "factual")
    atomic_write_text(out / "compare.html", render_comparison(cmp))
    return ioi, factual, cmp
