"""How hook points are realised on an unmodified Hugging Face model.

Nothing is installed while no hook is active: a plain call runs HF's own forward. While a
hook context or a cached run is active (ref-counted, undone in ``finally``):

1. **Block sites.** Each decoder layer's ``forward`` is replaced, on the instance, by
   :func:`_block_forward`. It calls the layer's own HF submodules in HF's order (so logits
   are bit-identical) and fires ``resid_pre``, ``ln1``, ``attn_out``, ``resid_mid``,
   ``mlp_in``, ``ln2``, ``mlp_out`` and ``resid_post``. Writing ``resid_mid`` therefore
   changes both the MLP input and the residual, as the name promises.
2. **Attention internals.** The config's attention implementation is switched to
   ``"mechscope:<original>"``, registered with ``transformers.AttentionInterface``. Every
   supported family calls that interface with q, k, v after QK-norm and rotary. The
   function fires ``q``/``k``/``v``, runs the original kernel (SDPA, eager, flash...) and
   fires ``z``. Only for layers whose scores or pattern a run asks for does it compute
   attention explicitly (scores → mask → softmax → pattern @ v) so those can be read and
   written; every other layer and every other run keeps the fast kernel.
3. **Module sites** (embed, position embed, MLP projections, per-head result, final norm)
   use PyTorch forward hooks on the relevant submodules.

Index conventions: HF attention tensors are ``[batch, head, pos, d_head]``; hooks see
``[batch, pos, head, d_head]`` views (TransformerLens's layout).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..errors import HookError, HookShapeError, MechscopeError
from .adapters import Adapter, get_path
from .names import BLOCK_SITES, GLOBAL_POST_SITES, GLOBAL_PRE_SITES, SITES, parse
from .split import SplitAttention, select_split, split_attention

HookFn = Callable[[Tensor, "HookPoint"], Tensor | None]


@dataclass(frozen=True)
class HookPoint:
    """What a hook function receives besides the tensor: where it is."""

    name: str
    """Full hook name, e.g. ``blocks.3.attn.hook_z``."""
    layer: int | None
    """Block index, or None for global sites (embed, ln_final)."""
    site: str = ""
    """The name without its block prefix, e.g. ``attn.hook_z``."""


def read_only(fn: HookFn) -> HookFn:
    """Mark a hook function as one that never edits its tensor (so no defensive copy is made)."""
    fn.mechscope_read_only = True  # type: ignore[attr-defined]
    return fn


@dataclass
class RunState:
    """The hooks in force for one instrumented call (or one hook context)."""

    fwd: dict[str, list[HookFn]] = field(default_factory=dict)
    """Forward hook functions per hook name, called in order."""
    bwd: dict[str, list[HookFn]] = field(default_factory=dict)
    """Backward hook functions per hook name (they receive the gradient)."""
    stop_at_layer: int | None = None
    """Stop when block ``stop_at_layer`` is reached (after its resid_pre fires); n_layers: before the unembedding."""
    pattern_layers: frozenset[int] = frozenset()
    """Layers whose attention scores/pattern are requested (explicit attention there)."""
    result_layers: frozenset[int] = frozenset()
    """Layers whose per-head result is requested."""
    need_grad: bool = False
    """Make activations require grad even if the parameters are frozen (backward hooks, ``grad=True``)."""
    capture: list[tuple[tuple[Any, ...], dict[str, Any]]] | None = None
    """When set, each block records its call arguments here and passes its input through unchanged."""
    trim_final_block: bool = False
    """The caller needs only the last position out of the final block: after attention, it
    computes the rest of that block for the last position only (later sites there see one position)."""
    split_attn: dict[int, SplitAttention] = field(default_factory=dict)
    """Layers whose heads read separate inputs (see :class:`SplitAttention`)."""


class StopForward(Exception):
    """Raised inside the model to end a forward pass early (see ``stop_at_layer``)."""


def _site_attr(suffix: str) -> str:
    """``attn.hook_q`` -> ``q``; ``hook_resid_pre`` -> ``resid_pre``; ``ln1.hook_normalized`` -> ``ln1``."""
    if suffix.endswith("hook_normalized"):
        return suffix.split(".")[0]
    return suffix.rsplit("hook_", 1)[1].replace("attn_scores", "scores")


class BlockNames:
    """The full hook names of one block, as attributes (``names.resid_pre`` ...)."""

    resid_pre: str
    attn_in: str
    ln1: str
    q: str
    k: str
    v: str
    scores: str
    pattern: str
    z: str
    result: str
    attn_out: str
    resid_mid: str
    mlp_in: str
    ln2: str
    pre: str
    pre_linear: str
    post: str
    mlp_out: str
    resid_post: str

    def __init__(self, layer: int) -> None:
        for site in BLOCK_SITES:
            setattr(self, _site_attr(site.suffix), f"blocks.{layer}.{site.suffix}")


def fire(rt: Runtime, name: str, x: Tensor) -> Tensor:
    """Run the forward hooks registered at ``name`` on ``x``; attach its backward hooks."""
    st = rt.state
    fns = st.fwd.get(name)
    if fns:
        point = rt.points[name]
        for fn in fns:
            out = fn(x, point)
            if out is not None:
                x = _checked(name, x, out)
    bfns = st.bwd.get(name)
    if bfns and x.requires_grad:
        # A fresh autograd node per site: sites that share a tensor (resid_post L and
        # resid_pre L+1, hook_embed and resid_pre 0) then see their own gradient, in
        # backward order, instead of sharing one tensor's hook list.
        x = x.view_as(x)
        x.register_hook(partial(_run_bwd, bfns, rt.points[name]))
    return x


def _checked(name: str, x: Tensor, out: Any) -> Tensor:
    if not isinstance(out, Tensor):
        raise HookError(
            f"hook {name!r} returned {type(out).__name__}; return a tensor, or None after editing in place"
        )
    if out.shape != x.shape:
        raise HookShapeError(name, x.shape, out.shape)
    if out.dtype != x.dtype or out.device != x.device:
        raise HookError(
            f"hook {name!r} returned a tensor of dtype {out.dtype} on {out.device}; the activation is "
            f"{x.dtype} on {x.device}"
        )
    return out


def _run_bwd(fns: list[HookFn], point: HookPoint, grad: Tensor) -> Tensor:
    for fn in fns:
        out = fn(grad, point)
        if out is not None:
            grad = _checked(point.name, grad, out)
    return grad


def _fire_copy(rt: Runtime, name: str, x: Tensor) -> Tensor:
    """Fire a branch-input site whose tensor aliases the residual: hooks that may edit get a copy."""
    fns = rt.state.fwd.get(name)
    if fns and not all(getattr(fn, "mechscope_read_only", False) for fn in fns):
        x = x.clone()
    return fire(rt, name, x)


def _fire_heads(rt: Runtime, name: str, x: Tensor) -> Tensor:
    """Fire on an HF ``[batch, head, pos, d]`` tensor through a ``[batch, pos, head, d]`` view."""
    if name not in rt.state.fwd and name not in rt.state.bwd:
        return x
    return fire(rt, name, x.transpose(1, 2)).transpose(1, 2)


@dataclass
class _Parts:
    """One block's HF submodules, resolved once."""

    ln1: nn.Module
    attn: nn.Module
    ln2: nn.Module
    mlp: nn.Module
    post_attn_norm: nn.Module | None
    post_mlp_norm: nn.Module | None
    attn_dropout: nn.Module | None
    mlp_dropout: nn.Module | None
    parallel: bool


