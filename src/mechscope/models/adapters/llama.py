"""Llama (and SmolLM2): RMSNorm, rotary, grouped-query attention, gated SiLU MLP."""

from .base import Adapter

ADAPTER = Adapter(
    family="llama",
    model_types=("llama",),
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    ln1="input_layernorm",
    attn="self_attn",
    o_proj="o_proj",
    ln2="post_attention_layernorm",
    mlp="mlp",
    mlp_in="gate_proj",
    mlp_up="up_proj",
    mlp_down="down_proj",
    tolerated_fields=frozenset({"rope_scaling", "rope_theta"}),
)
