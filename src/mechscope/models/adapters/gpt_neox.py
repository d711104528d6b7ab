"""GPT-NeoX / Pythia: LayerNorm, partial rotary, and (usually) parallel attention and MLP.

With ``use_parallel_residual=True`` attention and MLP both read ``resid_pre``:
``resid_post = (mlp_out + attn_out) + resid_pre`` (HF's order of additions), ``hook_mlp_in``
is the MLP's copy of ``resid_pre`` and there is no ``hook_resid_mid``.
"""

from .base import Adapter

ADAPTER = Adapter(
    family="gpt_neox",
    model_types=("gpt_neox",),
    layers="gpt_neox.layers",
    embed="gpt_neox.embed_in",
    final_norm="gpt_neox.final_layer_norm",
    unembed="lm_head",
    ln1="input_layernorm",
    attn="attention",
    o_proj="dense",
    ln2="post_attention_layernorm",
    mlp="mlp",
    mlp_in="dense_h_to_4h",
    mlp_down="dense_4h_to_h",
    attn_dropout="post_attention_dropout",
    mlp_dropout="post_mlp_dropout",
    parallel=lambda cfg: bool(cfg.use_parallel_residual),
    tolerated_fields=frozenset({"rotary_pct", "rotary_emb_base", "rope_scaling"}),
    notes="Parallel blocks (use_parallel_residual) have no hook_resid_mid.",
)
