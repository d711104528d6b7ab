from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import tiny

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
