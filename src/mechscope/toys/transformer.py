"""A small transformer of our own, readable in one sitting, hookable like every real model.

It is a Hugging Face ``PreTrainedModel`` (model_type ``mechscope_toy``), so ``HookedModel``
instruments it through the same runtime and adapter machinery as GPT-2 or Llama and it has
the standard hook names (``blocks.L.hook_resid_pre``, ``blocks.L.attn.hook_pattern``,
``blocks.L.hook_mlp_out``...). Options: attention-only (``d_mlp=0``: the MLP is a zero-width
layer whose output is exactly zero, so the MLP hooks fire with zeros), LayerNorm or none,
biases or none, ReLU or GELU. Positions are learned and absolute.

One block, pre-norm::

    resid_mid  = resid_pre + o_proj(attention(ln_1(resid_pre)))
    resid_post = resid_mid + fc_out(act(fc_in(ln_2(resid_mid))))

and ``logits = lm_head(ln_f(resid_post of the last block))``.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import CausalLMOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

MODEL_TYPE = "mechscope_toy"


@dataclass(frozen=True)
class TransformerSpec:
    """The shape of a toy transformer (turned into a :class:`ToyConfig` by :func:`build`)."""

    d_vocab: int
    """Vocabulary size."""
    n_ctx: int
    """Longest sequence (rows of the learned position embedding)."""
    d_model: int = 64
    """Residual stream width."""
    n_layers: int = 2
    """Number of blocks."""
    n_heads: int = 4
    """Attention heads per block."""
    d_head: int | None = None
    """Width of one head (default ``d_model // n_heads``)."""
    d_mlp: int = 0
    """MLP hidden width; 0 makes the model attention-only."""
    layer_norm: bool = True
    """LayerNorm before attention, MLP and unembedding; False: no normalisation at all."""
    bias: bool = True
    """Biases on every linear layer (and LayerNorm)."""
    act: str = "relu"
    """MLP activation: ``"relu"`` or ``"gelu"``."""
    init_std: float = 0.02
    """Standard deviation of the normal initialisation of weights and embeddings."""

    def to_config(self) -> ToyConfig:
        """The Hugging Face config for this spec."""
        return ToyConfig(**asdict(self))


class ToyConfig(PretrainedConfig):
    """Hugging Face config of the toy transformer; the fields are those of :class:`TransformerSpec`."""

    model_type = MODEL_TYPE

    def __init__(
        self,
        d_vocab: int = 64,
        n_ctx: int = 64,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        d_head: int | None = None,
        d_mlp: int = 0,
        layer_norm: bool = True,
        bias: bool = True,
        act: str = "relu",
        init_std: float = 0.02,
        **kwargs: Any,
    ) -> None:
        if act not in ("relu", "gelu"):
            raise ValueError(f"act must be 'relu' or 'gelu', not {act!r}")
        self.d_vocab, self.n_ctx, self.d_model, self.n_layers = d_vocab, n_ctx, d_model, n_layers
        self.n_heads, self.d_head, self.d_mlp = n_heads, d_head or d_model // n_heads, d_mlp
        self.layer_norm, self.bias, self.act, self.init_std = layer_norm, bias, act, init_std
        # The names HookedModel and transformers read.
        self.vocab_size, self.hidden_size, self.num_hidden_layers = d_vocab, d_model, n_layers
        self.num_attention_heads, self.head_dim, self.max_position_embeddings = n_heads, self.d_head, n_ctx
        # No tokenizer: no BOS/EOS. The pad id only fills finished rows in generate (none finish
        # without an EOS) and is masked out of attention.
        pad = kwargs.pop("pad_token_id", None)
        self.pad_token_id = 0 if pad is None else pad
        self.bos_token_id = kwargs.pop("bos_token_id", None)
        self.eos_token_id = kwargs.pop("eos_token_id", None)
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)

    def spec(self) -> TransformerSpec:
        """This config as a :class:`TransformerSpec`."""
        return TransformerSpec(
            d_vocab=self.d_vocab,
            n_ctx=self.n_ctx,
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            d_head=self.d_head,
            d_mlp=self.d_mlp,
            layer_norm=self.layer_norm,
            bias=self.bias,
            act=self.act,
            init_std=self.init_std,
        )


def eager_attention_forward(
    module: nn.Module,
    query: Tensor,  # [batch, head, q_pos, d_head]
    key: Tensor,  # [batch, head, k_pos, d_head]
    value: Tensor,  # [batch, head, k_pos, d_head]
    attention_mask: Tensor | None,  # additive [batch, 1, q_pos, k_pos], or None (plain causal)
    scaling: float | None = None,
    dropout: float = 0.0,
    **_: Any,
) -> tuple[Tensor, Tensor]:
    """Softmax attention written out; returns ``z [batch, q_pos, head, d_head]`` and the pattern."""
    scores = query @ key.transpose(-1, -2) * (scaling or query.shape[-1] ** -0.5)  # [b, h, q, k]
    if attention_mask is None:
        q, k = scores.shape[-2:]
        causal = torch.ones(q, k, dtype=torch.bool, device=scores.device).tril(k - q)
        scores = scores.masked_fill(~causal, float("-inf"))
    else:
        scores = scores + attention_mask
    pattern = torch.softmax(scores, dim=-1)
    return (pattern @ value).transpose(1, 2), pattern


def _norm(config: ToyConfig) -> nn.Module:
    if not config.layer_norm:
        return nn.Identity()
    return nn.LayerNorm(config.d_model, bias=config.bias)


