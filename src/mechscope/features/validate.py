"""Does a feature do what its explanation and logit effects claim? A report card of three checks.

1. **Precision and recall** on held-out contexts: the explanation predicts, for each context,
   whether the feature fires (through a predicate, e.g. a simulator applied to the explanation);
   the model says whether it does (``max_t f(x_t) > threshold``). ``precision = P(fires | predicted)``,
   ``recall = P(predicted | fires)``. Contexts are chosen to match or not match the explanation:
   up to ``per_class`` of each.
2. **Causal check**: on contexts where the feature fires, set it to zero
   (:func:`~mechscope.steering.clamp_feature`) and measure, at the positions where it fired, the
   shift of the log-odds of the tokens its decoder direction promotes over those it suppresses
   (``W_dec[i] @ W_U``). The prediction: the log-odds fall.
3. **Steering check**: add ``alpha`` (default: ``steer_multiple`` times the feature's largest
   held-out activation) times the decoder direction at every position of neutral
   prompts; the log-odds at the next token should rise. Greedy generations before and after are
   kept for the card.

:func:`validate` runs all three into a :class:`ValidationCard` whose ``verdict`` is ``pass``
(all three hold; precision and recall at least ``min_precision``/``min_recall``), ``partial``
or ``fail``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from ..dictionary.base import Dictionary
from ..errors import MechscopeError
from ..models import HookedModel
from ..steering.features import add_feature, clamp_feature
from ..steering.sweep import logodds


@dataclass(frozen=True)
class ValidationConfig:
    """Settings of the three checks."""

    threshold: float = 0.0
    """A context "fires" when the feature exceeds this anywhere in it."""
    n_logit_tokens: int = 10
    """Promoted and suppressed tokens the causal and steering checks read."""
    steer_alpha: float | None = None
    """Strength added in the steering check (default: ``steer_multiple`` x the largest activation seen)."""
    steer_multiple: float = 4.0
    """The default steering strength, in units of the feature's largest held-out activation."""
    max_new_tokens: int = 12
    """Greedy tokens generated before and after steering."""
    min_precision: float = 0.7
    """Precision needed for ``pass``."""
    min_recall: float = 0.5
    """Recall needed for ``pass``."""
    skip_first: int = 0
    """Positions at the start of each context read as silent (1 with a BOS first)."""
    per_class: int = 32
    """Held-out contexts kept that match the explanation, and as many that do not."""
    causal_contexts: int = 16
    """Firing held-out contexts the causal check runs (two full forward passes each)."""


@dataclass(frozen=True)
class ValidationCard:
    """The report card of one feature."""

    feature: int
    """The feature."""
    explanation: str
    """The explanation that was checked."""
    precision: float
    """``P(fires | the explanation predicts it)`` on the held-out contexts."""
    recall: float
    """``P(the explanation predicts it | fires)`` on the held-out contexts."""
    n_predicted: int
    """Held-out contexts the explanation predicts to fire."""
    n_fired: int
    """Held-out contexts where the feature fired."""
    n_contexts: int
    """Held-out contexts."""
    causal_shift: float
    """Mean change of the promoted-vs-suppressed log-odds when the feature is zeroed (expected < 0)."""
    causal_positions: int
    """Positions the causal check averaged over (where the feature fired)."""
    steer_alpha: float
    """Strength of the steering check."""
    steer_shift: float
    """Change of the log-odds at the next token when the feature is added (expected > 0)."""
    generations: list[tuple[str, str]]
    """``(before, after)`` greedy generations of the steering prompts."""
    promoted: list[int]
    """Token ids the decoder direction promotes most."""
    suppressed: list[int]
    """Token ids it suppresses most."""
    promoted_tokens: list[str]
    """``promoted`` as strings (the ids, for models without a tokenizer)."""
    suppressed_tokens: list[str]
    """``suppressed`` as strings."""
    verdict: str
    """``pass``, ``partial`` or ``fail``."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (for dashboards and reports)."""
        d = asdict(self)
        d["generations"] = [{"before": b, "after": a} for b, a in self.generations]
        return d


def logit_effects(model: HookedModel, dictionary: Dictionary, feature: int, k: int) -> tuple[Tensor, Tensor]:
    """``(promoted, suppressed)`` token ids of ``W_dec[feature] @ W_U``, ``[k]`` each."""
    effect = dictionary.W_dec.detach()[feature].float() @ model.W_U.detach().float()  # [vocab]
    return effect.topk(k).indices, (-effect).topk(k).indices


def _acts(
    model: HookedModel, dictionary: Dictionary, feature: int, tokens: Tensor, skip_first: int = 0
) -> Tensor:
    """The feature on every token, ``[n, ctx]``, the first ``skip_first`` read as 0 (the forward stops at the hook)."""
    hook = dictionary.config.hook_name
    _, cache = model.run_with_cache(tokens, names=[hook], return_logits=False)
    x = cache[hook]
    with torch.no_grad():
        f = dictionary.encode(x.reshape(-1, x.shape[-1]).to(dictionary.W_dec.dtype))[:, feature]
    f = f.view(x.shape[:-1]).clone()
    f[:, :skip_first] = 0
    return f


def precision_recall(
    model: HookedModel,
    dictionary: Dictionary,
    feature: int,
    contexts: Tensor,
    predicted: Sequence[bool],
    threshold: float = 0.0,
    acts: Tensor | None = None,
) -> tuple[float, float, int, int]:
    """``(precision, recall, n_predicted, n_fired)`` of ``predicted`` against the feature on ``contexts``.

    ``acts [n, ctx]``: the feature's activations on ``contexts`` when already known.
    """
    if len(predicted) != contexts.shape[0]:
        raise MechscopeError(f"{len(predicted)} predictions for {contexts.shape[0]} contexts")
    acts = _acts(model, dictionary, feature, contexts) if acts is None else acts
    fired = acts.amax(-1) > threshold  # [n]
    pred = torch.tensor([bool(p) for p in predicted])
    both = int((fired & pred).sum())
    n_pred, n_fired = int(pred.sum()), int(fired.sum())
    return both / max(n_pred, 1), both / max(n_fired, 1), n_pred, n_fired


