"""Mistral: Llama's block with sliding-window attention (the window lives in the mask)."""

from dataclasses import replace

from .llama import ADAPTER as _LLAMA

ADAPTER = replace(_LLAMA, family="mistral", model_types=("mistral",))
