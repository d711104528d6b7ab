"""``HookedModel``: read and write any activation of a Hugging Face causal LM by name.

The wrapped model is never modified outside a hooked call: instrumentation is installed
on entry to :meth:`HookedModel.hooks` / :meth:`HookedModel.run_with_cache` and removed on
exit, even on error (see ``models/runtime.py``). A plain call runs HF's own forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import MechscopeError, UnsupportedArchitectureError
from .adapters import SUPPORTED_MODEL_TYPES, adapter_for, get_path, has_path
from .cache import ActivationCache
from .names import SITES, HookInfo, hook_name, parse, suggest
from .runtime import HookFn, RunState, Runtime, SplitAttention, StopForward, read_only
from .tokens import TokenBatch, decode_each, encode, pad, pad_id_of

Inputs = str | Sequence[str] | Tensor | TokenBatch
NamesArg = None | str | Iterable[Any] | Callable[[str], bool]
HookList = Iterable[tuple[Any, HookFn]]

_PATTERN_SITES = {"attn.hook_attn_scores", "attn.hook_pattern"}
_KV_SITES = {"attn.hook_k", "attn.hook_v"}


def _ragged(inputs: Any) -> bool:
    """A list of token-id lists of different lengths (padded like a list of prompts)."""
    return (
        isinstance(inputs, Sequence)
        and len(inputs) > 1
        and all(isinstance(x, Sequence | Tensor) for x in inputs)
        and len({len(x) for x in inputs}) > 1
    )


@dataclass(frozen=True)
class ModelConfig:
    """The dimensions of a hooked model, read from its HF config and modules."""

    name: str
    """Where the model came from (hub id, path or built-in name)."""
    family: str
    """Adapter family, e.g. ``"llama"``."""
    n_layers: int
    """Number of decoder blocks."""
    d_model: int
    """Residual stream width."""
    n_heads: int
    """Query heads per attention layer."""
    n_kv_heads: int
    """Key/value heads per attention layer (fewer than n_heads under GQA/MQA)."""
    d_head: int
    """Width of one attention head."""
    d_mlp: int
    """MLP hidden width."""
    d_vocab: int
    """Vocabulary size (rows of the unembedding)."""
    parallel_attn_mlp: bool
    """Whether attention and MLP read the same residual (GPT-NeoX style)."""
    gated_mlp: bool
    """Whether the MLP is gated (``mlp.hook_pre_linear`` exists)."""


class HookedModel:
    """A Hugging Face causal LM with TransformerLens-style hook points.

    Build one with :func:`mechscope.load_model` or :func:`mechscope.wrap`.
    """

    def __init__(
        self, hf_model: nn.Module, tokenizer: Any = None, *, name: str = "", strict: bool = True
    ) -> None:
        self.hf_model: Any = hf_model
        """The wrapped Hugging Face model (left unmodified)."""
        self.tokenizer = tokenizer
        """Its tokenizer, or None (then inputs must be token ids)."""
        self.adapter = adapter_for(hf_model.config, strict=strict)
        """The architecture adapter in use."""
        if not has_path(hf_model, self.adapter.unembed) or not has_path(hf_model, self.adapter.layers):
            raise UnsupportedArchitectureError(
                f"{type(hf_model).__name__} has no {self.adapter.unembed!r}/{self.adapter.layers!r}; wrap the "
                "*ForCausalLM model, not the bare base model",
                SUPPORTED_MODEL_TYPES,
            )
        self.cfg = self._read_config(name)
        """Dimensions of the model (:class:`ModelConfig`)."""
        self._rt = Runtime(hf_model, self.adapter, self.cfg.n_heads, self.cfg.d_head)

    def _read_config(self, name: str) -> ModelConfig:
        c = self.hf_model.config
        n_heads = c.num_attention_heads
        d_model = c.hidden_size
        d_head = getattr(c, "head_dim", None) or d_model // n_heads
        mlp_in = get_path(
            get_path(self.hf_model, self.adapter.layers)[0], self.adapter.mlp + "." + self.adapter.mlp_in
        )
        d_mlp = getattr(mlp_in, "out_features", None)  # nn.Linear (0 in attention-only toys)
        if d_mlp is None:
            d_mlp = mlp_in.nf  # GPT-2 Conv1D
        return ModelConfig(
            name=name or getattr(c, "_name_or_path", "") or type(self.hf_model).__name__,
            family=self.adapter.family,
            n_layers=c.num_hidden_layers,
            d_model=d_model,
            n_heads=n_heads,
            n_kv_heads=getattr(c, "num_key_value_heads", None) or n_heads,
            d_head=d_head,
            d_mlp=d_mlp,
            d_vocab=get_path(self.hf_model, self.adapter.unembed).weight.shape[0],
            parallel_attn_mlp=self.adapter.parallel(c),
            gated_mlp=self.adapter.mlp_up is not None,
        )

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"HookedModel({c.name!r}, family={c.family}, n_layers={c.n_layers}, d_model={c.d_model}, "
            f"n_heads={c.n_heads}, n_kv_heads={c.n_kv_heads}, hooks={len(self.hook_names)})"
        )

    # ------------------------------------------------------------------ properties

    @property
    def hook_names(self) -> list[str]:
        """Every hook point of this model, in forward order (see ``docs/hooks.md`` for shapes)."""
        return list(self._rt.hook_names)

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.hf_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the model's parameters."""
        return next(self.hf_model.parameters()).dtype

    @property
    def W_U(self) -> Tensor:
        """Unembedding matrix ``[d_model, d_vocab]``."""
        return get_path(self.hf_model, self.adapter.unembed).weight.T

    @property
    def W_E(self) -> Tensor:
        """Token embedding matrix ``[d_vocab, d_model]``."""
        return get_path(self.hf_model, self.adapter.embed).weight

    def W_O(self, layer: int) -> Tensor:
        """Output projection of ``layer`` split per head, ``[head, d_head, d_model]``."""
        return self._rt.w_o(layer)

    def hook_info(self, name: str) -> HookInfo:
        """Shape (with this model's sizes) and meaning of the hook point ``name``."""
        name = self._check_name(name)
        info = SITES[parse(name)[1]]
        c = self.cfg
        sizes = {
            "d_model": c.d_model,
            "head": c.n_heads,
            "kv_head": c.n_kv_heads,
            "d_head": c.d_head,
            "d_mlp": c.d_mlp,
        }
        shape = " ".join(f"{d}={sizes[d]}" if d in sizes else d for d in info.shape.split())
        return HookInfo(name, shape, info.meaning, info.on_demand)

    # ------------------------------------------------------------------ tokens

    def tokenize(
        self, inputs: str | Sequence[str], *, prepend_bos: bool | None = None, padding_side: str = "right"
    ) -> TokenBatch:
        """Tokenize and pad prompts into a :class:`TokenBatch` (see ``models/tokens.py`` for the BOS policy)."""
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts:
            raise ValueError("no prompts given")
        return pad(encode(self.tokenizer, texts, prepend_bos), pad_id_of(self.tokenizer), padding_side)

    def to_tokens(
        self, inputs: str | Sequence[str], *, prepend_bos: bool | None = None, padding_side: str = "right"
    ) -> Tensor:
        """Token ids ``[batch pos]`` of one prompt or a padded list of prompts."""
        return self.tokenize(inputs, prepend_bos=prepend_bos, padding_side=padding_side).tokens

    def to_string(self, tokens: Tensor | Sequence[int]) -> str | list[str]:
        """Decode ``[pos]`` ids to a string, or ``[batch pos]`` ids to a list of strings."""
        t = torch.as_tensor(tokens)
        if t.dim() == 2:
            return [self.to_string(row) for row in t]  # type: ignore[misc]
        return self.tokenizer.decode(
            t.tolist(), skip_special_tokens=False, clean_up_tokenization_spaces=False
        )

    def to_str_tokens(
        self, inputs: str | Tensor | Sequence[int], *, prepend_bos: bool | None = None
    ) -> list[str]:
        """Each token of one prompt as its own string: ``["The", " E", "iff", "el", ...]``."""
        if isinstance(inputs, str):
            ids = encode(self.tokenizer, [inputs], prepend_bos)[0]
        else:
            t = torch.as_tensor(inputs)
            if t.dim() == 2 and t.shape[0] == 1:
                t = t[0]
            if t.dim() != 1:
                raise ValueError("to_str_tokens takes one prompt: a string or a 1-D token tensor")
            ids = t.tolist()
        return decode_each(self.tokenizer, ids)

    def to_single_token(self, text: str) -> int:
        """The id of ``text`` if it is exactly one token (no special tokens), else an error."""
        ids = encode(self.tokenizer, [text], prepend_bos=False)[0]
        if len(ids) != 1:
            raise MechscopeError(f"{text!r} is {len(ids)} tokens: {decode_each(self.tokenizer, ids)}")
        return ids[0]

    def _batch(
        self, inputs: Inputs, attention_mask: Tensor | None, prepend_bos: bool | None, padding_side: str
    ) -> TokenBatch:
        if isinstance(inputs, TokenBatch):
            batch = inputs
        elif isinstance(inputs, str) or (
            isinstance(inputs, Sequence) and inputs and isinstance(inputs[0], str)
        ):
            batch = self.tokenize(inputs, prepend_bos=prepend_bos, padding_side=padding_side)  # type: ignore[arg-type]
        elif _ragged(inputs) and attention_mask is None:
            batch = pad([list(map(int, x)) for x in inputs], pad_id_of(self.tokenizer), padding_side)  # type: ignore[union-attr]
        else:
            tokens = torch.as_tensor(inputs, dtype=torch.long)
            if tokens.dim() == 1:
                tokens = tokens[None]
            if tokens.dim() != 2:
                raise ValueError(f"token ids must be [batch pos] or [pos], got shape {tuple(tokens.shape)}")
            if attention_mask is None:
                attention_mask = torch.ones_like(tokens)
            attention_mask = torch.as_tensor(attention_mask).reshape(tokens.shape)
            left = bool((attention_mask[:, 0] == 0).any()) and bool((attention_mask[:, -1] == 1).all())
            batch = TokenBatch(tokens, attention_mask, "left" if left else "right")
        return batch.to(self.device)

    # ------------------------------------------------------------------ names

    def _check_name(self, key: Any) -> str:
        name = hook_name(*key) if isinstance(key, tuple) else key
        if name not in self._rt.points:
            raise suggest(str(name), self._rt.hook_names, self.cfg.n_layers)
        return name

    def _resolve_names(self, names: NamesArg) -> list[str]:
        if names is None:
            return list(self._rt.default_names)
        if callable(names):
            return [n for n in self._rt.hook_names if names(n)]
        if isinstance(names, str | tuple):
            names = [names]
        return [self._check_name(n) for n in names]

    def _state(
        self, fwd: HookList = (), bwd: HookList = (), stop_at_layer: int | None = None, grad: bool = False
    ) -> RunState:
        """The hooks already in force plus ``fwd``/``bwd``."""
        base = self._rt.state
        new_fwd = {k: list(v) for k, v in base.fwd.items()}
        new_bwd = {k: list(v) for k, v in base.bwd.items()}
        for table, hooks in ((new_fwd, fwd), (new_bwd, bwd)):
            for key, fn in hooks:
                if not callable(fn):
                    raise TypeError(f"the hook function for {key!r} is not callable")
                table.setdefault(self._check_name(key), []).append(fn)
        requested = set(new_fwd) | set(new_bwd)

        def layers(sites: set[str]) -> frozenset[int]:
            return frozenset(
                p.layer for n in requested if (p := self._rt.points[n]).layer is not None and p.site in sites
            )

        return RunState(
            fwd=new_fwd,
            bwd=new_bwd,
            stop_at_layer=stop_at_layer if stop_at_layer is not None else base.stop_at_layer,
            pattern_layers=layers(_PATTERN_SITES),
            result_layers=layers({"attn.hook_result"}),
            need_grad=grad or bool(new_bwd) or base.need_grad,
        )

    # ------------------------------------------------------------------ running

    @contextmanager
    def hooks(
        self,
        fwd_hooks: HookList = (),
        bwd_hooks: HookList = (),
        *,
        split_attention: Mapping[int, SplitAttention] | None = None,
        grad: bool = False,
    ) -> Iterator[HookedModel]:
        """Keep hooks in force inside a ``with`` block; they are removed on exit, even on error.

        ``fwd_hooks`` / ``bwd_hooks`` are ``(name, fn)`` pairs; ``fn(tensor, hook)`` returns a
        replacement tensor or None (after editing in place). Inside the block, calls to this
        model, to :meth:`generate` and to ``hf_model`` itself all run with the hooks.
        ``split_attention`` gives chosen layers' heads separate q/k/v inputs
        (:class:`~mechscope.models.split.SplitAttention`, used by circuit discovery);
        ``grad`` makes activations require grad even when the weights are frozen.
        """
        state = self._state(fwd_hooks, bwd_hooks, grad=grad)
        if split_attention:
            state.split_attn = {**state.split_attn, **split_attention}
        with self._rt.active(state):
            yield self

    def __call__(
        self,
        inputs: Inputs,
        *,
        attention_mask: Tensor | None = None,
        prepend_bos: bool | None = None,
        padding_side: str = "right",
        logits_to_keep: int = 0,
    ) -> Tensor:
        """Logits ``[batch pos d_vocab]`` for the inputs, with whatever hooks are in force.

        ``logits_to_keep=k`` computes logits for the last ``k`` positions only (HF's
        argument; with left padding, ``1`` gives every prompt's next-token logits cheaply).
        """
        return self._forward(self._batch(inputs, attention_mask, prepend_bos, padding_side), logits_to_keep)

    forward = __call__

    def _forward(self, batch: TokenBatch, logits_to_keep: int = 0) -> Tensor:
        kwargs: dict[str, Any] = {"input_ids": batch.tokens, "use_cache": False}
        if logits_to_keep:
            kwargs["logits_to_keep"] = logits_to_keep
        if batch.is_padded:
            kwargs.update(attention_mask=batch.attention_mask, position_ids=batch.position_ids)
        return self.hf_model(**kwargs).logits

    def run_with_hooks(
        self,
        inputs: Inputs,
        fwd_hooks: HookList = (),
        bwd_hooks: HookList = (),
        **kwargs: Any,
    ) -> Tensor:
        """Logits of one forward pass with ``fwd_hooks`` (and ``bwd_hooks``) in force."""
        with self.hooks(fwd_hooks, bwd_hooks):
            return self(inputs, **kwargs)

    def run_with_cache(
        self,
        inputs: Inputs,
        names: NamesArg = None,
        *,
        stop_at_layer: int | None = None,
        return_logits: bool = True,
        fwd_hooks: HookList = (),
        device: torch.device | str | None = None,
        grad: bool = False,
        attention_mask: Tensor | None = None,
        prepend_bos: bool | None = None,
        padding_side: str = "right",
        logits_to_keep: int = 0,
    ) -> tuple[Tensor | None, ActivationCache]:
        """Run the model and record activations: returns ``(logits, cache)``.

        ``names``: None records every hook point except the on-demand ones (scores, pattern,
        result); a list of names (or ``(site, layer)`` keys); or a predicate on names.
        ``stop_at_layer=L`` runs only blocks ``< L`` (``blocks.L.hook_resid_pre`` is still
        recorded; ``L = n_layers`` skips only the unembedding) and returns no logits;
        ``return_logits=False`` stops right after the deepest requested site. ``fwd_hooks`` run before recording. Without ``grad`` the run is
        under ``torch.no_grad()``.
        """
        batch = self._batch(inputs, attention_mask, prepend_bos, padding_side)
        wanted = self._resolve_names(names)
        if stop_at_layer is None and not return_logits:
            stop_at_layer = self._deepest_block(wanted)
        store: dict[str, Tensor] = {}

        @read_only
        def record(t: Tensor, hook: Any) -> None:
            t = t if grad else t.detach()
            store[hook.name] = t.to(device) if device is not None else t

        state = self._state([*fwd_hooks, *((n, record) for n in wanted)], (), stop_at_layer, grad)
        logits = None
        with nullcontext() if grad else torch.no_grad(), self._rt.active(state), suppress(StopForward):
            logits = self._forward(batch, logits_to_keep)
        if not return_logits:
            logits = None
        cache = ActivationCache(store, batch, self._rt.hook_names, self.cfg.n_layers)
        return logits, cache

    def _deepest_block(self, names: list[str]) -> int:
        """The ``stop_at_layer`` that computes ``names`` and nothing after them."""
        if "ln_final.hook_normalized" in names:
            return self.cfg.n_layers
        return max((layer for n in names if (layer := self._rt.points[n].layer) is not None), default=-1) + 1

    @property
    def blocks(self) -> list[nn.Module]:
        """The HF decoder layers. Called while hooks are in force they run mechscope's block forward."""
        return list(self._rt.layers)

    def block_inputs(self, **hf_kwargs: Any) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """What HF passes to each decoder block for ``hf_model(**hf_kwargs)``, without running the blocks.

        Returns one ``(args, kwargs)`` per block (attention masks, rotary embeddings, caches in
        the model's own formats), so a caller can run blocks on their own (see the patching
        engine's suffix runs).
        """
        captured: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        state = RunState(capture=captured, stop_at_layer=self.cfg.n_layers)
        with torch.no_grad(), self._rt.active(state), suppress(StopForward):
            self.hf_model(**hf_kwargs)
        return captured

    def unembed(self, resid: Tensor, token_ids: Tensor | None = None) -> Tensor:
        """Logits from residual-stream vectors ``[..., d_model]``: final norm, unembedding, soft-cap.

        ``token_ids`` (1-D) restricts the output to those vocabulary entries, ``[..., len(ids)]``.
        Runs the modules' own ``forward`` so no hooks fire (it is used by the logit lens).
        """
        x = get_path(self.hf_model, self.adapter.final_norm).forward(resid)
        head = get_path(self.hf_model, self.adapter.unembed)
        if token_ids is None:
            logits = head.forward(x)
        else:
            bias = None if head.bias is None else head.bias[token_ids]
            logits = torch.nn.functional.linear(x, head.weight[token_ids], bias)
        cap = getattr(self.hf_model.config, self.adapter.final_logit_softcap or "", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        inputs: Inputs,
        max_new_tokens: int = 20,
        *,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop_at_eos: bool = True,
        fwd_hooks: HookList = (),
        use_cache: bool | None = None,
        prepend_bos: bool | None = None,
    ) -> Tensor | str | list[str]:
        """Generate continuations with whatever hooks are in force (plus ``fwd_hooks``).

        A string in gives a string out (prompt plus continuation); a list of strings gives a
        list; token ids give ids ``[batch, pos + new]``. Prompts are left-padded. Greedy by
        default; ``seed`` makes sampling reproducible without touching the global RNG.
        With a KV cache each step's hooks see only the new positions; when hooks on
        ``hook_k``/``hook_v`` are in force the cache is turned off so that those edits
        reach every later step.
        """
        from transformers import GenerationConfig

        batch = self._batch(inputs, None, prepend_bos, "left")
        with self.hooks(fwd_hooks):
            kv_hooked = any(self._rt.points[n].site in _KV_SITES for n in self._rt.state.fwd)
            c = self.hf_model.config
            # Every decoding knob is set explicitly, so the model's own generation_config
            # (repetition penalties, sampling defaults...) cannot change what greedy means.
            gen = GenerationConfig(
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                num_beams=1,
                temperature=temperature if do_sample else None,
                top_k=(top_k or 0) if do_sample else None,
                top_p=(top_p or 1.0) if do_sample else None,
                repetition_penalty=1.0,
                no_repeat_ngram_size=0,
                min_length=0,
                eos_token_id=c.eos_token_id if stop_at_eos else [],
                pad_token_id=pad_id_of(self.tokenizer) if self.tokenizer is not None else c.pad_token_id,
                bos_token_id=c.bos_token_id,
                use_cache=(not kv_hooked) if use_cache is None else use_cache,
            )
            with (
                torch.random.fork_rng(devices=[] if self.device.type == "cpu" else [self.device]),
                torch.no_grad(),
            ):
                if seed is not None:
                    torch.manual_seed(seed)
                out = self.hf_model.generate(
                    input_ids=batch.tokens, attention_mask=batch.attention_mask, generation_config=gen
                )
        if isinstance(inputs, str):
            return self.tokenizer.decode(out[0], skip_special_tokens=True)
        if isinstance(inputs, Sequence) and inputs and isinstance(inputs[0], str):
            return self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return out
