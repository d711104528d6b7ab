"""Saving and loading dictionaries: mechscope's format, SAELens's, and Gemma Scope's release.

Formats (``load_dictionary`` tells them apart by their files):

1. **mechscope** -- ``config.json`` (``{"format": "mechscope.dictionary", "format_version": 1,
   "config": <DictionaryConfig as JSON>}``) and ``weights.safetensors`` (the state dict:
   ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_out]``, ``b_dec [d_out]``,
   ``threshold [d_sae]`` fp32 where the architecture has one, ``W_skip [d_in, d_out]``).
2. **saelens** -- ``cfg.json`` and ``sae_weights.safetensors`` exactly as SAELens v6 writes
   them (``mechscope.dictionary.saelens`` has the field and architecture mapping).
3. **gemmascope** -- a Gemma Scope release directory holding ``params.npz`` (read only;
   ``mechscope.dictionary.gemmascope``).

Every save builds the directory under a temporary name and renames it into place, so an
interrupted save never leaves a half-written dictionary. Loading reads JSON, safetensors and
(Gemma Scope) ``.npz`` with ``allow_pickle=False`` only, and checks every tensor's name,
shape and dtype before building the module; a truncated, partial or mismatched file is an
:class:`~mechscope.errors.ArtifactError` that names the file. Save -> load -> save gives
byte-identical files in both writable formats.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from .._fs import atomic_write_bytes
from .._version import __version__
from ..errors import ArtifactError, MechscopeError
from .base import Dictionary, DictionaryConfig

FORMATS = ("mechscope", "saelens", "gemmascope")
"""Formats ``load_dictionary`` reads; the first two are also written by ``save_dictionary``."""
FORMAT_NAME = "mechscope.dictionary"
"""``format`` field of a mechscope ``config.json``."""
FORMAT_VERSION = 1
"""Version of the mechscope layout; bumped on any incompatible change."""
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"

_FILES = {
    "mechscope": (CONFIG_FILE, WEIGHTS_FILE),
    "saelens": ("cfg.json", "sae_weights.safetensors"),
    "gemmascope": ("params.npz",),
}


# -- shared helpers ---------------------------------------------------------------------------


def make(config: DictionaryConfig) -> Dictionary:
    """Build the module for ``config`` with the architecture registry (``make_dictionary``)."""
    import importlib

    factory = getattr(importlib.import_module("mechscope.dictionary"), "make_dictionary", None)
    if factory is None:
        raise MechscopeError("mechscope.dictionary.make_dictionary is not available in this build")
    return factory(config)


def config_to_json(config: DictionaryConfig) -> dict[str, Any]:
    """``DictionaryConfig`` as a JSON-able dict (tuples become lists)."""
    out = dataclasses.asdict(config)
    return json.loads(json.dumps(out))


def config_from_json(data: dict[str, Any], where: str) -> DictionaryConfig:
    """Rebuild a ``DictionaryConfig``; unknown fields are an error (a newer writer, or a typo)."""
    if not isinstance(data, dict):
        raise ArtifactError(f"{where}: the dictionary config must be a JSON object")
    known = {f.name: f for f in dataclasses.fields(DictionaryConfig)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ArtifactError(
            f"{where}: unknown dictionary config field(s) {', '.join(unknown)}; "
            "written by a newer mechscope? Upgrade mechscope to load it"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = known[name].default
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    missing = [n for n, f in known.items() if _required(f) and n not in kwargs]
    if missing:
        raise ArtifactError(f"{where}: the dictionary config lacks {', '.join(missing)}")
    try:
        return DictionaryConfig(**kwargs)
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{where}: invalid dictionary config: {e}") from e


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing or malformed file is an ``ArtifactError`` naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} cannot be read: {e}") from e
    try:
        return json.loads(text)
    except ValueError as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); the file is corrupt or truncated") from e


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the header metadata of a safetensors file, or an ``ArtifactError``."""
    from safetensors import safe_open

    if not path.exists():
        raise ArtifactError(f"{path} is missing")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own error types (and OSError)
        raise ArtifactError(
            f"{path} is not a readable safetensors file ({e}); it is corrupt or truncated"
        ) from e
    return tensors, meta


def check_state_dict(d: Dictionary, tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Check names, shapes and dtypes against ``d``'s own parameters; return them ready to load."""
    expected = {k: v for k, v in d.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(extra)}")
        raise ArtifactError(
            f"{path}: tensors do not match a {d.config.architecture} dictionary: {'; '.join(parts)}"
        )
    for name, ref in expected.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(ref.shape):
            raise ArtifactError(
                f"{path}: tensor {name} has shape {tuple(t.shape)}, expected {tuple(ref.shape)} "
                f"for d_in={d.config.d_in}, d_sae={d.config.d_sae}, d_out={d.config.out_dim}"
            )
        if t.dtype != ref.dtype:
            raise ArtifactError(f"{path}: tensor {name} has dtype {t.dtype}, expected {ref.dtype}")
    return tensors


def build_loaded(config: DictionaryConfig, tensors: dict[str, torch.Tensor], path: Path) -> Dictionary:
    """Build the module for ``config`` and load ``tensors`` into it after checking them."""
    d = make(config)
    d.load_state_dict(check_state_dict(d, tensors, path))
    d.eval()
    return d


def state_tensors(d: Dictionary) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors (what the safetensors file holds)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in d.state_dict().items()}


