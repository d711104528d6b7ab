"""Named toy models: ``load_model("toy/<name>")`` resolves here.

A name resolves to a model directory (``config.json`` + ``model.safetensors``), looked up in
order: the checkpoints committed with mechscope (``mechscope/toys/checkpoints/<name>``), then
the ones trained on this machine (``<cache>/toys/<name>``, written by :func:`save_toy`).
Importing ``mechscope.toys`` registers this resolver with ``mechscope.models.loading``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._fs import cache_root
from ..errors import ModelLoadError
from ..models.loading import register_source
from .train import save_model_dir

PACKAGED: Path = Path(__file__).resolve().parent / "checkpoints"
"""Where committed toy checkpoints live."""


@dataclass(frozen=True)
class ToyEntry:
    """One named toy model."""

    name: str
    """The name in ``load_model("toy/<name>")``."""
    description: str
    """One line: what the model is trained on and what it shows."""
    train: Callable[..., Any] | None = None
    """``train(base=None) -> Path``: train with the default recipe and save (None: not trainable)."""
    analyze: Callable[..., Any] | None = None
    """``analyze(out) -> Path``: write the analysis plots and ``index.html`` into ``out``."""
    build: Callable[..., Any] | None = None
    """``build(base) -> Path``: write the model directory under ``base`` without training (compiled
    toys); called by :func:`toy_dir`, it may return at once when the directory is current."""
    transformer: bool = True
    """Whether ``load_model("toy/<name>")`` gives a transformer (False: e.g. the TMS autoencoder)."""


TOYS: dict[str, ToyEntry] = {}
"""Every registered toy, by name."""


def register_toy(entry: ToyEntry) -> ToyEntry:
    """Add (or replace) a named toy."""
    TOYS[entry.name] = entry
    return entry


def user_dir() -> Path:
    """Where toys trained on this machine are saved: ``<mechscope cache>/toys``."""
    return cache_root() / "toys"


def toy_dir(name: str) -> Path:
    """The model directory of toy ``name``; :class:`ModelLoadError` when it has none yet."""
    if not name or "/" in name or name.startswith("."):
        raise ModelLoadError(f"invalid toy name {name!r}")
    entry = TOYS.get(name)
    if entry is not None and not entry.transformer:
        raise ModelLoadError(f"toy {name!r} is not a transformer: use its own API ({entry.description})")
    if entry is not None and entry.build is not None:
        return Path(entry.build(user_dir()))
    for base in (PACKAGED, user_dir()):
        if (base / name / "config.json").is_file():
            return base / name
    known = ", ".join(sorted(TOYS)) or "none registered"
    hint = (
        f"train it first: `mechscope toy train {name}` or mechscope.toys.TOYS[{name!r}].train()"
        if name in TOYS and TOYS[name].train
        else f"known toys: {known}; or save one with mechscope.toys.save_toy(model, {name!r})"
    )
    raise ModelLoadError(f"toy {name!r} has no checkpoint in {PACKAGED} or {user_dir()}; {hint}")


def save_toy(model: Any, name: str, base: str | os.PathLike[str] | None = None) -> Path:
    """Save a toy model so that ``load_model("toy/<name>")`` finds it (default: the user directory)."""
    if not name or "/" in name or name.startswith("."):
        raise ModelLoadError(f"invalid toy name {name!r}")
    return save_model_dir(model, (Path(base) if base is not None else user_dir()) / name)


register_source("toy/", toy_dir)
