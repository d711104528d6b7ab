"""Gemma 3 (text): Gemma 2's sandwich block plus QK-norm and interleaved local/global layers.

The embedding module itself multiplies by sqrt(d_model), so ``hook_embed`` is the scaled
embedding. ``hook_q`` / ``hook_k`` are taken after QK-norm and rotary, as attention uses
them. Sliding-window (local) layers get their window through the attention mask.
"""

from dataclasses import replace

from .gemma2 import ADAPTER as _GEMMA2

ADAPTER = replace(
    _GEMMA2,
    family="gemma3",
    model_types=("gemma3_text",),
    tolerated_fields=frozenset(
        {"cache_implementation", "hidden_act", "rope_theta", "rope_local_base_freq", "rope_scaling"}
    ),
)
