"""``mechscope features`` and ``mechscope explain``: feature statistics, explanations, scores, cards.

``features`` streams a corpus through the model up to a dictionary's hook and writes a feature
artifact (:mod:`mechscope.features.stats`) with dashboards for the most active features.

``explain`` works on an artifact: for each chosen feature it

1. explains it from its **top** examples (offline token patterns, or an LLM endpoint);
2. scores the explanation on held-out examples: its **quantile** examples (activating) and the
   **random** windows where it is silent (detection, fuzzing; simulation over both);
3. with ``--validate`` (needs the model and the dictionary): a report card from held-out corpus
   contexts after the artifact's own (precision/recall, causal and steering checks);

and writes ``explanations.json``, ``scores.json`` (and ``cards.json``) into the artifact, then
rebuilds the dashboards with them. Explanations and scores keep their prompts and seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._fs import atomic_write_json
from ..errors import MechscopeError
from ..explain import (
    Explanation,
    LLMConfig,
    LLMExplainer,
    LLMSimulator,
    PatternSimulator,
    Score,
    Simulator,
    TokenPatternExplainer,
    detection,
    fuzzing,
    save_explanations,
    save_scores,
    simulation,
)
from ..features import FeatureArtifact, StatsConfig, feature_stats
from ..features.validate import ValidationCard, ValidationConfig, validate
from ..models import DEFAULT_MODEL, HookedModel, load_model

SCORERS = ("detection", "fuzzing", "simulation")
"""Scores ``mechscope explain`` can compute."""


@dataclass(frozen=True)
class FeaturesJobConfig:
    """What ``mechscope features`` computes."""

    sae: Path | None = None
    """Dictionary directory (any supported format); its hook is where the model is read."""
    model: str = DEFAULT_MODEL
    """Model: a built-in name, a .gguf file, a local HF directory, a hub id or toy/<name>."""
    corpus: str = "stdlib"
    """Text source: stdlib (offline), a text/JSONL/Parquet file or directory, or a saved dataset."""
    n_contexts: int = 64
    """Contexts streamed through the model."""
    ctx_len: int = 128
    """Tokens per context (BOS first)."""
    start: int = 0
    """Index of the first context of the corpus to use."""
    batch: int = 8
    """Contexts per forward pass."""
    stats: StatsConfig = field(default_factory=lambda: StatsConfig(skip_first=1))
    """What the pass keeps per feature (BOS left out)."""
    dashboards: int = 200
    """Features given dashboard pages (the most frequently firing ones)."""
    out: Path = Path("runs")
    """Directory under which features-<stamp>/ is written."""
    device: str | None = None
    """Device for the model (default: CUDA when available, else CPU)."""


def corpus_stream(model: HookedModel, corpus: str, ctx_len: int) -> Any:
    """The corpus packed into ``ctx_len`` contexts with BOS first."""
    from ..data import TokenStream, open_documents

    return TokenStream(open_documents(corpus), model, ctx_len=ctx_len, bos="bos")


def run_features(
    config: FeaturesJobConfig,
    progress: Callable[[str], None] | None = None,
    model: HookedModel | None = None,
    dictionary: Any = None,
    out: Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """The statistics pass, the artifact and its dashboards; returns ``(artifact dir, summary)``."""
    from ..dictionary.io import load_dictionary
    from ..features.dashboard import build_dashboards

    say = progress or (lambda _msg: None)
    if dictionary is None:
        if config.sae is None:
            raise MechscopeError("give the dictionary: --sae DIR")
        dictionary = load_dictionary(config.sae)
    if model is None:
        say(f"loading {config.model}")
        model = load_model(config.model, device=config.device)
    dictionary = dictionary.to(model.device)
    stream = corpus_stream(model, config.corpus, config.ctx_len)
    batches = (b for _, b in stream.batches(config.batch, config.start, config.start + config.n_contexts))
    n_batches = -(-config.n_contexts // config.batch)
    say(f"statistics of {dictionary.config.d_sae} features at {dictionary.config.hook_name} over "
        f"{config.n_contexts} x {config.ctx_len} tokens")  # fmt: skip
    t0 = time.perf_counter()
    stats = feature_stats(
        model, dictionary, tqdm(batches, total=n_batches, desc="feature stats", leave=False), config.stats
    )
    seconds = time.perf_counter() - t0
    out = out or Path(config.out) / f"features-{time.strftime('%Y%m%d-%H%M%S')}"
    extra = {"corpus": config.corpus, "start": config.start, "sae": str(config.sae or ""), "seconds": seconds}
    stats.save(out, model, extra=extra)
    art = FeatureArtifact(out)
    fired = [i for i, n in enumerate(art.column("n_active")) if n > 0]
    chosen = sorted(fired, key=lambda i: -art.column("n_active")[i])[: config.dashboards]
    if chosen:
        build_dashboards(art, out / "dashboards", features=chosen)
    summary = {"n_tokens": stats.n_tokens, "d_sae": art.d_sae, "fired": len(fired), "seconds": seconds,
               "dashboards": len(chosen)}  # fmt: skip
    return out, summary


@dataclass(frozen=True)
class ExplainJobConfig:
    """What ``mechscope explain`` does with a feature artifact."""

    artifact: Path | None = None
    """The feature artifact directory (from ``mechscope features``)."""
    features: tuple[int, ...] = ()
    """Features to explain (default: the ``n`` that fire most often)."""
    n: int = 10
    """How many features when none are named."""
    explainer: str = "pattern"
    """pattern (offline token patterns) or llm (an OpenAI-compatible endpoint, from MECHSCOPE_LLM_* env)."""
    llm_timeout: float = 60.0
    """Seconds per LLM request (--explainer llm)."""
    llm_retries: int = 3
    """Retries of a failed LLM request (connection errors, time-outs, 429, 5xx)."""
    scorers: tuple[str, ...] = SCORERS
    """Scores to compute: detection, fuzzing, simulation."""
    seed: int = 0
    """Seed of the scorers' shuffles and markings."""
    validate: bool = False
    """Also write report cards (needs the model and --sae)."""
    sae: Path | None = None
    """Dictionary directory (for --validate; default: the one the artifact records)."""
    model: str = DEFAULT_MODEL
    """Model for --validate."""
    held_out: int = 64
    """Held-out corpus contexts for --validate (after the artifact's own)."""
    held_out_len: int = 32
    """Tokens per held-out context."""
    steer_prompts: tuple[str, ...] = ("I think that", "The best thing about")
    """Prompts of the steering check."""
    device: str | None = None
    """Device for the model (default: CUDA when available, else CPU)."""


