"""Options generated from config dataclasses: every field, its type, default and docstring."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mechscope._config_cli import add_config_options, config_from_args


@dataclass(frozen=True)
class Inner:
    """Nested."""

    lr: float = 1e-3
    """Learning rate."""
    steps: int | None = None
    """Steps (None: until the data ends)."""


@dataclass(frozen=True)
class Outer:
    """Top level."""

    hook: str
    """Hook to read (required)."""
    out: Path = Path("runs")
    """Output directory."""
    widths: tuple[int, ...] = (1, 2)
    """Nested widths."""
    resume: bool = False
    """Resume from the last checkpoint."""
    train: Inner = field(default_factory=Inner)
    """Training settings."""


def parse(argv: list[str]) -> Outer:
    p = argparse.ArgumentParser()
    add_config_options(p, Outer)
    return config_from_args(Outer, p.parse_args(argv))


def test_defaults_types_and_nesting():
    c = parse(["--hook", "blocks.3.hook_resid_post"])
    assert c == Outer(hook="blocks.3.hook_resid_post")
    c = parse(["--hook", "h", "--out", "x", "--widths", "4", "8", "--resume", "--lr", "0.5", "--steps", "7"])
    assert c == Outer(hook="h", out=Path("x"), widths=(4, 8), resume=True, train=Inner(lr=0.5, steps=7))
    assert isinstance(c.widths, tuple) and isinstance(c.out, Path)


def test_help_lists_every_field_with_its_docstring(capsys):
    p = argparse.ArgumentParser()
    add_config_options(p, Outer)
    with pytest.raises(SystemExit):
        p.parse_args(["--help"])
    text = capsys.readouterr().out
    for flag, doc in [("--hook", "Hook to read"), ("--widths", "Nested widths"), ("--lr", "Learning rate"),
                      ("--steps", "Steps (None: until the data ends)"), ("--no-resume", "Resume from")]:  # fmt: skip
        assert flag in text and doc in text


def test_missing_required_and_bad_type_are_usage_errors():
    with pytest.raises(SystemExit):
        parse([])
    with pytest.raises(SystemExit):
        parse(["--hook", "h", "--lr", "fast"])


def test_clashing_names_are_refused():
    @dataclass(frozen=True)
    class Clash:
        lr: float = 0.1
        """Duplicate."""
        train: Inner = field(default_factory=Inner)
        """Nested with an lr too."""

    with pytest.raises(TypeError, match="--lr"):
        add_config_options(argparse.ArgumentParser(), Clash)
