"""What an architecture adapter declares, and the checks every adapter shares.

An adapter is data, not code: the paths of the HF modules that play each canonical role
(pre-attention norm, attention, output projection, MLP projections, ...), the block's
residual wiring (sequential, sandwich-normed or parallel), and the config fields it refuses.
The runtime (``models/runtime.py``) turns that description into hook points.

Config checking follows penzai's converter: a field the family's HF modules implement is
fine (mechscope calls those modules unchanged); a field that changes what mechscope itself
re-implements (the block's residual wiring, the on-demand attention pattern, the
unembedding) is either handled explicitly or refused; an unrecognised field that is set to
a non-trivial value is refused, so a new architecture feature never loads silently wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

# Config fields that carry no computation (identity, bookkeeping, generation defaults).
COMMON_METADATA: frozenset[str] = frozenset(
    {
        "_name_or_path",
        "_model_name_or_path",
        "architectures",
        "auto_map",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "unk_token_id",
        "sep_token_id",
        "cls_token_id",
        "mask_token_id",
        "decoder_start_token_id",
        "dtype",
        "torch_dtype",
        "transformers_version",
        "model_type",
        "quantization_config",
        "use_cache",
        "initializer_range",
        "id2label",
        "label2id",
        "problem_type",
        "return_dict",
        "output_attentions",
        "output_hidden_states",
        "chunk_size_feed_forward",
        "is_encoder_decoder",
        "is_decoder",
        "task_specific_params",
        "tie_word_embeddings",
        "max_position_embeddings",
        "_attn_implementation_autoset",
        "attn_implementation",
        "generation_config",
        "_sliding_window_pattern",
        "sliding_window_pattern",
    }
)


@dataclass(frozen=True)
class Adapter:
    """Where one architecture family keeps each canonical component.

    Paths are dotted attribute paths: model-level paths start at the ``*ForCausalLM``
    module, block-level paths at one decoder layer, projection paths at the attention or
    MLP module named by ``attn`` / ``mlp``.
    """

    family: str
    """Human-readable family name, e.g. ``"llama"``."""
    model_types: tuple[str, ...]
    """HF ``config.model_type`` values this adapter serves."""
    layers: str
    """Model-level path of the ``nn.ModuleList`` of decoder layers."""
    embed: str
    """Model-level path of the token embedding."""
    final_norm: str
    """Model-level path of the final norm."""
    unembed: str
    """Model-level path of the unembedding (``lm_head``)."""
    ln1: str
    """Block-level path of the pre-attention norm."""
    attn: str
    """Block-level path of the attention module."""
    o_proj: str
    """Attention-level path of the output projection."""
    ln2: str
    """Block-level path of the pre-MLP norm."""
    mlp: str
    """Block-level path of the MLP module."""
    mlp_in: str
    """MLP-level path of the projection whose output is ``mlp.hook_pre`` (the gate if gated)."""
    mlp_down: str
    """MLP-level path of the down projection; its input is ``mlp.hook_post``."""
    mlp_up: str | None = None
    """MLP-level path of the up projection of a gated MLP (``mlp.hook_pre_linear``)."""
    pos_embed: str | None = None
    """Model-level path of a learned absolute position embedding, if any."""
    post_attn_norm: str | None = None
    """Block-level path of a norm applied to the attention output before the residual add."""
    post_mlp_norm: str | None = None
    """Block-level path of a norm applied to the MLP output before the residual add."""
    attn_dropout: str | None = None
    """Block-level dropout applied to the attention output (identity in eval mode)."""
    mlp_dropout: str | None = None
    """Block-level dropout applied to the MLP output (identity in eval mode)."""
    conv1d_weights: bool = False
    """True when projection weights are stored ``[in, out]`` (GPT-2's ``Conv1D``)."""
    parallel: Callable[[Any], bool] = field(default=lambda cfg: False)
    """Whether attention and MLP read the same residual (GPT-NeoX / Pythia)."""
    drop_layer_args: tuple[str, ...] = ()
    """Decoder-layer arguments not forwarded to attention (must be None)."""
    final_logit_softcap: str | None = None
    """Config field holding a final-logit soft-cap (``tanh(x / c) * c``), if the family has one."""
    refuse: Callable[[Any], list[str]] = field(default=lambda cfg: [])
    """Returns the config features this adapter does not handle (empty when fine)."""
    tolerated_fields: frozenset[str] = frozenset()
    """Extra config fields (absent from the default config) known to be harmless."""
    notes: str = ""
    """Family-specific remarks shown in the hook documentation."""

    def check_config(self, config: Any) -> list[str]:
        """All reasons this adapter cannot faithfully serve ``config`` (empty when it can)."""
        problems = list(self.refuse(config))
        try:
            default = type(config)().to_dict()
        except Exception:  # a config class without defaults: judge by the refusals alone
            default = None
        if default is not None:
            for key, value in config.to_dict().items():
                if key in COMMON_METADATA or key in default or key in self.tolerated_fields:
                    continue
                if key.startswith("_") or value in (None, False, 0, "", [], {}):
                    continue
                problems.append(f"config field {key}={value!r} is unknown to the {self.family} adapter")
        return problems


def get_path(root: nn.Module, path: str) -> Any:
    """The submodule at a dotted ``path`` below ``root`` (``""`` is ``root`` itself)."""
    mod: Any = root
    for part in path.split(".") if path else []:
        mod = mod[int(part)] if part.isdigit() else getattr(mod, part)
    return mod


def has_path(root: nn.Module, path: str) -> bool:
    """Whether ``path`` exists below ``root``."""
    try:
        get_path(root, path)
    except (AttributeError, IndexError):
        return False
    return True
