from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import tiny
from investigate_inputs import write_inputs

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """Every tiny variant saved once per session with ``save_pretrained``."""
    root = tmp_path_factory.mktemp("tiny")
    return {v: tiny.build(v, root / v) for v in tiny.VARIANTS}


_LOADED: dict[str, object] = {}


@pytest.fixture(params=tiny.VARIANTS)
def tiny_model(request, tiny_dirs):
    """A tiny model of each family, loaded through ``load_model(dir)``."""
    import mechscope

    v = request.param
    if v not in _LOADED:
        _LOADED[v] = mechscope.load_model(tiny_dirs[v], device="cpu")
    return _LOADED[v]


def windows(model) -> dict[int, int | None]:
    """Sliding window per layer, read from the HF config."""
    c = model.hf_model.config
    types = getattr(c, "layer_types", None)
    out = {}
    for i in range(model.cfg.n_layers):
        w = getattr(c, "sliding_window", None)
        if types is not None:
            w = w if types[i] == "sliding_attention" else None
        elif getattr(c, "use_sliding_window", True) is False:
            w = None
        out[i] = w
    return out


@pytest.fixture(scope="module")
def backend(tiny_dirs):
    """The server's model backend on the tiny Llama, with a random TopK dictionary at
    ``blocks.1.hook_resid_post`` (one per test module: tests may change its state)."""
    from mechscope.dictionary import DictionaryConfig
    from mechscope.dictionary.registry import make_dictionary
    from mechscope.pipeline.ui_backend import ModelBackend

    b = ModelBackend(str(tiny_dirs["llama-gqa"]))
    torch.manual_seed(0)
    b.dictionary = make_dictionary(
        DictionaryConfig("topk", d_in=64, d_sae=32, k=4, hook_name="blocks.1.hook_resid_post")
    ).eval()
    return b


# ------------------------------------------------------------ investigate (tests/investigate)


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
