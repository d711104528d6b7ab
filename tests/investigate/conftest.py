"""Fixtures of the investigate tests: the tiny investigation's inputs and one complete run."""

from __future__ import annotations

from pathlib import Path

import pytest

from investigate_inputs import write_inputs


@pytest.fixture(scope="session")
def tiny_inputs(tmp_path_factory) -> Path:
    """The tiny investigation's config file (inputs beside it)."""
    return write_inputs(tmp_path_factory.mktemp("investigate-inputs"))


@pytest.fixture(scope="session")
def tiny_run(tiny_inputs, tmp_path_factory) -> Path:
    """A complete run of the tiny investigation (read-only: copy it before changing it)."""
    from mechscope.investigate.run import investigate, read_config

    out = tmp_path_factory.mktemp("investigate-run") / "run"
    investigate(read_config(tiny_inputs), out, progress=lambda *a: None, say=lambda m: None)
    return out