def explainer_and_simulator(kind: str, **llm: Any) -> tuple[Any, Simulator]:
    """The explainer and the simulator that scores its explanations (``llm``: LLMConfig overrides)."""
    if kind == "pattern":
        return TokenPatternExplainer(), PatternSimulator()
    if kind == "llm":
        cfg = LLMConfig.from_env(**llm)
        return LLMExplainer(cfg), LLMSimulator(cfg)
    raise MechscopeError(f"--explainer must be pattern or llm, not {kind!r}")


def explain_feature(
    art: FeatureArtifact,
    feature: int,
    explainer: Any,
    simulator: Simulator,
    scorers: Sequence[str],
    seed: int,
) -> tuple[Explanation, list[Score]]:
    """Explain from the top examples; score on the quantile examples and the silent random windows."""
    top = [e.example() for e in art.examples(feature, "top")]
    if not top:
        raise MechscopeError(f"feature {feature} never fired in {art.path}: nothing to explain")
    explanation = explainer.explain(feature, top)
    held = [e.example() for e in art.examples(feature, "quantile")] or top
    silent = [e.example() for e in art.random(feature) if max(e.activations, default=0.0) <= 0]
    scores = []
    for name in scorers:
        if name == "detection":
            if silent:
                scores.append(detection(explanation, held, silent, simulator, seed))
        elif name == "fuzzing":
            scores.append(fuzzing(explanation, held, simulator, seed))
        elif name == "simulation":
            scores.append(simulation(explanation, held + silent[: len(held)], simulator))
        else:
            raise MechscopeError(f"unknown scorer {name!r}: choose from {', '.join(SCORERS)}")
    return explanation, scores


