"""GPT-2: learned absolute positions, LayerNorm, fused QKV ``Conv1D`` weights stored [in, out]."""

from .base import Adapter


def _refuse(cfg) -> list[str]:
    problems = []
    if getattr(cfg, "add_cross_attention", False):
        problems.append("add_cross_attention=True (cross-attention blocks have no canonical hook sites)")
    if getattr(cfg, "reorder_and_upcast_attn", False):
        problems.append("reorder_and_upcast_attn=True (its fp32 eager path is not reproduced)")
    return problems


ADAPTER = Adapter(
    family="gpt2",
    model_types=("gpt2",),
    layers="transformer.h",
    embed="transformer.wte",
    pos_embed="transformer.wpe",
    final_norm="transformer.ln_f",
    unembed="lm_head",
    ln1="ln_1",
    attn="attn",
    o_proj="c_proj",
    ln2="ln_2",
    mlp="mlp",
    mlp_in="c_fc",
    mlp_down="c_proj",
    conv1d_weights=True,
    drop_layer_args=("encoder_hidden_states", "encoder_attention_mask"),
    refuse=_refuse,
    tolerated_fields=frozenset({"n_ctx"}),
    notes="resid_pre 0 = hook_embed + hook_pos_embed (then embedding dropout, identity in eval).",
)
