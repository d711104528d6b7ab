"""Tasks as JSON Lines files: one example per line, no code, no pickle.

Each non-blank line is one JSON object with exactly these keys::

    {"clean": "When Mary and John went to the store, John gave a drink to",
     "corrupted": "When Anna and Tom went to the store, Paul gave a drink to",
     "answer": " Mary", "wrong": " John"}

``answer`` and ``wrong`` are one token as text (``" Mary"``, leading space included) or a
non-empty list of them (an answer set, as in greater-than). Blank lines are skipped.

Example ``i`` of the loaded task is the ``i``-th non-blank line (counting from 0), so an
error from ``prepare`` about "example i" refers to that line, whatever blank lines come
before it. ``load_jsonl`` checks structure and types (naming the file and 1-based line);
tokenisation (one-token answers, equal clean/corrupted lengths) is checked by
``prepare(model, task)``, which names the example index.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._fs import atomic_write_text
from .base import Answer, Task, TaskError
from .metrics import METRICS

KEYS = ("clean", "corrupted", "answer", "wrong")
"""The keys of every line, all required."""


def load_jsonl(path: str | os.PathLike[str], *, name: str | None = None, metric: str = "logit_diff") -> Task:
    """Read a task from a JSON Lines file (format in the module docstring).

    ``name`` defaults to the file's stem. Raises :class:`TaskError` naming the file and
    the 1-based line for invalid JSON, a line that is not an object, missing or unexpected
    keys, or values of the wrong type; and for an unreadable or empty file.
    """
    path = Path(path)
    if metric not in METRICS:
        raise TaskError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(f"cannot read task file {path}: {e}") from e
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            rows.append(_parse_line(path, lineno, line))
    if not rows:
        raise TaskError(f"{path}: no examples (the file is empty or holds only blank lines)")
    return Task(
        name if name is not None else path.stem,
        tuple(r["clean"] for r in rows),
        tuple(r["corrupted"] for r in rows),
        tuple(r["answer"] for r in rows),
        tuple(r["wrong"] for r in rows),
        metric,
        description=f"loaded from {path.name}",
    )


def _parse_line(path: Path, lineno: int, line: str) -> dict[str, Any]:
    where = f"{path}, line {lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise TaskError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from e
    if not isinstance(obj, dict):
        raise TaskError(f"{where}: expected a JSON object with keys {list(KEYS)}, got {type(obj).__name__}")
    missing = [k for k in KEYS if k not in obj]
    extra = sorted(k for k in obj if k not in KEYS)
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else [])
        raise TaskError(f"{where}: {' and '.join(parts)} keys; each line needs exactly {list(KEYS)}")
    for key in ("clean", "corrupted"):
        if not isinstance(obj[key], str) or not obj[key]:
            raise TaskError(f"{where}: {key!r} must be a non-empty string, got {obj[key]!r}")
    out = {"clean": obj["clean"], "corrupted": obj["corrupted"]}
    for key in ("answer", "wrong"):
        out[key] = _answer(where, key, obj[key])
    return out


def _answer(where: str, key: str, value: object) -> Answer:
    if isinstance(value, str) and value:
        return value
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, str) and v for v in value)
        and len(set(value)) == len(value)
    ):
        return tuple(value)
    raise TaskError(
        f"{where}: {key!r} must be a non-empty string or a non-empty list of distinct non-empty strings, "
        f"got {value!r}"
    )


def save_jsonl(task: Task, path: str | os.PathLike[str]) -> Path:
    """Write ``task`` as JSON Lines (atomically); returns the path.

    Only prompts and answers are written: the name, metric, description and named
    positions are not part of the format. Prompts and answers must be text, so tasks
    built from token ids (``induction``) cannot be saved this way.
    """
    lines = []
    for i in range(len(task)):
        for key, prompt in (("clean", task.clean[i]), ("corrupted", task.corrupted[i])):
            if not isinstance(prompt, str):
                raise TaskError(
                    f"task {task.name!r}, example {i}: the {key} prompt is token ids; JSONL holds text prompts only"
                )
        row = {
            "clean": task.clean[i],
            "corrupted": task.corrupted[i],
            "answer": _answer_out(task, i, task.answers[i]),
            "wrong": _answer_out(task, i, task.wrong[i]),
        }
        lines.append(json.dumps(row, ensure_ascii=False))
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _answer_out(task: Task, i: int, answer: Answer) -> str | list[str]:
    if isinstance(answer, str):
        return answer
    if not isinstance(answer, int) and all(isinstance(a, str) for a in answer):
        return [str(a) for a in answer]
    raise TaskError(
        f"task {task.name!r}, example {i}: answer {answer!r} holds token ids; JSONL holds text answers only"
    )