def explain_features(
    art: FeatureArtifact, features: Sequence[int], explainer: Any, simulator: Simulator, scorers: Sequence[str],
    seed: int,
) -> tuple[list[Explanation], list[Score]]:  # fmt: skip
    """:func:`explain_feature` for each feature, with a progress bar."""
    explanations, scores = [], []
    for f in tqdm(features, desc="explaining", leave=False):
        e, s = explain_feature(art, f, explainer, simulator, scorers, seed)
        explanations.append(e)
        scores.extend(s)
    return explanations, scores


def write_notes(
    art: FeatureArtifact,
    explanations: Sequence[Explanation],
    scores: Sequence[Score],
    cards: dict[int, ValidationCard],
    pages: Sequence[int],
) -> None:
    """``explanations.json``, ``scores.json``, ``cards.json`` (when any) and the dashboards of ``pages`` with them."""
    from ..features.dashboard import build_dashboards

    save_explanations(art.path / "explanations.json", explanations)
    save_scores(art.path / "scores.json", scores)
    if cards:
        atomic_write_json(art.path / "cards.json", {str(f): c.to_json() for f, c in cards.items()})
    build_dashboards(
        art, art.path / "dashboards", features=pages, notes=notes_for(explanations, scores, cards)
    )


def choose_features(art: FeatureArtifact, features: Sequence[int], n: int) -> list[int]:
    """``features`` checked against the artifact, or the ``n`` that fire most often."""
    if features:
        return [art.check(f) for f in features]
    counts = art.column("n_active")
    return sorted((i for i, c in enumerate(counts) if c > 0), key=lambda i: -counts[i])[:n]


