"""The hook-name grammar: every hook point a model has, its shape and its meaning.

mechscope uses TransformerLens's names, so that a pretrained SAE whose config says
``hook_name: blocks.8.hook_resid_pre`` just works. A name is either global
(``hook_embed``) or per block (``blocks.{L}.<site>``).

Shapes use ``batch pos d_model`` etc.; ``head`` is the number of query heads, ``kv_head``
the number of key/value heads (fewer under GQA/MQA). Sites marked *on demand* are computed
only in a run that asks for them, so that asking for attention patterns in one run never
slows down any other run.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from ..errors import UnknownHookError


@dataclass(frozen=True)
class SiteInfo:
    """One kind of hook point (the part of the name after ``blocks.{L}.``)."""

    suffix: str
    """Name relative to its block, e.g. ``attn.hook_q``; the whole name for global sites."""
    shape: str
    """Shape of the tensor a hook receives, as space-separated dimension names."""
    meaning: str
    """What the tensor is, in one sentence."""
    on_demand: bool = False
    """True when the activation is computed only in runs that ask for it."""


@dataclass(frozen=True)
class HookInfo:
    """One hook point of one model: its full name, concrete shape and meaning."""

    name: str
    """Full hook name, e.g. ``blocks.3.attn.hook_q``."""
    shape: str
    """Dimensions with this model's sizes, e.g. ``batch pos head=9 d_head=64``."""
    meaning: str
    """What the tensor is."""
    on_demand: bool
    """True when computed only in runs that ask for it."""


GLOBAL_PRE_SITES: tuple[SiteInfo, ...] = (
    SiteInfo("hook_embed", "batch pos d_model", "output of the token-embedding module"),
    SiteInfo(
        "hook_pos_embed",
        "batch pos d_model",
        "learned absolute position embedding (GPT-2 only; added to hook_embed to form resid_pre 0)",
    ),
)

BLOCK_SITES: tuple[SiteInfo, ...] = (
    SiteInfo("hook_resid_pre", "batch pos d_model", "residual stream entering the block"),
    SiteInfo(
        "hook_attn_in",
        "batch pos d_model",
        "the attention branch's copy of the residual (writing it changes only what attention reads)",
    ),
    SiteInfo("ln1.hook_normalized", "batch pos d_model", "output of the pre-attention norm"),
    SiteInfo(
        "attn.hook_q", "batch pos head d_head", "queries as attention uses them (after QK-norm and rotary)"
    ),
    SiteInfo(
        "attn.hook_k", "batch pos kv_head d_head", "keys as attention uses them (after QK-norm and rotary)"
    ),
    SiteInfo("attn.hook_v", "batch pos kv_head d_head", "values"),
    SiteInfo(
        "attn.hook_attn_scores",
        "batch head q_pos k_pos",
        "scaled (and soft-capped) attention logits, -inf where masked",
        on_demand=True,
    ),
    SiteInfo("attn.hook_pattern", "batch head q_pos k_pos", "attention probabilities", on_demand=True),
    SiteInfo(
        "attn.hook_z",
        "batch pos head d_head",
        "per-head attention output, the input of the output projection",
    ),
    SiteInfo(
        "attn.hook_result",
        "batch pos head d_model",
        "per-head contribution through the output projection (bias excluded)",
        on_demand=True,
    ),
    SiteInfo(
        "hook_attn_out",
        "batch pos d_model",
        "what attention adds to the residual stream (post-attention norm included, e.g. Gemma)",
    ),
    SiteInfo("hook_resid_mid", "batch pos d_model", "resid_pre + attn_out (absent in parallel blocks)"),
    SiteInfo(
        "hook_mlp_in",
        "batch pos d_model",
        "the MLP branch's copy of the residual (writing it changes only what the MLP reads)",
    ),
    SiteInfo("ln2.hook_normalized", "batch pos d_model", "output of the pre-MLP norm"),
    SiteInfo("mlp.hook_pre", "batch pos d_mlp", "MLP pre-activation (the gate projection in gated MLPs)"),
    SiteInfo("mlp.hook_pre_linear", "batch pos d_mlp", "the linear (up) projection of a gated MLP"),
    SiteInfo("mlp.hook_post", "batch pos d_mlp", "MLP hidden activation, the input of the down projection"),
    SiteInfo(
        "hook_mlp_out", "batch pos d_model", "what the MLP adds to the residual (post-MLP norm included)"
    ),
    SiteInfo("hook_resid_post", "batch pos d_model", "residual stream leaving the block"),
)