# ---------------------------------------------------------------- block forward


def _block_forward(rt: Runtime, layer: int, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """A decoder layer's forward with every residual-stream site exposed (HF's op order)."""
    n, p = rt.names[layer], rt.parts[layer]
    if rt.state.capture is not None:  # record what HF passes to this block (masks, rotary...), skip the work
        rt.state.capture.append((args, kwargs))
        return hidden_states
    resid_pre = fire(rt, n.resid_pre, hidden_states)
    if rt.state.stop_at_layer == layer:
        raise StopForward
    attn_kwargs = rt.attn_kwargs(args, kwargs)
    attn_in = _fire_copy(rt, n.attn_in, resid_pre)
    split = rt.state.split_attn.get(layer)
    if split is not None:
        return finish_block(rt, layer, resid_pre, split_attention(rt, layer, split, attn_in, attn_kwargs))
    x = fire(rt, n.ln1, p.ln1(attn_in))
    return finish_block(rt, layer, resid_pre, p.attn(x, **attn_kwargs)[0])


def finish_block(rt: Runtime, layer: int, resid_pre: Tensor, a: Tensor, *, normed: bool = False) -> Tensor:
    """The rest of a block once attention has run: ``a`` is the attention module's output
    (``normed=True``: already through the post-attention dropout and norm, i.e. ``attn_out``).

    Fires ``attn_out`` and every later site of the block; returns ``resid_post``.
    """
    n, p = rt.names[layer], rt.parts[layer]
    if not normed:
        if p.attn_dropout is not None:
            a = p.attn_dropout(a)
        if p.post_attn_norm is not None:
            a = p.post_attn_norm(a)
    attn_out = fire(rt, n.attn_out, a)
    if rt.state.trim_final_block and layer == len(rt.layers) - 1:
        resid_pre, attn_out = resid_pre[:, -1:], attn_out[:, -1:]
    if p.parallel:
        mlp_out = _mlp_branch(rt, n, p, _fire_copy(rt, n.mlp_in, resid_pre))
        resid_post = mlp_out + attn_out + resid_pre  # GPT-NeoX's order of additions
    else:
        resid_mid = fire(rt, n.resid_mid, resid_pre + attn_out)
        mlp_out = _mlp_branch(rt, n, p, _fire_copy(rt, n.mlp_in, resid_mid))
        resid_post = resid_mid + mlp_out
    return fire(rt, n.resid_post, resid_post)


def _mlp_branch(rt: Runtime, n: BlockNames, p: _Parts, mlp_in: Tensor) -> Tensor:
    m = p.mlp(fire(rt, n.ln2, p.ln2(mlp_in)))
    if p.mlp_dropout is not None:
        m = p.mlp_dropout(m)
    if p.post_mlp_norm is not None:
        m = p.post_mlp_norm(m)
    return fire(rt, n.mlp_out, m)


# ---------------------------------------------------------------- attention

_SITES: dict[int, tuple[Runtime, int, Callable[..., Any]]] = {}
_REGISTERED: set[str] = set()


def _dispatch_attention(
    module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Any, **kwargs
):
    """The function registered as ``mechscope:<impl>``: hooks around the original kernel."""
    rt, layer, inner = _SITES[id(module)]
    n = rt.names[layer]
    split = rt.split_now is not None and rt.split_now[0] == layer
    if split:
        query, key, value, attention_mask, kwargs = select_split(
            rt, query, key, value, attention_mask, kwargs
        )
    query = _fire_heads(rt, n.q, query)
    key = _fire_heads(rt, n.k, key)
    value = _fire_heads(rt, n.v, value)
    if layer in rt.state.pattern_layers:
        out, weights = _explicit_attention(rt, n, module, query, key, value, attention_mask, **kwargs)
    else:
        out, weights = inner(module, query, key, value, attention_mask, **kwargs)
    out = fire(rt, n.z, out)
    if split:  # the module applies its output projection to every copy: give it zeros but copy 0
        r = rt.split_now[3]  # type: ignore[index]
        full = out.new_zeros(out.shape[0], r, *out.shape[1:])
        full[:, 0] = out
        out = full.flatten(0, 1)
    return out, weights


def _explicit_attention(
    rt: Runtime,
    n: BlockNames,
    module: nn.Module,
    query: Tensor,  # [batch, head, q_pos, d_head]
    key: Tensor,  # [batch, kv_head, k_pos, d_head]
    value: Tensor,  # [batch, kv_head, k_pos, d_head]
    attention_mask: Any,
    scaling: float | None = None,
    softcap: float | None = None,
    dropout: float = 0.0,
    **_: Any,
) -> tuple[Tensor, Tensor]:
    """Attention computed step by step so that scores and pattern are hook points."""
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
    if scaling is None:
        scaling = getattr(module, "scaling", query.shape[-1] ** -0.5)
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling  # [batch, head, q_pos, k_pos]
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    allowed = _allowed(attention_mask, query.shape[2], key.shape[2], query.device)
    scores = scores.masked_fill(~allowed, float("-inf"))
    scores = fire(rt, n.scores, scores)
    low = query.dtype in (torch.float16, torch.bfloat16)  # upcast half precision, as HF's kernels do
    pattern = torch.softmax(scores, dim=-1, dtype=torch.float32 if low else query.dtype)
    pattern = torch.where(allowed.any(-1, keepdim=True), pattern, 0.0).to(query.dtype)  # empty rows -> 0
    pattern = fire(rt, n.pattern, pattern)
    if dropout and module.training:
        pattern = nn.functional.dropout(pattern, p=dropout)
    out = torch.matmul(pattern, value).transpose(1, 2).contiguous()  # [batch, q_pos, head, d_head]
    return out, pattern


def _allowed(mask: Any, q_len: int, k_len: int, device: torch.device) -> Tensor:
    """Boolean ``[batch|1, head|1, q_pos, k_pos]``: which keys each query may attend to."""
    causal = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=k_len - q_len)
    if mask is None:  # HF skipped the mask: plain causal (bottom-right aligned)
        return causal[None, None]
    if not isinstance(mask, Tensor):
        raise MechscopeError(f"attention patterns are not supported with a {type(mask).__name__} mask")
    if mask.dim() == 2:  # flash-attention style [batch, k_pos] padding mask
        return causal[None, None] & mask[:, None, None, -k_len:].bool()
    if mask.dtype == torch.bool:
        return mask[..., -k_len:]
    return mask[..., -k_len:] > torch.finfo(mask.dtype).min / 2  # additive float mask: 0 or min


