"""``load_model`` and ``wrap``: every way a model reaches mechscope.

``load_model`` accepts a built-in name (``"smollm2-135m"``, ``"gemma3-270m"``), a ``.gguf``
file, a local Hugging Face model directory, or a hub id. GGUF files are dequantised to
fp32 once and cached as safetensors under the user cache directory, written atomically;
a cache entry that is partial or corrupt is detected, named, and rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .._fs import atomic_dir, atomic_write_json, cache_root
from .._version import __version__
from ..errors import ArtifactError, ModelLoadError
from .hooked import HookedModel

logger = logging.getLogger("mechscope")

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_CACHE_SCHEMA = 1


def wrap(hf_model: nn.Module, tokenizer: Any = None, *, name: str = "", strict: bool = True) -> HookedModel:
    """Wrap a Hugging Face causal LM you already hold. The model itself is not modified.

    ``strict=False`` accepts config features the adapter does not know (with a warning).
    """
    return HookedModel(hf_model, tokenizer, name=name, strict=strict)


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    strict: bool = True,
    attn_implementation: str | None = None,
) -> HookedModel:
    """Load a model and wrap it: a built-in name, ``"toy/<name>"`` (mechscope's toy models), a
    ``.gguf`` file, a local directory or a hub id.

    The model is in eval mode with frozen parameters (activation gradients still flow when
    asked for). ``device`` defaults to CUDA when available, else CPU; ``dtype`` to float32.
    ``attn_implementation`` is passed to ``from_pretrained`` (default: transformers' choice,
    usually SDPA); hook points work with any of them.
    """
    from .zoo import BUILTIN, ensure_builtin

    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    prefix = next((p for p in PLUGINS if name.startswith(p)), None)
    if prefix is not None:
        model_dir = _plugin_source(prefix)(name[len(prefix) :])
    elif name in BUILTIN:
        model_dir = ensure_builtin(name)
    elif path.is_file() and path.suffix == ".gguf":
        model_dir = ensure_converted_gguf(path)
    elif path.is_dir():
        model_dir = path
    elif path.exists():
        raise ModelLoadError(f"{name} is neither a model directory nor a .gguf file")
    elif name.endswith(".gguf") or (os.sep in name and not _looks_like_hub_id(name)):
        raise ModelLoadError(f"no such file or directory: {name}")
    else:
        model_dir = None
    if model_dir is not None:
        _load_plugin_for_model_type(model_dir)
    hf_model, tokenizer = _from_pretrained(model_dir or name, revision, dtype, attn_implementation)
    device = torch.device(device) if device is not None else _default_device()
    hf_model.to(device).eval()
    # Frozen weights: analysis never needs parameter gradients, and activation gradients
    # still flow when asked for (backward hooks, run_with_cache(grad=True)).
    hf_model.requires_grad_(False)
    return HookedModel(hf_model, tokenizer, name=name, strict=strict)


# Packages that extend ``load_model`` with a name prefix (``"toy/<name>"``) or a config
# ``model_type`` of their own. ``models`` never imports them by module path: the first use of a
# prefix or model type imports the package by name, and the package registers its resolver with
# :func:`register_source` (and its model classes with transformers' Auto classes) on import.
PLUGINS: dict[str, str] = {"toy/": "mechscope.toys.registry"}
PLUGIN_MODEL_TYPES: dict[str, str] = {"mechscope_toy": "mechscope.toys.transformer"}
_SOURCES: dict[str, Callable[[str], Path]] = {}


def register_source(prefix: str, resolve: Callable[[str], Path]) -> None:
    """Serve ``load_model(prefix + name)`` from the model directory ``resolve(name)`` returns."""
    _SOURCES[prefix] = resolve


def _plugin_source(prefix: str) -> Callable[[str], Path]:
    if prefix not in _SOURCES:
        importlib.import_module(PLUGINS[prefix])
    if prefix not in _SOURCES:
        raise ModelLoadError(f"{PLUGINS[prefix]} did not register a source for {prefix!r} names")
    return _SOURCES[prefix]


def _load_plugin_for_model_type(model_dir: Path) -> None:
    """Import the package that defines a local model's ``model_type``, if mechscope ships it."""
    try:
        model_type = json.loads((model_dir / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return
    if model_type in PLUGIN_MODEL_TYPES:
        importlib.import_module(PLUGIN_MODEL_TYPES[model_type])


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _from_pretrained(
    source: str | Path, revision: str | None, dtype: torch.dtype | None, attn: str | None
) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32}
    if revision:
        kwargs["revision"] = revision
    if attn:
        kwargs["attn_implementation"] = attn
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        where = (
            "the local directory" if isinstance(source, Path) else "the Hugging Face Hub (is it reachable?)"
        )
        raise ModelLoadError(f"could not load {source} from {where}: {e}") from e
    tokenizer = None
    if not isinstance(source, Path) or any((source / f).exists() for f in _TOKENIZER_FILES):
        try:
            tokenizer = (
                AutoTokenizer.from_pretrained(source, revision=revision)
                if revision
                else AutoTokenizer.from_pretrained(source)
            )
        except (OSError, ValueError) as e:
            logger.warning("mechscope: no usable tokenizer for %s (%s); pass token ids", source, e)
    return hf_model, tokenizer


# ---------------------------------------------------------------- GGUF conversion cache


def ensure_converted_gguf(gguf: Path, *, key: str | None = None, label: str | None = None) -> Path:
    """The cached safetensors directory for ``gguf``, converting it first if needed."""
    gguf = gguf.resolve()
    if key is None:
        st = gguf.stat()
        digest = hashlib.sha256(f"{gguf}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
        key = f"gguf-{gguf.stem}-{digest}"
    target = cache_root() / "models" / key
    if not usable_cache_entry(target):
        convert_gguf(gguf, target, label=label or gguf.name)
    return target


def usable_cache_entry(target: Path) -> bool:
    """Whether ``target`` is a complete cache entry; a partial or corrupt one is named and removed."""
    if not target.exists():
        return False
    try:
        verify_cached_model(target)
        return True
    except ArtifactError as e:
        logger.warning("mechscope: %s; converting again", e)
        shutil.rmtree(target, ignore_errors=True)
        return False


def convert_gguf(gguf: Path, target: Path, *, label: str) -> None:
    """Dequantise ``gguf`` to fp32 and write config, weights and tokenizer to ``target`` atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.warning("mechscope: converting %s to safetensors (first use only; ~1 min on CPU)", label)
    t0 = time.time()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # transformers raises many kinds here
        raise ModelLoadError(f"could not read GGUF file {gguf}: {e}") from e
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the saved weights are plain fp32
    state = _untied_state_dict(model)
    with atomic_dir(target) as tmp:
        config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        atomic_write_json(
            tmp / "mechscope_cache.json",
            {
                "schema_version": _CACHE_SCHEMA,
                "mechscope_version": __version__,
                "source": str(gguf),
                "source_bytes": gguf.stat().st_size,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": files,
            },
        )
    logger.warning("mechscope: cached %s in %s (%.0f s)", label, target, time.time() - t0)


def _untied_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without tied duplicates (safetensors refuses shared storage)."""
    state = model.state_dict()
    seen: dict[int, str] = {}
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        ptr = v.data_ptr()
        if ptr in seen and getattr(model.config, "tie_word_embeddings", False):
            continue  # e.g. lm_head.weight tied to the embedding: restored by from_pretrained
        seen[ptr] = k
        out[k] = v.contiguous()
    return out


def verify_cached_model(target: Path) -> None:
    """Raise :class:`ArtifactError` naming the problem if a cached model directory is unusable."""
    meta_path = target / "mechscope_cache.json"
    if not meta_path.exists():
        raise ArtifactError(f"cached model {target} is partial: mechscope_cache.json is missing")
    try:
        meta = json.loads(meta_path.read_text())
        files = dict(meta["files"])
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"cached model {target} has an unreadable mechscope_cache.json: {e}") from e
    for fname, size in files.items():
        p = target / fname
        if not p.exists() or p.stat().st_size != size:
            raise ArtifactError(f"cached model file {p} is missing or truncated (expected {size} bytes)")
    try:
        with safe_open(str(target / "model.safetensors"), framework="pt") as f:
            list(f.keys())
    except Exception as e:
        raise ArtifactError(f"cached weights {target / 'model.safetensors'} are corrupt: {e}") from e