def json_bytes(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, indented), so equal configs give equal files."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_directory(path: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` as the directory ``path``, atomically, replacing an earlier dictionary.

    The new directory is built under a temporary sibling name and renamed into place. An
    existing ``path`` is replaced only if it is empty or holds a dictionary (one of the known
    layouts); anything else is refused rather than deleted.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise MechscopeError(f"{path} exists and is not a directory")
        contents = {p.name for p in path.iterdir()}
        if contents and not any(set(fs) & contents for fs in _FILES.values()):
            raise MechscopeError(f"{path} exists and does not hold a dictionary; refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return path


# -- the mechscope format ---------------------------------------------------------------------


def _mechscope_files(d: Dictionary) -> dict[str, bytes]:
    from safetensors.torch import save

    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "mechscope_version": __version__}
    config = {**header, "config": config_to_json(d.config)}
    return {
        CONFIG_FILE: json_bytes(config),
        WEIGHTS_FILE: save(state_tensors(d), metadata={"format": FORMAT_NAME}),
    }


def _load_mechscope(path: Path) -> Dictionary:
    cfg_path = path / CONFIG_FILE
    data = read_json(cfg_path)
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME or "config" not in data:
        raise ArtifactError(f"{cfg_path} is not a mechscope dictionary config (no 'format'/'config' fields)")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{cfg_path} has format_version {version!r}; this mechscope reads version {FORMAT_VERSION}"
        )
    config = config_from_json(data["config"], str(cfg_path))
    tensors, _ = read_safetensors(path / WEIGHTS_FILE)
    return build_loaded(config, tensors, path / WEIGHTS_FILE)


# -- public API -------------------------------------------------------------------------------


def save_dictionary(d: Dictionary, path: str | os.PathLike[str], format: str = "mechscope") -> Path:
    """Save ``d`` to the directory ``path`` in ``format`` ("mechscope" or "saelens"); returns it.

    The directory is written atomically and replaces an earlier dictionary at ``path``. In the
    SAELens layout a dictionary whose ``norm_scale`` is not 1 is saved with the scale folded
    into the weights (``Dictionary.fold_norm_scale``, on a copy; ``d`` is not modified),
    because SAELens's files take raw activations.
    """
    if format == "mechscope":
        files = _mechscope_files(d)
    elif format == "saelens":
        from .saelens import saelens_files

        files = saelens_files(d)
    else:
        raise MechscopeError(f"format must be 'mechscope' or 'saelens', not {format!r}")
    return write_directory(Path(path), files)


def detect_format(path: str | os.PathLike[str]) -> str:
    """Which of ``FORMATS`` the directory ``path`` holds (by its files)."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a directory (a dictionary is a directory of files)")
    names = {p.name for p in path.iterdir()}
    for fmt, files in _FILES.items():
        if files[0] in names:
            return fmt
    expected = "; ".join(f"{fmt}: {' + '.join(fs)}" for fmt, fs in _FILES.items())
    raise ArtifactError(f"{path} holds no dictionary: expected one of these layouts ({expected})")


def load_dictionary(
    path: str | os.PathLike[str],
    *,
    hook_name: str | None = None,
    hook_name_out: str | None = None,
    model_name: str | None = None,
) -> Dictionary:
    """Load a dictionary from a directory in any of ``FORMATS`` (detected from its files).

    ``hook_name``, ``hook_name_out`` and ``model_name`` override what the files say; a Gemma
    Scope directory carries no config, so there they fill in what the path does not tell
    (see ``docs/sae-formats.md``). Returns the module in eval mode, on the CPU.
    """
    path = Path(path)
    if path.is_file():  # a path to cfg.json / params.npz / ... means its directory
        path = path.parent
    fmt = detect_format(path)
    if fmt == "mechscope":
        d = _load_mechscope(path)
    elif fmt == "saelens":
        from .saelens import load_saelens

        d = load_saelens(path)
    else:
        from .gemmascope import load_gemmascope

        d = load_gemmascope(path, hook_name=hook_name, hook_name_out=hook_name_out, model_name=model_name)
        return d
    overrides: dict[str, Any] = {
        k: v
        for k, v in (("hook_name", hook_name), ("hook_name_out", hook_name_out), ("model_name", model_name))
        if v is not None
    }
    if overrides:
        d.config = dataclasses.replace(d.config, **overrides)
    return d
