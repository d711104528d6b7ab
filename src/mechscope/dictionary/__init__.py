"""Dictionary learning: activation stores, SAEs and transcoders, training, evaluation, I/O."""

from ._common import DictionaryError
from .base import ARCHITECTURES, Dictionary, DictionaryConfig, ForwardOutput
from .jumprelu import JumpReLUDictionary
from .matryoshka import MatryoshkaDictionary
from .registry import DICTIONARY_CLASSES, make_dictionary
from .relu import ReLUDictionary
from .topk import BatchTopKDictionary, TopKDictionary

# The rest of the stage, importable from here without loading it up front.
_LAZY = {
    "save_dictionary": "io", "load_dictionary": "io", "detect_format": "io",
    "evaluate_dictionary": "evaluate", "EvalResult": "evaluate", "plot_density": "evaluate",
    "TrainConfig": "train", "TrainResult": "train", "TrainingDivergedError": "train",
    "CheckpointError": "checkpoint",
    "DiskStore": "store", "TensorSource": "store", "StreamingSource": "store", "MaskConfig": "store",
    "harvest": "store",
}  # fmt: skip


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ARCHITECTURES",
    "DICTIONARY_CLASSES",
    "BatchTopKDictionary",
    "Dictionary",
    "DictionaryConfig",
    "DictionaryError",
    "ForwardOutput",
    "JumpReLUDictionary",
    "MatryoshkaDictionary",
    "ReLUDictionary",
    "TopKDictionary",
    "make_dictionary",
    *_LAZY,
]
