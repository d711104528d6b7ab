"""Explanations and scores as JSON files.

Each file is one object: ``{"kind": "mechscope-explanations" | "mechscope-scores",
"schema_version": 1, "mechscope_version": ..., "items": [...]}``, each item the record's
``to_json()``. Files are written atomically (a temporary name, then a rename), so an interrupted
run never leaves a half-written file; a truncated or hand-broken file raises
:class:`~mechscope.errors.ArtifactError` saying which file and what is wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .._fs import atomic_write_json
from .._version import __version__
from ..errors import ArtifactError
from .base import ExplainError, Explanation, Score

SCHEMA_VERSION = 1
R = TypeVar("R")


def save_explanations(path: str | os.PathLike[str], explanations: Sequence[Explanation]) -> Path:
    """Write ``explanations`` to ``path`` (JSON, atomically)."""
    return _save(path, "mechscope-explanations", [e.to_json() for e in explanations])


def load_explanations(path: str | os.PathLike[str]) -> list[Explanation]:
    """Read a file written by :func:`save_explanations`."""
    return _load(path, "mechscope-explanations", Explanation.from_json)


def save_scores(path: str | os.PathLike[str], scores: Sequence[Score]) -> Path:
    """Write ``scores`` to ``path`` (JSON, atomically)."""
    return _save(path, "mechscope-scores", [s.to_json() for s in scores])


def load_scores(path: str | os.PathLike[str]) -> list[Score]:
    """Read a file written by :func:`save_scores`."""
    return _load(path, "mechscope-scores", Score.from_json)


def _save(path: str | os.PathLike[str], kind: str, items: list[dict[str, Any]]) -> Path:
    doc = {"kind": kind, "schema_version": SCHEMA_VERSION, "mechscope_version": __version__, "items": items}
    return atomic_write_json(path, doc)


def _load(path: str | os.PathLike[str], kind: str, build: Callable[[Any, str], R]) -> list[R]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file (expected a {kind} JSON file)") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ArtifactError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); the file is "
            f"truncated or was edited by hand: write it again"
        ) from None
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        found = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
        raise ArtifactError(f"{path}: expected a {kind!r} file, found kind {found!r}")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: schema version {doc.get('schema_version')!r}, this mechscope reads version {SCHEMA_VERSION}"
        )
    items = doc.get("items")
    if not isinstance(items, list):
        raise ArtifactError(f"{path}: 'items' must be a list")
    try:
        return [build(item, f"{path}: item {i}") for i, item in enumerate(items)]
    except ExplainError as e:
        raise ArtifactError(str(e)) from None