def causal_check(
    model: HookedModel,
    dictionary: Dictionary,
    feature: int,
    contexts: Tensor,
    up: Tensor,
    down: Tensor,
    skip_first: int = 0,
) -> tuple[float, int]:
    """``(mean log-odds shift when the feature is zeroed, positions)`` where it fires in ``contexts``."""
    fires = _acts(model, dictionary, feature, contexts, skip_first) > 0  # [n, ctx]
    if not fires.any():
        raise MechscopeError(f"feature {feature} never fires on the causal-check contexts: nothing to ablate")
    with torch.no_grad():
        base = logodds(model(contexts), up, down)  # [n, ctx]
        with model.hooks([clamp_feature(dictionary, feature, 0.0)]):
            ablated = logodds(model(contexts), up, down)
    return float((ablated - base)[fires].mean()), int(fires.sum())


def steering_check(
    model: HookedModel,
    dictionary: Dictionary,
    feature: int,
    prompts: Sequence[str] | Tensor,
    alpha: float,
    up: Tensor,
    down: Tensor,
    max_new_tokens: int = 12,
) -> tuple[float, list[tuple[str, str]]]:
    """``(log-odds shift at the next token, [(before, after)] generations)`` when adding ``alpha``.

    ``prompts``: strings, or token ids ``[n, pos]`` (models without a tokenizer).
    """
    hook = add_feature(dictionary, feature, alpha)
    inputs: Any = prompts if isinstance(prompts, Tensor) else list(prompts)
    with torch.no_grad():
        base = logodds(model(inputs, padding_side="left", logits_to_keep=1)[:, -1], up, down)
        with model.hooks([hook]):
            steered = logodds(model(inputs, padding_side="left", logits_to_keep=1)[:, -1], up, down)
    before = model.generate(inputs, max_new_tokens=max_new_tokens)
    after = model.generate(inputs, max_new_tokens=max_new_tokens, fwd_hooks=[hook])
    return float((steered - base).mean()), list(zip(_texts(model, before), _texts(model, after)))


def _texts(model: HookedModel, out: Any) -> list[str]:
    if isinstance(out, Tensor):  # ids: decoded when the model has a tokenizer, else the ids
        return [str(model.to_string(row)) if model.tokenizer is not None else " ".join(map(str, row.tolist()))
                for row in out]  # fmt: skip
    return [str(t) for t in out]


def validate(
    model: HookedModel,
    dictionary: Dictionary,
    feature: int,
    explanation: str,
    held_out: Tensor,
    predict: Callable[[int], bool],
    steer_prompts: Sequence[str] | Tensor,
    config: ValidationConfig | None = None,
    acts: Tensor | None = None,
) -> ValidationCard:
    """All three checks on ``held_out`` contexts ``[n, ctx]``; ``predict(j)``: does context ``j`` match?

    ``acts [n, ctx]``: the feature on ``held_out`` when already known (one pass for many features).
    """
    cfg = config or ValidationConfig()
    if not 0 <= feature < dictionary.config.d_sae:
        raise MechscopeError(
            f"feature {feature} is out of range: the dictionary has {dictionary.config.d_sae}"
        )
    up, down = logit_effects(model, dictionary, feature, cfg.n_logit_tokens)
    matches = [predict(j) for j in range(held_out.shape[0])]
    chosen = [j for j, m in enumerate(matches) if m][: cfg.per_class]
    chosen += [j for j, m in enumerate(matches) if not m][: cfg.per_class]
    keep = torch.tensor(sorted(chosen), dtype=torch.long)
    held_out, predicted = held_out[keep], [matches[j] for j in keep.tolist()]
    acts = (
        _acts(model, dictionary, feature, held_out, cfg.skip_first) if acts is None else acts[keep]
    )  # [n, ctx]
    precision, recall, n_pred, n_fired = precision_recall(
        model, dictionary, feature, held_out, predicted, cfg.threshold, acts
    )
    firing = held_out[acts.amax(-1) > 0]
    causal, positions = (
        causal_check(model, dictionary, feature, firing, up, down) if len(firing) else (0.0, 0)
    )
    peak = float(acts.max())
    alpha = (
        cfg.steer_alpha if cfg.steer_alpha is not None else cfg.steer_multiple * (peak if peak > 0 else 1.0)
    )
    steer, gens = steering_check(
        model, dictionary, feature, steer_prompts, alpha, up, down, cfg.max_new_tokens
    )
    checks = [
        precision >= cfg.min_precision and recall >= cfg.min_recall,
        positions > 0 and causal < 0,
        steer > 0,
    ]
    verdict = "pass" if all(checks) else "partial" if any(checks) else "fail"
    return ValidationCard(
        feature, explanation, precision, recall, n_pred, n_fired, held_out.shape[0], causal, positions, alpha,
        steer, gens, up.tolist(), down.tolist(), _strings(model, up), _strings(model, down), verdict,
    )  # fmt: skip


def _strings(model: HookedModel, ids: Tensor) -> list[str]:
    if model.tokenizer is None:
        return [str(int(i)) for i in ids]
    return [str(model.to_string([int(i)])) for i in ids]


__all__ = [
    "ValidationCard",
    "ValidationConfig",
    "causal_check",
    "logit_effects",
    "precision_recall",
    "steering_check",
    "validate",
]