def _forget_site(key: int) -> None:
    _SITES.pop(key, None)


def _register(orig: str) -> str:
    name = f"mechscope:{orig}"
    if name not in _REGISTERED:
        AttentionInterface.register(name, _dispatch_attention)
        if orig in ALL_MASK_ATTENTION_FUNCTIONS:
            AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[orig])
        _REGISTERED.add(name)
    return name


def _inner_kernel(module: nn.Module, orig: str) -> Callable[..., Any]:
    """The attention function HF would have called for ``module``."""
    if orig == "eager" or orig is None:
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[orig]


# ---------------------------------------------------------------- runtime


class Runtime:
    """Per-model instrumentation state; see the module docstring."""

    def __init__(self, hf_model: Any, adapter: Adapter, n_heads: int, d_head: int) -> None:
        self.hf_model = hf_model
        self.adapter = adapter
        self.n_heads, self.d_head = n_heads, d_head
        self.layers: list[nn.Module] = list(get_path(hf_model, adapter.layers))
        if any(hasattr(layer, "_hf_hook") for layer in self.layers):
            # accelerate's dispatch hooks move tensors between devices inside each layer's
            # forward, which the block forward below replaces: refuse rather than run wrong.
            raise MechscopeError(
                "this model was dispatched across devices by accelerate (device_map with several "
                "devices or offloading), which mechscope does not support yet; load it on one device"
            )
        self.names = [BlockNames(i) for i in range(len(self.layers))]
        self.parts = [self._resolve(layer) for layer in self.layers]
        self.hook_names = self._hook_names()
        self.points = {name: HookPoint(name, *parse(name)) for name in self.hook_names}
        self.default_names = [n for n in self.hook_names if not SITES[self.points[n].site].on_demand]
        """Every hook point that is not computed on demand (what ``names=None`` records)."""
        self.state = RunState()
        self.batch_size = 1  # set by the embedding hook; read by the position-embedding hook
        self.split_now: tuple[int, SplitAttention, int, int] | None = None
        """(layer, split, batch, copies) while a split layer's attention module runs."""
        self._depth = 0
        self._undo: list[Callable[[], None]] = []
        params = list(inspect.signature(type(self.layers[0]).forward).parameters)
        self._arg_names = params[2:]  # after self, hidden_states

    def _hook_names(self) -> list[str]:
        """Every hook point of this model, in forward order."""
        a = self.adapter
        skip = set()
        if not a.pos_embed:
            skip.add("hook_pos_embed")
        if self.parts and self.parts[0].parallel:
            skip.add("hook_resid_mid")
        if not a.mlp_up:
            skip.add("mlp.hook_pre_linear")
        names = [s.suffix for s in GLOBAL_PRE_SITES if s.suffix not in skip]
        for i in range(len(self.layers)):
            names += [f"blocks.{i}.{s.suffix}" for s in BLOCK_SITES if s.suffix not in skip]
        names += [s.suffix for s in GLOBAL_POST_SITES]
        return names

    def _resolve(self, layer: nn.Module) -> _Parts:
        a = self.adapter
        opt = lambda path: get_path(layer, path) if path else None  # noqa: E731
        return _Parts(
            ln1=get_path(layer, a.ln1),
            attn=get_path(layer, a.attn),
            ln2=get_path(layer, a.ln2),
            mlp=get_path(layer, a.mlp),
            post_attn_norm=opt(a.post_attn_norm),
            post_mlp_norm=opt(a.post_mlp_norm),
            attn_dropout=opt(a.attn_dropout),
            mlp_dropout=opt(a.mlp_dropout),
            parallel=a.parallel(self.hf_model.config),
        )

    def attn_kwargs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The decoder layer's arguments (positional ones named) as attention keyword arguments."""
        kw = dict(zip(self._arg_names, args))
        kw.update(kwargs)
        for name in self.adapter.drop_layer_args:
            if kw.pop(name, None) is not None:
                raise MechscopeError(
                    f"{self.adapter.family} blocks called with {name}; cross-attention is unsupported"
                )
        return kw

    @contextmanager
    def active(self, state: RunState) -> Iterator[None]:
        """Make ``state`` the hooks in force; instrument the model while any state is active."""
        prev = self.state
        self.state = state
        if self._depth == 0:
            self._install()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._uninstall()
            self.state = prev

    # -- install / uninstall

    def _install(self) -> None:
        try:
            self._install_blocks()
            self._install_attention()
            self._install_module_hooks()
        except BaseException:
            self._uninstall()
            raise

    def _uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _install_blocks(self) -> None:
        for i, layer in enumerate(self.layers):
            previous = layer.__dict__.get("forward")
            layer.forward = partial(_block_forward, self, i)
            self._undo.append(partial(_restore_forward, layer, previous))

    def _install_attention(self) -> None:
        configs: dict[int, Any] = {}
        for i, p in enumerate(self.parts):
            cfg = getattr(p.attn, "config", self.hf_model.config)
            configs[id(cfg)] = cfg
            _SITES[id(p.attn)] = (self, i, _inner_kernel(p.attn, cfg._attn_implementation))
            self._undo.append(partial(_forget_site, id(p.attn)))
        configs[id(self.hf_model.config)] = self.hf_model.config
        for cfg in configs.values():
            orig = cfg._attn_implementation_internal
            cfg._attn_implementation_internal = _register(orig or "eager")
            self._undo.append(partial(setattr, cfg, "_attn_implementation_internal", orig))

    def _install_module_hooks(self) -> None:
        a, m = self.adapter, self.hf_model
        handles = [get_path(m, a.embed).register_forward_hook(partial(_embed_hook, self))]
        if a.pos_embed:
            handles.append(get_path(m, a.pos_embed).register_forward_hook(partial(_pos_embed_hook, self)))
        final = get_path(m, a.final_norm)
        handles.append(final.register_forward_hook(partial(_final_norm_hook, self)))
        for i, p in enumerate(self.parts):
            n = self.names[i]
            handles.append(get_path(p.mlp, a.mlp_in).register_forward_hook(partial(_out_hook, self, n.pre)))
            if a.mlp_up:
                handles.append(
                    get_path(p.mlp, a.mlp_up).register_forward_hook(partial(_out_hook, self, n.pre_linear))
                )
            down = get_path(p.mlp, a.mlp_down)
            handles.append(down.register_forward_pre_hook(partial(_in_hook, self, n.post)))
            o_proj = get_path(p.attn, a.o_proj)
            handles.append(o_proj.register_forward_hook(partial(_result_hook, self, i)))
        self._undo.extend(h.remove for h in handles)

    # -- weights

    def w_o(self, layer: int) -> Tensor:
        """The output projection split per head: ``[head, d_head, d_model]``."""
        o_proj = get_path(self.parts[layer].attn, self.adapter.o_proj)
        w = o_proj.weight if self.adapter.conv1d_weights else o_proj.weight.T
        return w.reshape(self.n_heads, self.d_head, -1)


