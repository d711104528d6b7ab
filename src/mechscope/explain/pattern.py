"""The offline explainer and judge: a feature described as "fires on these tokens (after these)".

:class:`TokenPatternExplainer`, from a feature's activating examples:

1. marks the **active** positions of each example: activation ``> relative_threshold x`` the
   example's max (and ``> 0``);
2. for each token string, sums its activation over active positions (its *mass*) and counts how
   often it occurs at all in the windows; a token's *precision* is active occurrences / all
   occurrences, so a token that is everywhere but rarely fires ranks low;
3. ranks tokens by ``mass share x precision`` and takes them in order until they cover
   ``coverage`` of the activation mass (at most ``max_tokens``; tokens under ``min_share`` skipped);
4. counts the token before each active occurrence of those tokens, weighted by activation, and
   keeps the previous tokens that carry at least ``min_previous_share`` of the mass;
5. **requires** the previous token when the kept ones cover ``coverage`` of the mass and demanding
   them raises the pattern's precision in the windows by at least ``min_context_gain``
   (the token alone fires only in some contexts); otherwise they are only mentioned ("often after");
6. writes ``fires on " cat" after " the"`` and keeps the machine-readable pattern
   ``{"tokens", "previous", "require_previous", "coverage", "precision"}``.

:class:`PatternSimulator` applies such a pattern: a token matches when it is one of ``tokens``
and, if ``require_previous``, the token before it is one of ``previous``. Matching tokens are
predicted at activation 1, the rest at 0. It is deterministic and needs no network, which makes
it the reference judge for testing the scorers, and a baseline an LLM explanation should beat.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .base import Example, ExplainError, Explanation, Judged


@dataclass(frozen=True)
class PatternConfig:
    """How :class:`TokenPatternExplainer` picks its tokens (see the module docstring)."""

    relative_threshold: float = 0.0
    """A token is active when its activation exceeds this fraction of its example's max (0: any positive)."""
    coverage: float = 0.8
    """Stop adding tokens once they hold this share of the activation mass; also the share the
    previous tokens must cover to be required."""
    max_tokens: int = 5
    """Most activating tokens named."""
    min_share: float = 0.02
    """Tokens holding less than this share of the activation mass are never named."""
    max_previous: int = 3
    """Most previous tokens named."""
    min_previous_share: float = 0.25
    """A previous token is named when at least this share of the mass follows it."""
    min_context_gain: float = 0.2
    """Previous tokens become required when they raise the pattern's precision by this much."""


class TokenPatternExplainer:
    """Deterministic, offline explanations: the tokens a feature fires on and their left context."""

    name = "token-pattern"

    def __init__(self, config: PatternConfig | None = None) -> None:
        self.config = config or PatternConfig()

    def explain(self, feature: int, examples: Sequence[Example]) -> Explanation:
        """Explain ``feature`` from ``examples`` (windows where it fires)."""
        cfg = self.config
        mass, seen, active = _token_counts(examples, cfg.relative_threshold)
        total = sum(mass.values())
        if total <= 0:
            raise ExplainError(
                f"feature {feature}: no example has an active token, so there is nothing to explain"
            )
        tokens = _pick_tokens(mass, seen, active, total, cfg)
        previous, prev_cover = _pick_previous(examples, set(tokens), cfg)
        alone = _precision(examples, tokens, previous, False, cfg.relative_threshold)
        with_prev = _precision(examples, tokens, previous, True, cfg.relative_threshold)
        require = bool(previous) and prev_cover >= cfg.coverage and with_prev - alone >= cfg.min_context_gain
        covered = sum(mass[t] for t in tokens) / total
        pattern = {"tokens": tokens, "previous": previous, "require_previous": require,
                   "coverage": round(covered, 6), "precision": round(with_prev if require else alone, 6)}  # fmt: skip
        return Explanation(feature, describe(pattern), self.name, settings=asdict(cfg), pattern=pattern)


def describe(pattern: dict[str, Any]) -> str:
    """The sentence for a pattern: ``fires on " cat", " dog" (often after " the")``."""
    text = "fires on " + _quoted(pattern["tokens"])
    if pattern["previous"]:
        prev = _quoted(pattern["previous"])
        text += f" after {prev}" if pattern["require_previous"] else f" (often after {prev})"
    return text


def _quoted(tokens: Sequence[str]) -> str:
    """Tokens as JSON strings, so leading spaces and quotes stay visible: ``" cat", " dog"``."""
    return ", ".join(json.dumps(t, ensure_ascii=False) for t in tokens)


def _active(ex: Example, relative_threshold: float) -> list[int]:
    return ex.active_positions(max(0.0, relative_threshold * ex.max_activation))


