"""Path patching: the effect of sender heads on chosen receivers only (Wang et al. 2022;
Goldowsky-Dill et al. 2023).

For every sender head ``(L, h)``, noising by default (the run explained is the clean one):

1. Run the target prompts with the sender's output ``hook_z[:, :, h]`` replaced by its
   value on the source prompts, and every other head's output held at its value on the
   target prompts, so the change reaches later layers only through the residual stream
   (and, unless ``freeze_mlps``, through MLPs, as in Wang et al.). Record the receivers'
   inputs.
2. Run the target prompts with only the receivers' inputs replaced by those recorded
   values, and evaluate the metric.

Receivers are ``"logits"`` (the final residual stream: the sender's direct path to the
output, plus paths through MLPs unless frozen) or a list of :class:`Receiver` (a head's
query, key or value input). Senders are stacked along the batch, so each step is one
batched pass per chunk.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import MechscopeError
from ..models import HookedModel, TokenBatch
from ..tasks import Metric, PreparedTask, Task, make_metric, prepare
from .results import Axis, PatchResult
from .sweeps import SweepConfig, run_info


@dataclass(frozen=True)
class Receiver:
    """An input of one attention head: its query, key or value."""

    layer: int
    """Block of the receiving head."""
    head: int
    """Query head (for ``q``) or key/value head (for ``k``/``v``)."""
    input: str = "q"
    """``q``, ``k`` or ``v``."""

    @property
    def name(self) -> str:
        """The hook carrying this input."""
        return f"blocks.{self.layer}.attn.hook_{self.input}"


def path_patch(
    model: HookedModel,
    task: Task | PreparedTask,
    receivers: str | Sequence[Receiver] = "logits",
    *,
    senders: Sequence[tuple[int, int]] | None = None,
    metric: str | Metric | None = None,
    direction: str = "noise",
    freeze_mlps: bool = False,
    chunk: int = 64,
) -> PatchResult:
    """Path-patch every sender head into ``receivers``; see the module docstring."""
    data = task if isinstance(task, PreparedTask) else prepare(model, task)
    m = make_metric(metric or data.task.metric, model, data)
    c = model.cfg
    senders = (
        [(layer, h) for layer in range(c.n_layers) for h in range(c.n_heads)]
        if senders is None
        else list(senders)
    )
    recv = _receivers(model, receivers)
    if direction not in ("noise", "denoise"):
        raise MechscopeError(f"direction must be 'noise' or 'denoise', not {direction!r}")
    target, source = (data.clean, data.corrupted) if direction == "noise" else (data.corrupted, data.clean)
    z_names = [f"blocks.{i}.attn.hook_z" for i in range(c.n_layers)]
    mlp_names = [f"blocks.{i}.hook_mlp_out" for i in range(c.n_layers)] if freeze_mlps else []
    start = time.perf_counter()
    with torch.no_grad():
        _, tgt = model.run_with_cache(target, names=z_names + mlp_names, return_logits=False)
        _, src = model.run_with_cache(source, names=z_names, return_logits=False)
        values = torch.cat(
            [_step(model, data, target, dict(tgt), dict(src), senders[i : i + chunk], recv, mlp_names, m)
             for i in range(0, len(senders), chunk)]
        )  # fmt: skip
        clean = m(model(data.clean, logits_to_keep=1)[:, -1], data)
        corrupted = m(model(data.corrupted, logits_to_keep=1)[:, -1], data)
    layers = sorted({layer for layer, _ in senders})
    full = len(senders) == len(layers) * c.n_heads
    if full:
        shape: tuple[int, ...] = (len(layers), c.n_heads)
        axes: tuple[Axis, ...] = (
            Axis("layer", tuple(map(str, layers))),
            Axis("head", tuple(map(str, range(c.n_heads)))),
        )
    else:
        shape = (len(senders),)
        axes = (Axis("sender", tuple(f"L{layer}H{h}" for layer, h in senders)),)
    recv_label = (
        receivers if isinstance(receivers, str) else [f"L{r.layer}H{r.head}.{r.input}" for r in receivers]
    )
    info = run_info(model, data, SweepConfig(direction=direction), time.perf_counter() - start)
    return PatchResult(
        values=values.mean(1).reshape(shape).cpu(),
        axes=axes,
        method="path_patching",
        sweep="heads",
        metric=m.name,
        clean=float(clean.mean()),
        corrupted=float(corrupted.mean()),
        direction=direction,
        per_example=values.reshape(*shape, data.n).cpu(),
        info=info | {"receivers": recv_label, "freeze_mlps": freeze_mlps},
    )


def _receivers(model: HookedModel, receivers: str | Sequence[Receiver]) -> list[tuple[str, tuple[Any, ...]]]:
    """``(hook name, index)`` for each receiver input."""
    last = model.cfg.n_layers - 1
    if isinstance(receivers, str):
        if receivers != "logits":
            raise MechscopeError(f"receivers must be 'logits' or a list of Receiver, not {receivers!r}")
        return [(f"blocks.{last}.hook_resid_post", ())]
    out = []
    for r in receivers:
        if r.input not in ("q", "k", "v"):
            raise MechscopeError(f"receiver input must be 'q', 'k' or 'v', not {r.input!r}")
        heads = model.cfg.n_heads if r.input == "q" else model.cfg.n_kv_heads
        if not (0 <= r.layer <= last and 0 <= r.head < heads):
            raise MechscopeError(f"receiver {r} does not exist in this model")
        model._check_name(r.name)
        out.append((r.name, (slice(None), r.head)))
    if not out:
        raise MechscopeError("no receivers given")
    return out


def _step(
    model: HookedModel,
    data: PreparedTask,
    target: TokenBatch,
    tgt: dict[str, Tensor],
    src: dict[str, Tensor],
    senders: Sequence[tuple[int, int]],
    receivers: list[tuple[str, tuple[Any, ...]]],
    mlp_names: list[str],
    metric: Metric,
) -> Tensor:
    """Both steps for a chunk of senders stacked variant-major; metric ``[len(senders), n]``."""
    n, k = data.n, len(senders)
    batch = TokenBatch(target.tokens.repeat(k, 1), target.attention_mask.repeat(k, 1), "left")

    def freeze_heads(t: Tensor, hook: Any) -> Tensor:
        t = tgt[hook.name].repeat(k, *([1] * (t.dim() - 1))).to(t.dtype)
        for i, (layer, head) in enumerate(senders):
            if layer == hook.layer:
                t[i * n : (i + 1) * n, :, head] = src[hook.name][:, :, head]
        return t

    def freeze(t: Tensor, hook: Any) -> Tensor:
        return tgt[hook.name].repeat(k, *([1] * (t.dim() - 1))).to(t.dtype)

    recorded: dict[str, Tensor] = {}

    def record(t: Tensor, hook: Any) -> None:
        recorded[hook.name] = t.clone()

    hooks: list[tuple[str, Any]] = [
        (f"blocks.{i}.attn.hook_z", freeze_heads) for i in range(model.cfg.n_layers)
    ]
    hooks += [(name, freeze) for name in mlp_names]
    hooks += [(name, record) for name in {name for name, _ in receivers}]
    model.run_with_hooks(batch, hooks, logits_to_keep=1)

    def write(t: Tensor, hook: Any) -> Tensor:
        t = t.clone()
        for name, index in receivers:
            if name == hook.name:
                t[(slice(None), *index)] = recorded[name][(slice(None), *index)]
        return t

    logits = model.run_with_hooks(
        batch, [(name, write) for name in {name for name, _ in receivers}], logits_to_keep=1
    )
    return metric(logits[:, -1], data).view(k, n)