class ToyAttention(nn.Module):
    """Multi-head causal self-attention with separate Q, K, V and output projections."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.n_heads, self.d_head = config.n_heads, config.d_head
        self.scaling = config.d_head**-0.5
        self.is_causal = True
        width = config.n_heads * config.d_head
        self.q_proj = nn.Linear(config.d_model, width, bias=config.bias)
        self.k_proj = nn.Linear(config.d_model, width, bias=config.bias)
        self.v_proj = nn.Linear(config.d_model, width, bias=config.bias)
        self.o_proj = nn.Linear(width, config.d_model, bias=config.bias)

    def forward(
        self, hidden_states: Tensor, attention_mask: Tensor | None = None, **kwargs: Any
    ) -> tuple[Tensor, Tensor | None]:
        b, p, _ = hidden_states.shape
        heads = lambda proj: proj(hidden_states).view(b, p, self.n_heads, self.d_head).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.q_proj), heads(self.k_proj), heads(self.v_proj)  # [batch, head, pos, d_head]
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        z, pattern = attend(self, q, k, v, attention_mask, scaling=self.scaling, dropout=0.0, **kwargs)
        return self.o_proj(z.reshape(b, p, -1)), pattern  # z: [batch, pos, head, d_head]


class ToyMLP(nn.Module):
    """``fc_out(act(fc_in(x)))``; with ``d_mlp=0`` both layers have width 0 and the output is 0."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        bias = config.bias and config.d_mlp > 0
        with warnings.catch_warnings():  # torch warns that initialising a zero-width layer is a no-op
            warnings.simplefilter("ignore", UserWarning)
            self.fc_in = nn.Linear(config.d_model, config.d_mlp, bias=bias)
            self.fc_out = nn.Linear(config.d_mlp, config.d_model, bias=bias)
        self.act = nn.ReLU() if config.act == "relu" else nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


class ToyBlock(nn.Module):
    """One pre-norm block: attention then MLP, each added to the residual stream."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.ln_1, self.attn = _norm(config), ToyAttention(config)
        self.ln_2, self.mlp = _norm(config), ToyMLP(config)

    def forward(self, hidden_states: Tensor, attention_mask: Tensor | None = None, **kwargs: Any) -> Tensor:
        resid_mid = hidden_states + self.attn(self.ln_1(hidden_states), attention_mask, **kwargs)[0]
        return resid_mid + self.mlp(self.ln_2(resid_mid))


class ToyPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the attention kernels the toy supports."""

    config_class = ToyConfig
    base_model_prefix = "model"
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_std
        if isinstance(module, (nn.Linear, nn.Embedding)):
            if module.weight.numel():
                module.weight.normal_(0.0, std)
            bias = getattr(module, "bias", None)
            if bias is not None:
                bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            if module.bias is not None:
                module.bias.zero_()


class ToyModel(ToyPreTrainedModel):
    """Embeddings, blocks and final norm; returns the final residual stream after ``ln_f``."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.d_vocab, config.d_model)
        self.embed_positions = nn.Embedding(config.n_ctx, config.d_model)
        self.layers = nn.ModuleList(ToyBlock(config) for _ in range(config.n_layers))
        self.ln_f = _norm(config)
        self.post_init()

    def forward(
        self,
        input_ids: Tensor,  # [batch, pos]
        attention_mask: Tensor | None = None,  # [batch, pos], 1 = real token
        position_ids: Tensor | None = None,  # [batch|1, pos]
    ) -> Tensor:  # [batch, pos, d_model]
        p = input_ids.shape[1]
        if p > self.config.n_ctx:
            raise ValueError(f"sequence of {p} tokens is longer than the model's n_ctx={self.config.n_ctx}")
        if position_ids is None:
            position_ids = torch.arange(p, device=input_ids.device)[None]
        embeds = self.embed_tokens(input_ids)
        x = embeds + self.embed_positions(position_ids)
        mask = create_causal_mask(
            config=self.config, inputs_embeds=embeds, attention_mask=attention_mask, cache=None
        )
        for layer in self.layers:
            x = layer(x, mask)
        return self.ln_f(x)


class ToyForCausalLM(ToyPreTrainedModel, GenerationMixin):
    """The toy transformer with its unembedding (``lm_head``). No KV cache: each generation step
    recomputes the whole sequence."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        self.model = ToyModel(config)
        self.lm_head = nn.Linear(config.d_model, config.d_vocab, bias=config.bias)
        self.post_init()

    def forward(
        self,
        input_ids: Tensor,  # [batch, pos]
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        logits_to_keep: int = 0,
        labels: Tensor | None = None,  # [batch, pos]: next-token loss, HF convention
        **_: Any,  # use_cache, return_dict...: nothing to do
    ) -> CausalLMOutput:
        hidden = self.model(input_ids, attention_mask, position_ids)
        logits = self.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, **_: Any
    ) -> dict[str, Any]:
        """Without a KV cache, every generation step runs the whole sequence so far (left padding:
        positions count real tokens only)."""
        positions = None if attention_mask is None else (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": positions}


def build(spec: TransformerSpec, *, seed: int = 0) -> ToyForCausalLM:
    """A freshly initialised toy transformer; the same ``seed`` gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ToyForCausalLM(spec.to_config())
    return model


AutoConfig.register(MODEL_TYPE, ToyConfig, exist_ok=True)
AutoModelForCausalLM.register(ToyConfig, ToyForCausalLM, exist_ok=True)
