"""Gemma Scope's released layout: a directory holding ``params.npz`` (read only).

Gemma Scope (Lieberum et al. 2024) releases each JumpReLU SAE or transcoder as
``<repo>/layer_<L>/width_<W>/average_l0_<N>/params.npz`` with the arrays ``W_enc [d_in, d_sae]``,
``W_dec [d_sae, d_out]``, ``b_enc [d_sae]``, ``b_dec [d_out]`` and ``threshold [d_sae]``.
Its encoder does not subtract ``b_dec`` (``apply_b_dec_to_input=False``) and its activation
is ``f = h * (h > threshold)``, which is mechscope's ``jumprelu``. The arrays are read with
``numpy.load(..., allow_pickle=False)``.

The file carries no hook name. It is taken, in order, from the ``hook_name`` argument, or
from the path the way SAELens's Gemma Scope loader reads the repository name: ``layer_<L>``
plus ``-res`` -> ``blocks.L.hook_resid_post``, ``-mlp`` -> ``blocks.L.hook_mlp_out``,
``-att`` -> ``blocks.L.attn.hook_z`` (flattened heads), ``transcoders`` ->
``blocks.L.ln2.hook_normalized`` to ``blocks.L.hook_mlp_out``. Otherwise it stays empty (set
it before evaluating). The model name comes from ``gemma-scope-<size>`` in the path.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import torch

from ..errors import ArtifactError
from .base import Dictionary, DictionaryConfig
from .io import build_loaded

PARAMS_FILE = "params.npz"
_KEYS = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")


def _read_npz(path: Path) -> dict[str, torch.Tensor]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ArtifactError(f"{path} is not a readable .npz file ({e}); it is corrupt or truncated") from e
    missing = [k for k in _KEYS if k not in arrays]
    if missing:
        raise ArtifactError(f"{path} lacks the Gemma Scope array(s) {', '.join(missing)}")
    extra = sorted(set(arrays) - set(_KEYS))
    if extra:
        raise ArtifactError(f"{path} has unexpected array(s) {', '.join(extra)}")
    return {k: torch.from_numpy(arrays[k].astype(np.float32)) for k in _KEYS}


def hooks_from_path(path: Path) -> tuple[str, str | None]:
    """``(hook_name, hook_name_out)`` as the release path names them, or ``("", None)``."""
    text = path.as_posix()
    layer = re.search(r"layer_(\d+)", text)
    if layer is None:
        return "", None
    L = int(layer.group(1))
    if "transcoder" in text:
        return f"blocks.{L}.ln2.hook_normalized", f"blocks.{L}.hook_mlp_out"
    for tag, hook in (("-res", "hook_resid_post"), ("-mlp", "hook_mlp_out"), ("-att", "attn.hook_z")):
        if tag in text:
            return f"blocks.{L}.{hook}", None
    return "", None


def load_gemmascope(
    directory: Path,
    *,
    hook_name: str | None = None,
    hook_name_out: str | None = None,
    model_name: str | None = None,
) -> Dictionary:
    """Load a Gemma Scope ``params.npz`` directory as a ``jumprelu`` dictionary."""
    path = directory / PARAMS_FILE
    t = _read_npz(path)
    d_in, d_sae = t["W_enc"].shape if t["W_enc"].ndim == 2 else (0, 0)
    if t["W_enc"].ndim != 2 or t["W_dec"].ndim != 2 or t["W_dec"].shape[0] != d_sae:
        raise ArtifactError(
            f"{path}: W_enc {tuple(t['W_enc'].shape)} and W_dec {tuple(t['W_dec'].shape)} "
            "are not [d_in, d_sae] and [d_sae, d_out]"
        )
    d_out = t["W_dec"].shape[1]
    guess_in, guess_out = hooks_from_path(directory.resolve())
    name_in = hook_name if hook_name is not None else guess_in
    name_out = hook_name_out if hook_name_out is not None else guess_out
    found = re.search(r"gemma-scope-(\d+b(?:-(?:pt|it))?)", directory.resolve().as_posix())
    model = model_name if model_name is not None else (f"gemma-2-{found.group(1)}" if found else "")
    model = model.removesuffix("-pt")
    meta: dict[str, object] = {"source": "gemmascope"}
    if name_in.endswith("hook_z"):
        meta["reshape_activations"] = "hook_z"
    config = DictionaryConfig(
        architecture="jumprelu",
        d_in=int(d_in),
        d_sae=int(d_sae),
        d_out=int(d_out) if name_out is not None or d_out != d_in else None,
        hook_name=name_in,
        hook_name_out=name_out,
        apply_b_dec_to_input=False,
        model_name=model,
        metadata=meta,
    )
    return build_loaded(config, t, path)
