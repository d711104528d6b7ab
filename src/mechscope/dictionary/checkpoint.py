"""Training checkpoints: atomic directories of safetensors and JSON, never pickle.

Layout of ``<output_dir>/checkpoints/step-<000000123>/`` (the number is the count of
completed optimiser steps):

* ``<name>.weights.safetensors``: the dictionary's ``state_dict`` (parameters and buffers);
* ``<name>.optim.safetensors``: the Adam state tensors, keyed ``<param index>.<key>``
  (``step``, ``exp_avg``, ``exp_avg_sq``), the index being the parameter's position in the
  optimiser's single parameter group;
* ``<name>.tracking.safetensors``: ``tokens_since_fired`` ``[d_sae]`` int64;
* ``state.json``: the step, token count, each dictionary's config and training config, the
  optimiser's hyper-parameters, and the sha256 of every file above. It is written last.

The directory is built under a temporary name and renamed into place (``atomic_dir``), so a
crash while writing leaves no directory under a real name. A complete directory whose files
no longer match their recorded checksums (truncated, edited) is *corrupt*; ``latest`` skips
it with a warning and returns the previous one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .._fs import atomic_dir
from ..errors import CheckpointError
from .base import DictionaryConfig

FORMAT_VERSION = 1
"""Version of the checkpoint layout (``state.json["format"]``)."""


@dataclass
class DictionaryState:
    """Everything a checkpoint holds about one dictionary."""

    name: str
    """File-name stem of this dictionary inside the checkpoint."""
    config: DictionaryConfig
    """The dictionary's config (with the training ``norm_scale``, before folding)."""
    weights: dict[str, torch.Tensor]
    """``state_dict`` of the dictionary."""
    optimizer: dict[str, Any]
    """``torch.optim.Optimizer.state_dict()`` of its Adam."""
    tokens_since_fired: torch.Tensor
    """``[d_sae]`` int64: tokens since each latent last fired."""
    train_config: dict[str, Any]
    """The dictionary's ``TrainConfig`` as JSON-able values."""


def config_to_json(config: DictionaryConfig) -> dict[str, Any]:
    """A DictionaryConfig as JSON-able values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def config_from_json(data: dict[str, Any]) -> DictionaryConfig:
    """Inverse of :func:`config_to_json` (unknown keys are an error, lists of known tuple fields become tuples)."""
    names = {f.name: f for f in dataclasses.fields(DictionaryConfig)}
    unknown = set(data) - set(names)
    if unknown:
        raise CheckpointError(f"checkpoint dictionary config has unknown fields {sorted(unknown)}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        default = names[key].default
        values[key] = tuple(value) if isinstance(value, list) and isinstance(default, tuple) else value
    return DictionaryConfig(**values)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _optim_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Split an optimiser state dict into flat tensors and JSON-able param groups."""
    tensors: dict[str, torch.Tensor] = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value)
            tensors[f"{idx}.{key}"] = value.detach().contiguous().cpu()
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]
    ]
    return tensors, groups


def _optim_state(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def save(root: Path, step: int, tokens: int, states: list[DictionaryState], *, keep: int = 2) -> Path:
    """Write ``root/step-<step>`` atomically; keep only the newest ``keep`` checkpoints."""
    final = Path(root) / f"step-{step:09d}"
    if final.exists():
        shutil.rmtree(final)
    with atomic_dir(final) as tmp:
        files: dict[str, str] = {}
        entries = []
        for s in states:
            optim, groups = _optim_tensors(s.optimizer)
            blobs = {
                "weights": {k: v.detach().contiguous().cpu() for k, v in s.weights.items()},
                "optim": optim,
                "tracking": {"tokens_since_fired": s.tokens_since_fired.detach().cpu()},
            }
            for kind, tensors in blobs.items():
                fname = f"{s.name}.{kind}.safetensors"
                save_file(tensors, str(tmp / fname))
                files[fname] = _sha256(tmp / fname)
            entries.append(
                {"name": s.name, "config": config_to_json(s.config), "train_config": s.train_config,
                 "param_groups": groups}
            )  # fmt: skip
        meta = {
            "format": FORMAT_VERSION,
            "step": step,
            "tokens": tokens,
            "dictionaries": entries,
            "files": files,
        }
        (tmp / "state.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete-looking checkpoint directories under ``root``, oldest first (by step)."""
    root = Path(root)
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[5:]))


def verify(path: Path) -> dict[str, Any]:
    """Read ``state.json`` and check every file's checksum; raise ``CheckpointError`` naming the problem."""
    path = Path(path)
    try:
        meta = json.loads((path / "state.json").read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {path} is partial: state.json is missing") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {path}: state.json is not valid JSON ({e})") from e
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    for fname, digest in meta["files"].items():
        f = path / fname
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path} is partial: {fname} is missing")
        if _sha256(f) != digest:
            raise CheckpointError(f"checkpoint {path} is corrupt: {fname} does not match its sha256")
    return dict(meta)


def latest(root: Path) -> Path | None:
    """The newest checkpoint under ``root`` that verifies; corrupt ones are skipped with a warning.

    Returns None when there is no checkpoint at all; raises ``CheckpointError`` when there are
    checkpoints but none of them verifies.
    """
    found = list_checkpoints(root)
    errors = []
    for path in reversed(found):
        try:
            verify(path)
            return path
        except CheckpointError as e:
            errors.append(str(e))
            warnings.warn(f"{e}; falling back to an older checkpoint", stacklevel=2)
    if found:
        raise CheckpointError("no usable checkpoint under " + str(root) + ": " + "; ".join(errors))
    return None


def load(path: Path) -> tuple[int, int, list[DictionaryState]]:
    """``(step, tokens, states)`` from a verified checkpoint directory."""
    path = Path(path)
    meta = verify(path)
    states = []
    for entry in meta["dictionaries"]:
        name = entry["name"]
        try:
            weights = load_file(str(path / f"{name}.weights.safetensors"))
            optim = load_file(str(path / f"{name}.optim.safetensors"))
            tracking = load_file(str(path / f"{name}.tracking.safetensors"))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"checkpoint {path}: cannot read the files of {name!r} ({e})") from e
        states.append(
            DictionaryState(
                name=name,
                config=config_from_json(entry["config"]),
                weights=weights,
                optimizer=_optim_state(optim, entry["param_groups"]),
                tokens_since_fired=tracking["tokens_since_fired"],
                train_config=entry["train_config"],
            )
        )
    return int(meta["step"]), int(meta["tokens"]), states
