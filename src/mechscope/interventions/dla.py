"""Direct logit attribution and the logit-difference lens.

Direct logit attribution (Elhage et al. 2021; Wang et al. 2022) splits the final residual
stream at the answer position into what each component wrote,
``resid_post[-1] = embed + Σ_L (attn_out_L + mlp_out_L)``, and reads each part through the
final norm with the norm's scale *frozen* at its value on the whole stream, then through
the logit-difference direction ``mean W_U[answers] − mean W_U[wrong]``:

    DLA(c) = gain ⊙ P(c) / s(resid) · Δw_U,    P = centring for LayerNorm, identity for RMSNorm

(``gain ⊙ P(c)`` is computed by the model's own norm module, so Gemma's ``1 + weight``
gains need no special case.) Adding the norm's bias term, the attributions sum exactly to
the logit difference before any final-logit soft-cap. Per head, attention output splits
further into ``hook_result`` (one term per head) plus the output projection's bias.

The logit-difference lens reads the accumulated residual stream before every block (and
after the last) through the full final norm and unembedding, as the logit lens does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import MechscopeError
from ..models import HookedModel
from ..models.adapters import get_path
from ..tasks import PreparedTask, Task, prepare
from .results import Axis, PatchResult


def logit_diff_direction(model: HookedModel, data: PreparedTask) -> Tensor:
    """Per example ``mean W_U[:, answers] − mean W_U[:, wrong]``, ``[n d_model]``."""
    w_u = model.W_U  # [d_model d_vocab]

    def mean_cols(ids: Tensor, mask: Tensor) -> Tensor:
        cols = w_u.T[ids]  # [n k d_model]
        return (cols * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    return mean_cols(data.answer_ids, data.answer_mask) - mean_cols(data.wrong_ids, data.wrong_mask)


def frozen_norm(model: HookedModel, parts: Tensor, resid: Tensor) -> Tensor:
    """``gain ⊙ P(part) / s(resid)`` for each part ``[..., n, d_model]`` given the stream ``[n, d_model]``."""
    norm = get_path(model.hf_model, model.adapter.final_norm)
    eps = getattr(norm, "eps", None) or getattr(norm, "variance_epsilon", None)
    if eps is None:
        raise MechscopeError(f"cannot read the epsilon of final norm {type(norm).__name__}")
    centred = isinstance(norm, nn.LayerNorm)

    def scale(x: Tensor) -> Tensor:
        if centred:
            return (x.var(-1, unbiased=False, keepdim=True) + eps).sqrt()
        return (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()

    bias = norm.bias if centred and norm.bias is not None else 0.0
    return (norm.forward(parts) - bias) * scale(parts) / scale(resid)


def direct_logit_attribution(
    model: HookedModel, task: Task | PreparedTask, *, by: str = "component"
) -> PatchResult:
    """DLA of the clean prompts' logit difference: per ``component`` (embed, each attention and
    MLP layer, bias) or per ``head`` (layer × head)."""
    if by not in ("component", "head"):
        raise MechscopeError(f"by must be 'component' or 'head', not {by!r}")
    if by == "head" and model.adapter.post_attn_norm:
        raise MechscopeError(
            f"per-head attribution needs attention output linear in the heads; {model.cfg.family}'s "
            "post-attention norm is not (use by='component')"
        )
    data = task if isinstance(task, PreparedTask) else prepare(model, task)
    n_layers = model.cfg.n_layers
    names = ["blocks.0.hook_resid_pre", f"blocks.{n_layers - 1}.hook_resid_post"]
    names += [f"blocks.{i}.{s}" for i in range(n_layers) for s in ("hook_attn_out", "hook_mlp_out")]
    if by == "head":
        names += [f"blocks.{i}.attn.hook_result" for i in range(n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(data.clean, names=names, return_logits=False)
        last = lambda name: cache[name][:, -1]  # noqa: E731 - [n d_model] at the answer position
        resid = last(f"blocks.{n_layers - 1}.hook_resid_post")
        direction = logit_diff_direction(model, data)  # [n d_model]
        if by == "head":
            parts = torch.stack(
                [cache[f"blocks.{i}.attn.hook_result"][:, -1] for i in range(n_layers)]
            )  # [L n h d]
            values = (frozen_norm(model, parts.transpose(1, 2), resid) * direction).sum(-1)  # [L h n]
            axes: tuple[Axis, ...] = (
                Axis("layer", tuple(map(str, range(n_layers)))),
                Axis("head", tuple(map(str, range(model.cfg.n_heads)))),
            )
        else:
            labels = ["embed"] + [f"L{i} {s}" for i in range(n_layers) for s in ("attn", "mlp")]
            stack = [last("blocks.0.hook_resid_pre")]
            stack += [
                last(f"blocks.{i}.{s}") for i in range(n_layers) for s in ("hook_attn_out", "hook_mlp_out")
            ]
            values = (frozen_norm(model, torch.stack(stack), resid) * direction).sum(-1)  # [component n]
            bias = _bias_term(model, resid, direction)
            values = torch.cat([values, bias[None]])
            axes = (Axis("component", (*labels, "bias")),)
    return PatchResult(
        values=values.mean(-1).cpu(),
        axes=axes,
        method="direct_logit_attribution",
        sweep=by,
        metric="logit_diff",
        clean=float(_logit_diff(model, resid, direction).mean()),
        corrupted=float("nan"),
        per_example=values.cpu(),
        info={"model": model.cfg.name, "task": data.task.name, "n": data.n},
    )


def _bias_term(model: HookedModel, resid: Tensor, direction: Tensor) -> Tensor:
    """What the final norm's bias and the unembedding's bias add to the logit difference, ``[n]``."""
    norm = get_path(model.hf_model, model.adapter.final_norm)
    head = get_path(model.hf_model, model.adapter.unembed)
    out = torch.zeros(resid.shape[0], dtype=resid.dtype, device=resid.device)
    if isinstance(norm, nn.LayerNorm) and norm.bias is not None:
        out = out + (norm.bias * direction).sum(-1)
    if getattr(head, "bias", None) is not None:
        raise MechscopeError("direct logit attribution does not support unembedding biases yet")
    return out


def _logit_diff(model: HookedModel, resid: Tensor, direction: Tensor) -> Tensor:
    """The logit difference read from the final stream before any soft-cap, ``[n]``."""
    normed = get_path(model.hf_model, model.adapter.final_norm).forward(resid)
    return (normed * direction).sum(-1)


def logit_diff_lens(model: HookedModel, task: Task | PreparedTask) -> PatchResult:
    """The answer logit difference read from the residual stream before each block and after the last."""
    from .lens import logit_lens

    data = task if isinstance(task, PreparedTask) else prepare(model, task)
    lens = logit_lens(model, data.clean)
    logits = lens.logits  # [point n d_vocab]
    good = logits.gather(-1, data.answer_ids[None].expand(logits.shape[0], -1, -1))
    bad = logits.gather(-1, data.wrong_ids[None].expand(logits.shape[0], -1, -1))
    mean = lambda x, m: (x * m).sum(-1) / m.sum(-1)  # noqa: E731
    values = mean(good, data.answer_mask) - mean(bad, data.wrong_mask)  # [point n]
    return PatchResult(
        values=values.mean(-1).cpu(),
        axes=(Axis("point", tuple(lens.labels)),),
        method="direct_logit_attribution",
        sweep="logit_lens",
        metric="logit_diff",
        clean=float(values[-1].mean()),
        corrupted=float("nan"),
        per_example=values.cpu(),
        info={"model": model.cfg.name, "task": data.task.name, "n": data.n},
    )
