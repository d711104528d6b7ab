"""Dictionary learning: activation stores, SAEs and transcoders, training, evaluation, I/O."""

from ._common import DictionaryError
from .base import ARCHITECTURES, Dictionary, DictionaryConfig, ForwardOutput
from .jumprelu import JumpReLUDictionary
from .matryoshka import MatryoshkaDictionary
from .registry import DICTIONARY_CLASSES, make_dictionary
from .relu import ReLUDictionary
from .topk import BatchTopKDictionary, TopKDictionary

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
]
