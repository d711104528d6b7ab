"""Command-line options generated from a frozen config dataclass.

Every field becomes ``--field-name`` with its type, its default and its attribute docstring
as the help text, so ``--help`` documents every option the config has. Nested config
dataclasses are flattened (their fields become options of their own; names must not clash).
Supported field types: ``str``, ``int``, ``float``, ``bool`` (``--x/--no-x``), ``Path``,
``X | None`` of those, and ``tuple[X, ...]`` (space-separated values).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import textwrap
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_SCALARS = (str, int, float, Path)


def field_docs(cls: type) -> dict[str, str]:
    """Each dataclass field's attribute docstring (the string literal under it), as one line."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    names = {f.name for f in dataclasses.fields(cls)}
    docs: dict[str, str] = {}
    for prev, node in itertools.pairwise(body):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and prev.target.id in names
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.replace("``", "").split()).replace("%", "%%")
    return docs


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(tp, False)``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _nested(cls: type) -> dict[str, type]:
    """Fields whose type is itself a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])
    }


def add_config_options(
    parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = (), seen: set[str] | None = None
) -> None:
    """Add one option per field of ``cls`` (recursing into nested config dataclasses)."""
    seen = set() if seen is None else seen
    hints, docs, nested = typing.get_type_hints(cls), field_docs(cls), _nested(cls)
    group = parser.add_argument_group(f"{cls.__name__} options") if nested or seen else parser
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        if f.name in nested:
            add_config_options(parser, nested[f.name], skip=skip, seen=seen)
            continue
        if f.name in seen:
            raise TypeError(f"option --{f.name} is defined twice ({cls.__name__})")
        seen.add(f.name)
        _add_field(group, f, hints[f.name], docs.get(f.name, ""))


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _add_field(group: Any, f: dataclasses.Field[Any], tp: Any, doc: str) -> None:
    flag = "--" + f.name.replace("_", "-")
    default = _default(f)
    required = default is dataclasses.MISSING
    shown = "" if required else f" (default: {default!r})".replace("%", "%%")
    kwargs: dict[str, Any] = {"dest": f.name, "help": (doc + shown).strip(), "required": required}
    if not required:
        kwargs["default"] = default
    base, _ = _unwrap_optional(tp)
    if base is bool:
        kwargs.pop("required")
        group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        return
    if typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        group.add_argument(flag, type=item, nargs="*", **kwargs)
        return
    if base in _SCALARS:
        group.add_argument(flag, type=base, metavar=base.__name__.upper(), **kwargs)
        return
    if typing.get_origin(base) is dict:
        return  # free-form metadata: not a command-line option
    raise TypeError(f"{f.name}: field type {tp!r} has no command-line form")


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """Build ``cls`` (and its nested configs) from parsed options; tuples come back as tuples."""
    hints, nested = typing.get_type_hints(cls), _nested(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in nested:
            values[f.name] = config_from_args(nested[f.name], args)
        elif hasattr(args, f.name):
            v = getattr(args, f.name)
            base, _ = _unwrap_optional(hints[f.name])
            values[f.name] = tuple(v) if isinstance(v, list) and typing.get_origin(base) is tuple else v
    return cls(**values)


def add_config_commands(sub: Any, commands: Sequence[tuple[str, type, str, Any]]) -> None:
    """One subcommand per ``(name, config class, help text, handler)``, its options from the class."""
    for name, cls, text, func in commands:
        p = sub.add_parser(name, help=text, description=f"{text}. {cls.__doc__ or ''}")
        add_config_options(p, cls)
        p.set_defaults(func=func, config_class=cls)