def held_out_contexts(model: HookedModel, art: FeatureArtifact, n: int, length: int) -> Tensor:
    """``[n, length]`` corpus contexts (BOS first) whose text comes after all of the artifact's."""
    meta = art.meta
    if "corpus" not in meta:
        raise MechscopeError(f"{art.path} does not record its corpus: validate with your own contexts")
    body_done = (int(meta.get("start", 0)) + int(meta["n_contexts"])) * (int(meta["ctx"]) - 1)
    first = -(-body_done // (length - 1))  # contexts of ``length`` tokens pack the same stream
    return corpus_stream(model, str(meta["corpus"]), length).take(n, start=first)  # type: ignore[no-any-return]


def feature_acts(model: HookedModel, dictionary: Any, features: Sequence[int], tokens: Tensor) -> Tensor:
    """``[len(features), n, ctx]`` activations on ``tokens``, position 0 (BOS) read as 0."""
    hook, out = dictionary.config.hook_name, []
    for chunk in tokens.split(8):
        _, cache = model.run_with_cache(chunk, names=[hook], return_logits=False)
        x = cache[hook]
        with torch.no_grad():
            f = dictionary.encode(x.reshape(-1, x.shape[-1]).to(dictionary.W_dec.dtype))[:, list(features)]
        out.append(f.float().view(*x.shape[:-1], len(features)).cpu())
    acts = torch.cat(out).permute(2, 0, 1).contiguous()
    acts[:, :, 0] = 0
    return acts


def validate_features(
    model: HookedModel,
    dictionary: Any,
    art: FeatureArtifact,
    explanations: Sequence[Explanation],
    simulator: Simulator,
    config: ExplainJobConfig,
) -> dict[int, ValidationCard]:
    """A report card per explanation, on held-out corpus contexts."""
    held = held_out_contexts(model, art, config.held_out, config.held_out_len).to(model.device)
    words = [[str(model.to_string([int(t)])) for t in row[1:]] for row in held.tolist()]
    acts = feature_acts(model, dictionary, [e.feature for e in explanations], held)
    vcfg = ValidationConfig(skip_first=1, per_class=config.held_out // 2)
    cards = {}
    for k, expl in enumerate(tqdm(explanations, desc="validating", leave=False)):
        cards[expl.feature] = validate(
            model, dictionary, expl.feature, expl.text, held,
            lambda j, expl=expl: bool(simulator.detect(expl, words[j]).value),  # type: ignore[misc]
            list(config.steer_prompts), vcfg, acts[k],
        )  # fmt: skip
    return cards


def notes_for(
    explanations: Sequence[Explanation], scores: Sequence[Score], cards: dict[int, ValidationCard]
) -> dict[int, Any]:
    """Dashboard notes (explanation, scores, card) per feature."""
    from ..features.dashboard import FeatureNotes

    notes = {}
    for e in explanations:
        mine = {s.scorer: s.value for s in scores if s.feature == e.feature}
        card = cards.get(e.feature)
        notes[e.feature] = FeatureNotes(e.text, e.explainer, mine, card.to_json() if card else None)
    return notes


def run_explain(
    config: ExplainJobConfig,
    progress: Callable[[str], None] | None = None,
    model: HookedModel | None = None,
    dictionary: Any = None,
) -> tuple[Path, list[dict[str, Any]]]:
    """Explain, score (and validate) the features; write the files; return ``(artifact, rows)``."""
    say = progress or (lambda _msg: None)
    if config.artifact is None:
        raise MechscopeError("give the feature artifact: --artifact DIR (from `mechscope features`)")
    unknown = [s for s in config.scorers if s not in SCORERS]
    if unknown:  # before any work (an LLM explainer costs calls)
        raise MechscopeError(f"unknown scorer {unknown[0]!r}: choose from {', '.join(SCORERS)}")
    art = FeatureArtifact(config.artifact)
    features = choose_features(art, config.features, config.n)
    explainer, simulator = explainer_and_simulator(
        config.explainer, timeout_s=config.llm_timeout, max_retries=config.llm_retries
    )
    say(f"explaining {len(features)} features with the {config.explainer} explainer")
    explanations, scores = explain_features(art, features, explainer, simulator, config.scorers, config.seed)
    cards: dict[int, ValidationCard] = {}
    if config.validate:
        from ..dictionary.io import load_dictionary

        sae = config.sae or (Path(art.meta["sae"]) if art.meta.get("sae") else None)
        if dictionary is None and sae is None:
            raise MechscopeError("--validate needs the dictionary: --sae DIR")
        dictionary = dictionary if dictionary is not None else load_dictionary(sae)  # type: ignore[arg-type]
        if model is None:
            say(f"loading {config.model}")
            model = load_model(config.model, device=config.device)
        cards = validate_features(model, dictionary.to(model.device), art, explanations, simulator, config)
    # everything is computed before anything is written: a failure leaves the artifact as it was
    pages = sorted(set(features) | set(choose_features(art, (), 200)))  # keep the pages `features` built
    write_notes(art, explanations, scores, cards, pages)
    rows = []
    for e in explanations:
        rows.append({"feature": e.feature, "explanation": e.text,
                     "scores": {s.scorer: s.value for s in scores if s.feature == e.feature},
                     "verdict": cards[e.feature].verdict if e.feature in cards else None})  # fmt: skip
    return art.path, rows


__all__ = [
    "ExplainJobConfig",
    "FeaturesJobConfig",
    "choose_features",
    "explain_feature",
    "explain_features",
    "feature_acts",
    "held_out_contexts",
    "run_explain",
    "run_features",
    "validate_features",
    "write_notes",
]
