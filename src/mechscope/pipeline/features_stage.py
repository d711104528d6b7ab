"""The demo's features stage: which SAE features carry factual recall, what they are, do they hold up.

1. Feature statistics of the demo SAE over held-out corpus contexts (the forward stops at its
   hook) into ``features/`` (Parquet tables, DuckDB-queryable).
2. The features most active on the factual-recall prompts at their last token (where the
   answer is predicted), summed over the prompts; only features seen firing in the corpus.
3. Explain them offline from their top examples (token patterns), score on their quantile
   examples and silent random windows (detection, fuzzing, simulation), and validate them on
   held-out contexts (precision/recall, causal and steering checks) into report cards.
4. One steering example: the top feature clamped to a multiple of its largest activation on
   neutral prompts, greedy generations before and after.
5. Dashboards for the chosen features (and the most frequent others) under
   ``features/dashboards/``; ``features.json`` is what the demo page reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._fs import atomic_write_json
from ..features import FeatureArtifact, StatsConfig
from ..models import HookedModel
from ..steering import steer_features
from .features_job import (
    SCORERS,
    ExplainJobConfig,
    FeaturesJobConfig,
    explain_features,
    explainer_and_simulator,
    run_features,
    validate_features,
    write_notes,
)


@dataclass(frozen=True)
class FeaturesStageConfig:
    """The demo's features stage."""

    n_contexts: int = 48
    """Corpus contexts of the statistics pass."""
    ctx_len: int = 128
    """Tokens per context."""
    start: int = 2000
    """First corpus context (well after the SAE's training and evaluation contexts)."""
    n_features: int = 6
    """Features chosen from the factual-recall prompts."""
    held_out: int = 48
    """Held-out contexts for validation."""
    held_out_len: int = 32
    """Tokens per held-out context."""
    clamp_multiple: float = 5.0
    """The steering example clamps the feature to this multiple of its largest activation seen."""
    steer_prompts: tuple[str, ...] = ("I think that", "My favourite thing is")
    """Neutral prompts of the steering checks and the steering example."""
    max_new_tokens: int = 12
    """Greedy tokens of the steering example."""
    dashboards: int = 60
    """Dashboard pages besides the chosen features (the most frequently firing features)."""


def prompt_features(
    model: HookedModel, dictionary: Any, prompts: Sequence[str], allowed: set[int], n: int
) -> tuple[list[int], list[list[float]]]:
    """The ``n`` features with the largest summed last-token activation over ``prompts``, and their values."""
    hook = dictionary.config.hook_name
    acts = []
    for p in prompts:
        _, cache = model.run_with_cache(p, names=[hook], return_logits=False)
        with torch.no_grad():
            acts.append(dictionary.encode(cache[hook][0, -1:].to(dictionary.W_dec.dtype))[0].float().cpu())
    stacked = torch.stack(acts)  # [prompts, d_sae]
    total = stacked.sum(0)
    mask = torch.zeros_like(total, dtype=torch.bool)
    mask[list(allowed)] = True
    top = torch.where(mask, total, -1.0).topk(n).indices.tolist()
    return [f for f in top if total[f] > 0], [
        [float(stacked[j, f]) for f in top] for j in range(len(prompts))
    ]


def steering_example(
    model: HookedModel,
    dictionary: Any,
    feature: int,
    value: float,
    prompts: Sequence[str],
    max_new_tokens: int,
) -> dict[str, Any]:
    """Generations of ``prompts`` before and after clamping ``feature`` to ``value``."""
    before = model.generate(list(prompts), max_new_tokens=max_new_tokens)
    hook = steer_features(dictionary, {feature: value}, "clamp")
    after = model.generate(list(prompts), max_new_tokens=max_new_tokens, fwd_hooks=[hook])
    return {"feature": feature, "value": value, "prompts": list(prompts),
            "before": [str(t) for t in before], "after": [str(t) for t in after]}  # fmt: skip


def features_stage(
    model: HookedModel,
    dictionary: Any,
    run_dir: Path,
    prompts: Sequence[str],
    config: FeaturesStageConfig,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Run the stage; write ``features/`` and ``features.json``; return the summary."""
    t0 = time.perf_counter()
    out = run_dir / "features"
    fcfg = FeaturesJobConfig(n_contexts=config.n_contexts, ctx_len=config.ctx_len, start=config.start,
                             stats=StatsConfig(skip_first=1), dashboards=0)  # fmt: skip
    _, stats = run_features(fcfg, say, model, dictionary, out=out)
    say(f"feature statistics over {stats['n_tokens']} tokens in {stats['seconds']:.0f} s "
        f"({stats['fired']} of {stats['d_sae']} features fired)")  # fmt: skip
    art = FeatureArtifact(out)
    fired = {i for i, c in enumerate(art.column("n_active")) if c > 0}
    chosen, values = prompt_features(model, dictionary, prompts, fired, config.n_features)
    explainer, simulator = explainer_and_simulator("pattern")
    explanations, scores = explain_features(art, chosen, explainer, simulator, SCORERS, 0)
    say(f"explained and scored features {chosen}; validating on {config.held_out} held-out contexts")
    ecfg = ExplainJobConfig(held_out=config.held_out, held_out_len=config.held_out_len,
                            steer_prompts=config.steer_prompts)  # fmt: skip
    cards = validate_features(model, dictionary, art, explanations, simulator, ecfg)
    example = {}
    if chosen:
        top = chosen[0]
        value = config.clamp_multiple * float(art.summary(top)["max_activation"])
        example = steering_example(model, dictionary, top, value, config.steer_prompts, config.max_new_tokens)
    counts = art.column("n_active")
    others = sorted(fired, key=lambda i: -counts[i])[: config.dashboards]
    pages = sorted(set(chosen) | set(others))
    write_notes(art, explanations, scores, cards, pages)
    summary = {
        "hook": art.hook, "d_sae": art.d_sae, "n_tokens": stats["n_tokens"], "fired": stats["fired"],
        "stats_seconds": round(stats["seconds"], 1), "prompts": list(prompts), "features": [
            {"feature": e.feature, "explanation": e.text, "prompt_activations": [v[k] for v in values],
             "scores": {s.scorer: s.value for s in scores if s.feature == e.feature},
             "verdict": cards[e.feature].verdict, "card": cards[e.feature].to_json(),
             "page": f"features/dashboards/feature/{e.feature}.html"}
            for k, e in enumerate(explanations)
        ],
        "steering": example, "dashboards": "features/dashboards/index.html", "pages": len(pages),
        "stage_seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    atomic_write_json(run_dir / "features.json", summary)
    return summary


__all__ = ["FeaturesStageConfig", "features_stage", "prompt_features", "steering_example"]
