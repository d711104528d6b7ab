"""Tasks as JSON Lines files: one example per line, no code, no pickle.

Each non-blank line is one JSON object with exactly these keys::

    {"clean": "When Mary and John went to the store, John gave a drink to",
     "corrupted": "When Anna and Tom went to the store, Paul gave a drink to",
     "answer": " Mary", "wrong": " John"}

Prompts and answers are text or token ids:

* ``clean`` and ``corrupted``: a non-empty string, or a non-empty list of non-negative
  integers (token ids, used as given: nothing is prepended). Within one line both are text
  or both are ids; different lines may differ.
* ``answer`` and ``wrong``: one token as text (``" Mary"``, leading space included) or as a
  non-negative integer id; or a non-empty list of distinct non-empty strings, or of
  distinct non-negative integers (an answer set, as in greater-than). A list is all text
  or all ids. Answer kinds are independent of the prompt kind.

``true``/``false`` and numbers such as ``1.0`` are not token ids. Token ids are how a model
without a tokenizer (``toy/compiled_induction``) is given a behaviour::

    {"clean": [1, 2, 3, 4, 1, 2, 3], "corrupted": [5, 6, 7, 0, 1, 2, 3], "answer": 4, "wrong": 3}

A loaded task holds text as ``str``, id prompts as ``tuple[int, ...]``, one id answer as
``int`` and answer sets as tuples, which is what ``save_jsonl`` writes back: save then load
gives the same prompts and answers. Blank lines are skipped.

Example ``i`` of the loaded task is the ``i``-th non-blank line (counting from 0), so an
error from ``prepare`` about "example i" refers to that line, whatever blank lines come
before it. ``load_jsonl`` checks structure and types (naming the file and 1-based line);
tokenisation and the vocabulary (one-token answers, answer ids below ``d_vocab``, equal
clean/corrupted lengths) are checked by ``prepare(model, task)``, which names the example
index.
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._fs import atomic_write_text
from .base import Answer, Prompt, Task, TaskError
from .metrics import METRICS

KEYS = ("clean", "corrupted", "answer", "wrong")
"""The keys of every line, all required."""

_PROMPT_FORMS = "a non-empty string or a non-empty list of non-negative integer token ids"
_ANSWER_FORMS = (
    "a non-empty string, a non-negative integer token id, or a non-empty list of distinct "
    "non-empty strings or of distinct non-negative integer token ids"
)


def load_jsonl(path: str | os.PathLike[str], *, name: str | None = None, metric: str = "logit_diff") -> Task:
    """Read a task from a JSON Lines file (format in the module docstring).

    ``name`` defaults to the file's stem. Raises :class:`TaskError` naming the file and
    the 1-based line for invalid JSON, a line that is not an object, missing or unexpected
    keys, values of the wrong type (booleans and negative numbers are not token ids), and
    a clean and corrupted prompt of different kinds; and for an unreadable or empty file.
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
    return _check_row(where, obj)


def _check_row(where: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Validate the four values of one line; returns them in the forms a :class:`Task` holds.

    Shared by loading and saving, so whatever ``save_jsonl`` writes loads back.
    """
    clean = _prompt(where, "clean", obj["clean"])
    corrupted = _prompt(where, "corrupted", obj["corrupted"])
    if isinstance(clean, str) != isinstance(corrupted, str):
        kind = lambda p: "text" if isinstance(p, str) else "token ids"  # noqa: E731
        raise TaskError(
            f"{where}: 'clean' is {kind(clean)} but 'corrupted' is {kind(corrupted)}; "
            "both prompts of a line must be text or both token ids"
        )
    return {
        "clean": clean,
        "corrupted": corrupted,
        "answer": _answer(where, "answer", obj["answer"]),
        "wrong": _answer(where, "wrong", obj["wrong"]),
    }


def _prompt(where: str, key: str, value: object) -> str | tuple[int, ...]:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value:
        return tuple(_token_id(where, key, v, j) for j, v in enumerate(value))
    raise TaskError(f"{where}: {key!r} must be {_PROMPT_FORMS}, got {value!r}")


def _token_id(where: str, key: str, value: object, index: int | None = None) -> int:
    """``value`` as a token id: a non-negative ``int`` that is not a ``bool``."""
    at = f"{key!r}" if index is None else f"{key!r} entry {index}"
    if isinstance(value, bool):
        raise TaskError(f"{where}: {at} is {json.dumps(value)}; token ids are integers, not booleans")
    if isinstance(value, int):
        if value < 0:
            raise TaskError(f"{where}: {at} is {value}; token ids must be non-negative")
        return value
    forms = _PROMPT_FORMS if key in ("clean", "corrupted") else _ANSWER_FORMS
    raise TaskError(f"{where}: {at} is {value!r}; {key!r} must be {forms}")


def _answer(where: str, key: str, value: object) -> Answer:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int):  # bools included, so that they get their own message
        return _token_id(where, key, value)
    if isinstance(value, list) and value:
        if all(isinstance(v, str) and v for v in value):
            items: tuple[Any, ...] = tuple(value)
        elif all(isinstance(v, int) for v in value):
            items = tuple(_token_id(where, key, v, j) for j, v in enumerate(value))
        else:
            raise TaskError(f"{where}: {key!r} must be {_ANSWER_FORMS}, got {value!r}")
        if len(set(items)) != len(items):
            raise TaskError(f"{where}: {key!r} must be {_ANSWER_FORMS}; {value!r} has repeats")
        return items
    raise TaskError(f"{where}: {key!r} must be {_ANSWER_FORMS}, got {value!r}")


def save_jsonl(task: Task, path: str | os.PathLike[str]) -> Path:
    """Write ``task`` as JSON Lines (atomically); returns the path.

    Only prompts and answers are written: the name, metric, description and named
    positions are not part of the format. Token ids (``induction``, or any sequence of
    integers such as a 1-D integer tensor) are written as JSON integers. Every example is
    checked as ``load_jsonl`` would check it, so the file loads back to the same prompts
    and answers; a value that cannot be represented (an empty prompt or answer set,
    a negative or boolean id, a set mixing text and ids or with repeats, a clean and
    corrupted prompt of different kinds) raises :class:`TaskError` naming the example, and
    nothing is written.
    """
    lines = []
    for i in range(len(task)):
        where = f"task {task.name!r}, example {i}"
        values: list[Prompt | Answer] = [task.clean[i], task.corrupted[i], task.answers[i], task.wrong[i]]
        row = dict(zip(KEYS, (_to_json(v) for v in values), strict=True))
        _check_row(where, row)
        lines.append(json.dumps(row, ensure_ascii=False))
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _to_json(value: object, top: bool = True) -> object:
    """A prompt or answer in JSON form: text as is, ids as ``int``, sequences as lists.

    Anything else is returned unchanged for :func:`_check_row` to reject with its message.
    """
    if isinstance(value, str | bool | int):
        return value
    try:
        return operator.index(value)  # type: ignore[arg-type]  # numpy / 0-d torch integers
    except TypeError:
        pass
    if top and (isinstance(value, Sequence) or hasattr(value, "__array__")):  # tuples, tensors, arrays
        try:
            return [_to_json(v, top=False) for v in value]  # type: ignore[attr-defined]
        except TypeError:
            pass
    return value
