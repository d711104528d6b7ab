"""Qwen2: Llama's block with QKV biases and optional per-layer sliding windows."""

from dataclasses import replace

from .llama import ADAPTER as _LLAMA

ADAPTER = replace(_LLAMA, family="qwen2", model_types=("qwen2",))
