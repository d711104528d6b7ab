"""Running a dictionary on a model's activations, and splicing it into the forward pass.

Conventions used by :mod:`mechscope.dictionary.evaluate`:

* The **input site** is ``config.hook_name``; the **output site** is ``config.hook_name_out``
  for a transcoder and the input site for an SAE. Activations are ``[batch pos d]``; at a
  ``hook_z`` site (``[batch pos head d_head]``, SAELens's ``reshape_activations="hook_z"``)
  the heads are flattened to ``d = head * d_head`` and unflattened on the way back.
* A dictionary with ``norm_scale = c`` (not folded) sees ``c x`` and its reconstruction is
  divided by ``c_out`` (``norm_scale_out``, default ``c``), so every metric is in raw units.
* A **mask** ``[batch pos]`` (bool) marks the positions that count. Splicing and ablation
  replace the output site only at masked-in positions; the others (BOS, by default) keep
  their clean activation, and are left out of every metric.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..errors import MechscopeError
from .base import Dictionary

HookFn = Callable[[Tensor, Any], Tensor]


def sites(d: Dictionary) -> tuple[str, str]:
    """``(input site, output site)`` hook names of ``d``."""
    cfg = d.config
    if not cfg.hook_name:
        raise MechscopeError(
            "this dictionary has no hook_name: set it (load_dictionary(path, hook_name=...)) before evaluating"
        )
    return cfg.hook_name, cfg.hook_name_out or cfg.hook_name


def flat_site(t: Tensor, width: int, name: str) -> Tensor:
    """``[batch pos d]`` (or ``[batch pos head d_head]`` flattened) with ``d == width``."""
    if t.dim() == 4:
        t = t.flatten(2)
    if t.dim() != 3 or t.shape[-1] != width:
        raise MechscopeError(
            f"the activation at {name} has shape {tuple(t.shape)}, but the dictionary expects width {width}"
        )
    return t


def apply(d: Dictionary, x: Tensor) -> tuple[Tensor, Tensor]:
    """``x`` ``[n, d_in]`` in raw units -> ``(y_hat [n, d_out] raw units, codes [n, d_sae])``."""
    cfg = d.config
    c = float(cfg.norm_scale)
    c_out = c if cfg.norm_scale_out is None else float(cfg.norm_scale_out)
    x_in = x.to(d.W_enc.dtype)
    if c != 1.0:
        x_in = x_in * c
    codes = d.encode(x_in)
    y_hat = d.decode(codes, x_in)
    if c_out != 1.0:
        y_hat = y_hat / c_out
    return y_hat, codes


def replace_at(mask: Tensor, values: Tensor | float) -> HookFn:
    """A hook that writes ``values`` (``[batch pos d]``, ``[d]`` or a scalar) where ``mask`` is set."""

    def hook(t: Tensor, _hook: Any) -> Tensor:
        shape = t.shape
        flat = t.flatten(2) if t.dim() == 4 else t  # [batch pos d]
        v = values if isinstance(values, Tensor) else torch.tensor(values)
        v = v.to(device=flat.device, dtype=flat.dtype)
        out = torch.where(mask.to(flat.device)[..., None], v, flat)
        return out.reshape(shape)

    return hook


def log_probs(logits: Tensor) -> Tensor:
    """``[batch pos vocab]`` log-softmax in float32."""
    return torch.log_softmax(logits.float(), dim=-1)


def ce_kl(logp_clean: Tensor, logp: Tensor, tokens: Tensor, sel: Tensor) -> tuple[float, float, int]:
    """Sums over selected positions of next-token CE and of ``KL(clean || run)``.

    ``logp_clean``, ``logp`` ``[batch pos vocab]`` log-probabilities; ``tokens``
    ``[batch pos]``; ``sel`` ``[batch pos-1]`` bool marks the positions ``t`` whose
    prediction of ``tokens[:, t+1]`` counts. Returns ``(sum CE, sum KL, count)`` with
    ``CE_t = -logp[t, tokens[t+1]]`` and ``KL_t = sum_v p_clean(v) (logp_clean(v) - logp(v))``.
    """
    lp, lc = logp[:, :-1], logp_clean[:, :-1]  # [batch pos-1 vocab]
    target = tokens[:, 1:].to(lp.device)
    ce = -lp.gather(-1, target[..., None]).squeeze(-1)  # [batch pos-1]
    kl = (lc.exp() * (lc - lp)).sum(-1)  # [batch pos-1]
    sel = sel.to(lp.device)
    return float(ce[sel].double().sum()), float(kl[sel].double().sum()), int(sel.sum())