GLOBAL_POST_SITES: tuple[SiteInfo, ...] = (
    SiteInfo(
        "ln_final.hook_normalized",
        "batch pos d_model",
        "output of the final norm, the input of the unembedding",
    ),
)

SITES: dict[str, SiteInfo] = {s.suffix: s for s in GLOBAL_PRE_SITES + BLOCK_SITES + GLOBAL_POST_SITES}

# Short keys accepted by :func:`hook_name` and by ``cache[key, layer]``.
_SHORT: dict[str, str] = {
    "embed": "hook_embed",
    "pos_embed": "hook_pos_embed",
    "resid_pre": "hook_resid_pre",
    "ln1": "ln1.hook_normalized",
    "q": "attn.hook_q",
    "k": "attn.hook_k",
    "v": "attn.hook_v",
    "attn_scores": "attn.hook_attn_scores",
    "scores": "attn.hook_attn_scores",
    "pattern": "attn.hook_pattern",
    "z": "attn.hook_z",
    "result": "attn.hook_result",
    "attn_out": "hook_attn_out",
    "resid_mid": "hook_resid_mid",
    "mlp_in": "hook_mlp_in",
    "ln2": "ln2.hook_normalized",
    "pre": "mlp.hook_pre",
    "mlp_pre": "mlp.hook_pre",
    "pre_linear": "mlp.hook_pre_linear",
    "post": "mlp.hook_post",
    "mlp_post": "mlp.hook_post",
    "mlp_out": "hook_mlp_out",
    "resid_post": "hook_resid_post",
    "ln_final": "ln_final.hook_normalized",
}

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def hook_name(site: str, layer: int | None = None) -> str:
    """The full hook name for a short site key, e.g. ``hook_name("resid_pre", 3)``.

    Accepts short keys (``"q"``, ``"pattern"``, ``"mlp_out"``...), block-relative suffixes
    (``"attn.hook_q"``) and full names (returned unchanged).
    """
    if _BLOCK_RE.match(site):
        return site
    suffix = _SHORT.get(site, site)
    info = SITES.get(suffix)
    if info is None:
        close = difflib.get_close_matches(site, list(_SHORT) + list(SITES), n=3, cutoff=0.5)
        raise UnknownHookError(site, close, detail="not a known site key")
    if info in GLOBAL_PRE_SITES or info in GLOBAL_POST_SITES:
        return suffix
    if layer is None:
        raise UnknownHookError(site, (), detail=f"{suffix} is per block; pass a layer")
    return f"blocks.{layer}.{suffix}"


def parse(name: str) -> tuple[int | None, str]:
    """Split a full hook name into ``(layer, suffix)``; layer is None for global sites."""
    m = _BLOCK_RE.match(name)
    if m:
        return int(m.group(1)), m.group(2)
    return None, name


def describe(name: str) -> SiteInfo:
    """The :class:`SiteInfo` of a full hook name (shape and meaning)."""
    _, suffix = parse(name)
    return SITES[suffix]


def suggest(name: str, known: list[str], n_layers: int) -> UnknownHookError:
    """An :class:`UnknownHookError` for ``name`` with the closest known names."""
    layer, suffix = parse(name)
    detail = ""
    if layer is not None and layer >= n_layers and suffix in SITES:
        detail = f"layer {layer} is out of range (the model has {n_layers} layers, 0..{n_layers - 1})"
        candidates = [f"blocks.{n_layers - 1}.{suffix}"]
        return UnknownHookError(name, [c for c in candidates if c in known], detail)
    if layer is not None and suffix in SITES:
        detail = f"this model has no {suffix!r} site"
    # Compare on the site part first so that the layer number does not dominate the match.
    if layer is not None:
        suffixes = sorted({parse(k)[1] for k in known if parse(k)[0] is not None})
        close_sfx = difflib.get_close_matches(suffix, suffixes, n=3, cutoff=0.4)
        close = [f"blocks.{min(layer, n_layers - 1)}.{s}" for s in close_sfx]
    else:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
    return UnknownHookError(name, close, detail)
