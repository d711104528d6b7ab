"""``make_dictionary``: the class for a config's architecture, with the config checked."""

from __future__ import annotations

from ._common import DictionaryError
from .base import ARCHITECTURES, Dictionary, DictionaryConfig
from .jumprelu import JumpReLUDictionary
from .matryoshka import MatryoshkaDictionary
from .relu import ReLUDictionary
from .topk import BatchTopKDictionary, TopKDictionary

DICTIONARY_CLASSES: dict[str, type[Dictionary]] = {
    "relu": ReLUDictionary,
    "topk": TopKDictionary,
    "batchtopk": BatchTopKDictionary,
    "jumprelu": JumpReLUDictionary,
    "matryoshka": MatryoshkaDictionary,
}
"""Architecture name -> class (the keys are ``base.ARCHITECTURES``)."""


def check_config(config: DictionaryConfig) -> None:
    """Raise ``DictionaryError`` for a config no architecture can build."""
    if config.architecture not in DICTIONARY_CLASSES:
        raise DictionaryError(
            f"unknown architecture {config.architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
        )
    if config.d_in < 1 or config.d_sae < 1 or config.out_dim < 1:
        raise DictionaryError(
            f"d_in, d_sae and d_out must be positive, got {config.d_in}, {config.d_sae}, {config.out_dim}"
        )
    if config.apply_b_dec_to_input and config.out_dim != config.d_in:
        raise DictionaryError(
            "apply_b_dec_to_input=True subtracts b_dec (output space) from the input, so it needs "
            f"d_out == d_in (got {config.out_dim} != {config.d_in}); transcoders use apply_b_dec_to_input=False"
        )
    if config.dtype not in ("float32", "float64", "bfloat16", "float16"):
        raise DictionaryError(f"dtype must be float32, float64, bfloat16 or float16, not {config.dtype!r}")
    if config.aux_k is not None and config.aux_k < 1:
        raise DictionaryError(f"aux_k must be >= 1 or None, got {config.aux_k}")


def make_dictionary(config: DictionaryConfig) -> Dictionary:
    """A freshly initialised dictionary of ``config.architecture`` (parameters on CPU)."""
    check_config(config)
    return DICTIONARY_CLASSES[config.architecture](config)
