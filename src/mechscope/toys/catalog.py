"""The named toys: what ``mechscope toy list`` shows and ``load_model("toy/<name>")`` resolves.

Each entry imports its implementation only when used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from .registry import PACKAGED, TOYS, ToyEntry, register_toy, toy_dir, user_dir


def _train_induction(base: str | os.PathLike[str] | None = None) -> Path:
    from .induction import train_and_save

    return train_and_save(base)


def _analyze_induction(out: str | os.PathLike[str]) -> Path:
    from ..models import load_model
    from .induction_plots import write_induction_report

    return write_induction_report(load_model("toy/induction"), Path(out))


def _train_modular(base: str | os.PathLike[str] | None = None) -> Path:
    from .modular import train_and_save

    return train_and_save(base)


def _analyze_modular(out: str | os.PathLike[str]) -> Path:
    from ..models import load_model
    from .modular_plots import write_modular_report

    return write_modular_report(load_model("toy/modular_addition"), Path(out))


def _tms_dir(base: str | os.PathLike[str] | None) -> Path:
    return (Path(base) if base else user_dir()) / "tms"


def _train_tms(base: str | os.PathLike[str] | None = None) -> Path:
    from .superposition import TMSConfig, save_tms, train_superposition

    return save_tms(train_superposition(TMSConfig()), _tms_dir(base))


def _analyze_tms(out: str | os.PathLike[str]) -> Path:
    from .superposition import load_tms
    from .tms_plots import analyze_superposition

    saved = _tms_dir(None)
    result = load_tms(saved) if (saved / "cfg.json").is_file() else None
    return analyze_superposition(Path(out), result=result)


def _compiled(name: str, description: str) -> ToyEntry:
    def build(base: str | os.PathLike[str]) -> Any:
        from .compiled import build_compiled

        return build_compiled(name, base)

    def analyze(out: str | os.PathLike[str]) -> Path:
        from .compiled_report import write_compiled_report

        return write_compiled_report(name, Path(out))

    return ToyEntry(name=name, description=description, build=build, analyze=analyze)


for _entry in (
    ToyEntry(
        name="tms",
        description="Toy Models of Superposition: x' = ReLU(W^T W x + b) across feature sparsities",
        train=_train_tms,
        analyze=_analyze_tms,
        transformer=False,
    ),
    ToyEntry(
        name="induction",
        description="2-layer attention-only transformer on repeated random tokens: induction heads",
        train=_train_induction,
        analyze=_analyze_induction,
    ),
    ToyEntry(
        name="modular_addition",
        description="1-layer transformer on (a + b) mod 113 that groks: Fourier features (Nanda et al.)",
        train=_train_modular,
        analyze=_analyze_modular,
    ),
    _compiled(
        "compiled_induction", "hand-set weights: previous-token head K-composing with an induction head"
    ),
    _compiled(
        "compiled_histogram",
        "hand-set weights: attention reads 1/(count+1) off BOS, the MLP makes it a class",
    ),
    _compiled(
        "compiled_features",
        "hand-set weights: known sparse features written by the MLP into a known subspace",
    ),
):
    register_toy(_entry)


def status(name: str) -> str:
    """Where toy ``name``'s model comes from: committed, trained here, compiled, or not trained."""
    entry = TOYS[name]
    if entry.build is not None:
        return "compiled"
    if not entry.transformer:
        return "trained here" if (_tms_dir(None) / "cfg.json").is_file() else "trains in seconds"
    if (PACKAGED / name / "config.json").is_file():
        return "committed checkpoint"
    try:
        toy_dir(name)
    except ModelLoadError:
        return "not trained"
    return "trained here"
