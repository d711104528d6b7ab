"""Named activation-patching sweeps: thin specialisations of one engine.

Each sweep lists variants (one patch per site) and the axes of the result; the engine
(``patching.patch_variants``) runs them batched. Index conventions follow the hook
shapes in ``docs/hooks.md``:

=================  ==============================  =========================================
sweep              site patched                    result axes
=================  ==============================  =========================================
``resid_pre``      ``blocks.L.hook_resid_pre[p]``  layer × pos  (also ``resid_mid``, ``resid_post``)
``attn_out``       ``blocks.L.hook_attn_out[p]``   layer × pos
``mlp_out``        ``blocks.L.hook_mlp_out[p]``    layer × pos
``heads``          ``blocks.L.attn.hook_z[:, h]``  layer × head (every position at once)
``heads_by_pos``   ``blocks.L.attn.hook_z[p, h]``  layer × pos × head
``q`` / ``k`` / ``v``  ``hook_q[:, h]`` ...        layer × head (``k``/``v``: key-value heads)
``pattern``        ``blocks.L.attn.hook_pattern[h]``  layer × head
``neurons``        ``blocks.L.mlp.hook_post[:, i]``   layer × neuron (every position at once)
=================  ==============================  =========================================
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from ..errors import MechscopeError
from ..models import HookedModel
from ..tasks import Metric, PreparedTask, Task, prepare
from .patching import patch_variants
from .results import Axis, PatchResult
from .sites import Patch, Variant


@dataclass(frozen=True)
class SweepConfig:
    """Which sites a sweep covers and how it runs."""

    layers: tuple[int, ...] | None = None
    """Blocks to cover (default: all)."""
    positions: tuple[int, ...] | None = None
    """Positions (padded coordinates) for position-resolved sweeps (default: all)."""
    neurons: tuple[int, ...] | None = None
    """MLP neurons for the ``neurons`` sweep (default: all)."""
    direction: str = "denoise"
    """``denoise`` (clean values into the corrupted run) or ``noise`` (the reverse)."""
    mode: str = "fast"
    """Engine mode: ``fast``, ``batched`` or ``loop`` (see ``patching.py``)."""
    memory_budget_mb: int = 1024
    """Upper bound on the memory one batched chunk may use."""


Builder = Callable[[HookedModel, PreparedTask, SweepConfig], tuple[list[Variant], tuple[Axis, ...]]]


def _layers(model: HookedModel, cfg: SweepConfig) -> list[int]:
    layers = list(range(model.cfg.n_layers)) if cfg.layers is None else list(cfg.layers)
    bad = [layer for layer in layers if not 0 <= layer < model.cfg.n_layers]
    if bad:
        raise MechscopeError(f"layers {bad} are out of range for a {model.cfg.n_layers}-layer model")
    return layers


def position_labels(model: HookedModel, data: PreparedTask) -> list[str]:
    """``"p: 'token'"`` for each padded position of the first clean prompt, with named positions."""
    toks = data.clean.tokens[0].tolist()
    real = data.clean.attention_mask[0].tolist()
    names: dict[int, list[str]] = {}
    for key, pos in data.positions.items():
        if key != "end" and len(pos):
            names.setdefault(int(pos[0]), []).append(key)
    labels = []
    for p, (t, r) in enumerate(zip(toks, real)):
        text = (
            repr(model.to_string([t]))
            if model.tokenizer is not None and r
            else ("<pad>" if not r else str(t))
        )
        extra = f" ({', '.join(names[p])})" if p in names else ""
        labels.append(f"{p}: {text}{extra}")
    return labels


def _positions(data: PreparedTask, cfg: SweepConfig) -> list[int]:
    width = data.width
    positions = list(range(width)) if cfg.positions is None else [p % width for p in cfg.positions]
    return positions


def _layer_axis(layers: Sequence[int]) -> Axis:
    return Axis("layer", tuple(str(layer) for layer in layers))


def _by_pos(site: str) -> Builder:
    def build(
        model: HookedModel, data: PreparedTask, cfg: SweepConfig
    ) -> tuple[list[Variant], tuple[Axis, ...]]:
        layers, positions = _layers(model, cfg), _positions(data, cfg)
        variants: list[Variant] = [
            (Patch(f"blocks.{layer}.{site}", (p,)),) for layer in layers for p in positions
        ]
        labels = position_labels(model, data)
        return variants, (_layer_axis(layers), Axis("pos", tuple(labels[p] for p in positions)))

    return build


def _per_head(site: str, kv: bool = False) -> Builder:
    def build(
        model: HookedModel, data: PreparedTask, cfg: SweepConfig
    ) -> tuple[list[Variant], tuple[Axis, ...]]:
        layers = _layers(model, cfg)
        heads = model.cfg.n_kv_heads if kv else model.cfg.n_heads
        index = (lambda h: (h,)) if site == "attn.hook_pattern" else (lambda h: (slice(None), h))
        variants: list[Variant] = [
            (Patch(f"blocks.{layer}.{site}", index(h)),) for layer in layers for h in range(heads)
        ]
        return variants, (
            _layer_axis(layers),
            Axis("kv_head" if kv else "head", tuple(map(str, range(heads)))),
        )

    return build


def _heads_by_pos(
    model: HookedModel, data: PreparedTask, cfg: SweepConfig
) -> tuple[list[Variant], tuple[Axis, ...]]:
    layers, positions = _layers(model, cfg), _positions(data, cfg)
    heads = range(model.cfg.n_heads)
    variants: list[Variant] = [
        (Patch(f"blocks.{layer}.attn.hook_z", (p, h)),) for layer in layers for p in positions for h in heads
    ]
    labels = position_labels(model, data)
    axes = (
        _layer_axis(layers),
        Axis("pos", tuple(labels[p] for p in positions)),
        Axis("head", tuple(map(str, heads))),
    )
    return variants, axes


def _neurons(
    model: HookedModel, data: PreparedTask, cfg: SweepConfig
) -> tuple[list[Variant], tuple[Axis, ...]]:
    layers = _layers(model, cfg)
    neurons = list(range(model.cfg.d_mlp)) if cfg.neurons is None else list(cfg.neurons)
    variants: list[Variant] = [
        (Patch(f"blocks.{layer}.mlp.hook_post", (slice(None), i)),) for layer in layers for i in neurons
    ]
    return variants, (_layer_axis(layers), Axis("neuron", tuple(map(str, neurons))))


SWEEPS: dict[str, Builder] = {
    "resid_pre": _by_pos("hook_resid_pre"),
    "resid_mid": _by_pos("hook_resid_mid"),
    "resid_post": _by_pos("hook_resid_post"),
    "attn_out": _by_pos("hook_attn_out"),
    "mlp_out": _by_pos("hook_mlp_out"),
    "heads": _per_head("attn.hook_z"),
    "heads_by_pos": _heads_by_pos,
    "q": _per_head("attn.hook_q"),
    "k": _per_head("attn.hook_k", kv=True),
    "v": _per_head("attn.hook_v", kv=True),
    "pattern": _per_head("attn.hook_pattern"),
    "neurons": _neurons,
}
"""Every named sweep; see the module docstring for sites and axes."""


def sweep(
    model: HookedModel,
    task: Task | PreparedTask,
    kind: str,
    *,
    metric: str | Metric | None = None,
    config: SweepConfig | None = None,
    progress: bool = False,
) -> PatchResult:
    """Activation-patch every site of sweep ``kind`` and return the result with its axes."""
    if kind not in SWEEPS:
        raise MechscopeError(f"unknown sweep {kind!r}; choose one of {', '.join(SWEEPS)}")
    cfg = config or SweepConfig()
    data = task if isinstance(task, PreparedTask) else prepare(model, task)
    variants, axes = SWEEPS[kind](model, data, cfg)
    start = time.perf_counter()
    run = patch_variants(
        model, data, variants, metric, direction=cfg.direction, mode=cfg.mode,
        memory_budget_mb=cfg.memory_budget_mb, progress=progress,
    )  # fmt: skip
    shape = tuple(len(a) for a in axes)
    return PatchResult(
        values=run.mean.reshape(shape).cpu(),
        axes=axes,
        method="activation_patching",
        sweep=kind,
        metric=run.metric,
        clean=float(run.clean.mean()),
        corrupted=float(run.corrupted.mean()),
        direction=cfg.direction,
        per_example=run.values.reshape(*shape, data.n).cpu(),
        info=run_info(model, data, cfg, time.perf_counter() - start),
    )


def run_info(model: HookedModel, data: PreparedTask, cfg: object, seconds: float) -> dict[str, object]:
    """Provenance recorded with every result."""
    config = asdict(cfg) if hasattr(cfg, "__dataclass_fields__") else {}  # type: ignore[call-overload]
    return {
        "model": model.cfg.name,
        "family": model.cfg.family,
        "task": data.task.name,
        "n": data.n,
        "config": config,
        "seconds": round(seconds, 3),
        "torch": torch.__version__,
    }