def _token_counts(
    examples: Sequence[Example], relative_threshold: float
) -> tuple[defaultdict[str, float], Counter[str], Counter[str]]:
    """Activation mass, occurrences and active occurrences of each token string."""
    mass: defaultdict[str, float] = defaultdict(float)
    seen: Counter[str] = Counter()
    active: Counter[str] = Counter()
    for ex in examples:
        seen.update(ex.tokens)
        for i in _active(ex, relative_threshold):
            mass[ex.tokens[i]] += ex.activations[i]
            active[ex.tokens[i]] += 1
    return mass, seen, active


def _pick_tokens(mass: defaultdict[str, float], seen: Counter[str], active: Counter[str], total: float,
                 cfg: PatternConfig) -> list[str]:  # fmt: skip
    """Tokens by mass share x precision, until they cover ``cfg.coverage`` of the mass."""
    ranked = sorted(mass, key=lambda t: (-(mass[t] / total) * (active[t] / seen[t]), t))
    picked: list[str] = []
    covered = 0.0
    for tok in ranked:
        if len(picked) >= cfg.max_tokens or covered >= cfg.coverage:
            break
        if mass[tok] / total < cfg.min_share:
            continue
        picked.append(tok)
        covered += mass[tok] / total
    return picked


def _pick_previous(
    examples: Sequence[Example], tokens: set[str], cfg: PatternConfig
) -> tuple[list[str], float]:
    """The previous tokens carrying ``min_previous_share`` of the picked tokens' mass, and their total share."""
    prev: defaultdict[str, float] = defaultdict(float)
    total = 0.0
    for ex in examples:
        for i in _active(ex, cfg.relative_threshold):
            if ex.tokens[i] in tokens:
                total += ex.activations[i]
                if i > 0:
                    prev[ex.tokens[i - 1]] += ex.activations[i]
    if total <= 0:
        return [], 0.0
    ranked = sorted(prev, key=lambda t: (-prev[t], t))
    kept = [t for t in ranked if prev[t] / total >= cfg.min_previous_share][: cfg.max_previous]
    return kept, sum(prev[t] for t in kept) / total


def _precision(examples: Sequence[Example], tokens: Sequence[str], previous: Sequence[str], require: bool,
               relative_threshold: float) -> float:  # fmt: skip
    """Of the positions the pattern matches in the windows, the share that are active."""
    pattern = {"tokens": list(tokens), "previous": list(previous), "require_previous": require}
    hits = matched = 0
    for ex in examples:
        active = set(_active(ex, relative_threshold))
        for i, m in enumerate(matches(pattern, ex.tokens)):
            if m:
                matched += 1
                hits += i in active
    return hits / matched if matched else 0.0


def matches(pattern: dict[str, Any], tokens: Sequence[str]) -> list[bool]:
    """For each position, whether the pattern matches the token there (see the module docstring)."""
    want, prev, require = set(pattern["tokens"]), set(pattern["previous"]), pattern["require_previous"]
    return [t in want and (not require or (i > 0 and tokens[i - 1] in prev)) for i, t in enumerate(tokens)]


def _pattern_of(explanation: Explanation) -> dict[str, Any]:
    """The explanation's pattern, checked, or an error saying which judge to use instead."""
    p = explanation.pattern
    if p is None:
        raise ExplainError(
            f"feature {explanation.feature}: the explanation has no pattern (written by {explanation.explainer!r}); "
            "PatternSimulator applies TokenPatternExplainer patterns, use LLMSimulator for free-text explanations"
        )
    ok = (isinstance(p.get("tokens"), list) and isinstance(p.get("previous"), list)
          and isinstance(p.get("require_previous"), bool))  # fmt: skip
    if not ok:
        raise ExplainError(
            f"feature {explanation.feature}: malformed pattern {p!r}; expected lists 'tokens' and 'previous' "
            "and a bool 'require_previous'"
        )
    return p


class PatternSimulator:
    """The offline judge: applies an explanation's ``pattern`` (1 on matching tokens, else 0)."""

    name = "pattern"

    def settings(self) -> dict[str, Any]:
        """No settings: the answers follow from the pattern alone."""
        return {}

    def detect(self, explanation: Explanation, tokens: Sequence[str]) -> Judged[bool]:
        """Yes when the pattern matches any token."""
        return Judged(any(matches(_pattern_of(explanation), tokens)))

    def judge_marking(
        self, explanation: Explanation, tokens: Sequence[str], marked: Sequence[int]
    ) -> Judged[bool]:
        """Yes when at least half of the marked tokens match the pattern."""
        m = matches(_pattern_of(explanation), tokens)
        return Judged(bool(marked) and 2 * sum(m[i] for i in marked) >= len(marked))

    def simulate(self, explanation: Explanation, tokens: Sequence[str]) -> Judged[list[float]]:
        """1.0 on matching tokens, 0.0 elsewhere."""
        return Judged([1.0 if m else 0.0 for m in matches(_pattern_of(explanation), tokens)])
