"""Dictionary learning: activation stores, SAEs and transcoders, training, evaluation, I/O."""

from .base import ARCHITECTURES, Dictionary, DictionaryConfig, ForwardOutput

__all__ = ["ARCHITECTURES", "Dictionary", "DictionaryConfig", "ForwardOutput"]
