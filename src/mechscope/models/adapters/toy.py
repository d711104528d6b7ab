"""mechscope's own toy transformer (``mechscope.toys.transformer``): pre-norm, learned positions,
separate Q/K/V, optional LayerNorm (``nn.Identity`` when off) and an MLP that is zero-width
(output exactly 0) in attention-only models."""

from .base import Adapter

ADAPTER = Adapter(
    family="toy",
    model_types=("mechscope_toy",),
    layers="model.layers",
    embed="model.embed_tokens",
    pos_embed="model.embed_positions",
    final_norm="model.ln_f",
    unembed="lm_head",
    ln1="ln_1",
    attn="attn",
    o_proj="o_proj",
    ln2="ln_2",
    mlp="mlp",
    mlp_in="fc_in",
    mlp_down="fc_out",
    notes="resid_pre 0 = hook_embed + hook_pos_embed; attention-only toys (d_mlp=0) fire the MLP hooks "
    "with width-0 / all-zero tensors.",
)
