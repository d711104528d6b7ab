"""Gemma 2: sandwich norms, attention-logit and final-logit soft-capping, local/global layers.

``hook_attn_out`` and ``hook_mlp_out`` include the post-attention / post-feed-forward norms,
so ``resid_mid = resid_pre + attn_out`` holds exactly. ``hook_embed`` is the embedding
module's output; Gemma 2 multiplies it by sqrt(d_model) afterwards, so resid_pre 0 is the
scaled value. Soft-capped attention needs HF's eager kernel; patterns are recomputed with
the same cap.
"""

from .base import Adapter


def _refuse(cfg) -> list[str]:
    if getattr(cfg, "use_bidirectional_attention", False):
        return ["use_bidirectional_attention=True (not a causal language model)"]
    return []


ADAPTER = Adapter(
    family="gemma2",
    model_types=("gemma2",),
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    ln1="input_layernorm",
    attn="self_attn",
    o_proj="o_proj",
    post_attn_norm="post_attention_layernorm",
    ln2="pre_feedforward_layernorm",
    mlp="mlp",
    mlp_in="gate_proj",
    mlp_up="up_proj",
    mlp_down="down_proj",
    post_mlp_norm="post_feedforward_layernorm",
    final_logit_softcap="final_logit_softcapping",
    refuse=_refuse,
    tolerated_fields=frozenset({"cache_implementation", "hidden_act", "rope_theta"}),
)
