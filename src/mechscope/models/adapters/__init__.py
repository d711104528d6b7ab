"""One declarative adapter per architecture family, and the lookup by ``config.model_type``."""

from __future__ import annotations

from typing import Any

from ...errors import UnsupportedArchitectureError
from . import gemma2, gemma3, gpt2, gpt_neox, llama, mistral, qwen2, toy
from .base import Adapter, get_path, has_path

ADAPTERS: tuple[Adapter, ...] = (
    gpt2.ADAPTER,
    gpt_neox.ADAPTER,
    llama.ADAPTER,
    mistral.ADAPTER,
    qwen2.ADAPTER,
    gemma2.ADAPTER,
    gemma3.ADAPTER,
    toy.ADAPTER,
)

_BY_TYPE: dict[str, Adapter] = {t: a for a in ADAPTERS for t in a.model_types}

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_BY_TYPE)

_HINTS: dict[str, str] = {
    "gemma3": "This is the multimodal Gemma 3; load its text-only causal LM (model_type gemma3_text).",
}


def adapter_for(config: Any, *, strict: bool = True) -> Adapter:
    """The adapter serving ``config``, after checking the config has nothing it cannot handle.

    Raises :class:`UnsupportedArchitectureError` for an unknown ``model_type``, or (when
    ``strict``) for a known family whose config uses a feature the adapter does not handle.
    """
    model_type = str(getattr(config, "model_type", None))
    adapter = _BY_TYPE.get(model_type)
    if adapter is None:
        raise UnsupportedArchitectureError(
            f"no mechscope adapter for model_type {model_type!r}",
            SUPPORTED_MODEL_TYPES,
            _HINTS.get(model_type, ""),
        )
    problems = adapter.check_config(config)
    if problems and strict:
        raise UnsupportedArchitectureError(
            f"the {adapter.family} adapter does not handle this config: " + "; ".join(problems),
            SUPPORTED_MODEL_TYPES,
            "Pass strict=False to load anyway (hook semantics are then unverified).",
        )
    if problems:
        import warnings

        warnings.warn(
            "mechscope: loading with unverified config features: " + "; ".join(problems), stacklevel=3
        )
    return adapter


__all__ = ["ADAPTERS", "SUPPORTED_MODEL_TYPES", "Adapter", "adapter_for", "get_path", "has_path"]