def _restore_forward(layer: nn.Module, previous: Any) -> None:
    if previous is None:
        layer.__dict__.pop("forward", None)
    else:
        layer.forward = previous


def _out_hook(rt: Runtime, name: str, module: nn.Module, args: Any, output: Tensor) -> Tensor:
    return fire(rt, name, output)


def _final_norm_hook(rt: Runtime, module: nn.Module, args: Any, output: Tensor) -> Tensor:
    output = fire(rt, "ln_final.hook_normalized", output)
    if rt.state.stop_at_layer == len(rt.layers):  # everything asked for is computed: skip the unembedding
        raise StopForward
    return output


def _embed_hook(rt: Runtime, module: nn.Module, args: Any, output: Tensor) -> Tensor:
    rt.batch_size = output.shape[0]
    if rt.state.need_grad and torch.is_grad_enabled() and not output.requires_grad:
        output = output.detach().requires_grad_(True)  # gradients w.r.t. activations, frozen weights
    return fire(rt, "hook_embed", output)


def _pos_embed_hook(rt: Runtime, module: nn.Module, args: Any, output: Tensor) -> Tensor:
    """Position embeddings come out ``[1 pos d_model]``; hooks see them per batch row."""
    name = "hook_pos_embed"
    if output.shape[0] != rt.batch_size and (name in rt.state.fwd or name in rt.state.bwd):
        output = output.expand(rt.batch_size, *output.shape[1:]).clone()
    return fire(rt, name, output)


def _in_hook(rt: Runtime, name: str, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (fire(rt, name, args[0]), *args[1:])


def _result_hook(
    rt: Runtime, layer: int, module: nn.Module, args: tuple[Any, ...], output: Tensor
) -> Tensor | None:
    """Split the output projection per head when ``hook_result`` is requested at ``layer``."""
    if layer not in rt.state.result_layers:
        return None
    z = args[0]  # [batch, pos, head * d_head]
    split = rt.split_now is not None and rt.split_now[0] == layer
    if split:  # only copy 0 carries the attention output
        z = z.view(-1, rt.split_now[3], *z.shape[1:])[:, 0]  # type: ignore[index]
    z = z.reshape(*z.shape[:-1], rt.n_heads, rt.d_head)
    result = torch.einsum("bphd,hdm->bphm", z, rt.w_o(layer))  # [batch, pos, head, d_model]
    result = fire(rt, rt.names[layer].result, result)
    out = result.sum(dim=2)
    bias = getattr(module, "bias", None)
    out = out + bias if bias is not None else out
    if split:
        full = out.new_zeros(out.shape[0], rt.split_now[3], *out.shape[1:])  # type: ignore[index]
        full[:, 0] = out
        out = full.flatten(0, 1)
    return out
