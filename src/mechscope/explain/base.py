"""The records of automated interpretation, and the two interfaces every method plugs into.

* :class:`Example`: one window of text (its tokens) and one feature's activation on each token.
* :class:`Explanation`: what an :class:`Explainer` wrote about a feature, with the exact prompt
  (LLM explainers) or the machine-readable pattern (the offline explainer) behind it.
* :class:`Score`: how well an explanation predicts the feature, from one scorer.
* :class:`Simulator`: the judge a scorer asks, given an explanation and some tokens: does the
  feature fire here, are these marked tokens the ones described, how strongly does each token fire.

Index conventions: positions index ``Example.tokens``; ``tokens[i - 1]`` is the token before
position ``i``. Activations are the feature's raw values; "active" means ``> threshold`` (0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from ..errors import MechscopeError

T = TypeVar("T")

MARK_OPEN, MARK_CLOSE = "<<", ">>"
"""The markers put around activating (or checked) tokens in text shown to a judge."""


class ExplainError(MechscopeError):
    """Inputs to an explainer or scorer that it cannot use (mismatched lengths, no examples, ...)."""


@dataclass(frozen=True)
class Example:
    """One window of text and one feature's activation on each of its tokens."""

    tokens: tuple[str, ...]
    """The window's tokens as strings (with their leading spaces, as the tokenizer has them)."""
    activations: tuple[float, ...]
    """The feature's activation on each token; the same length as ``tokens``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(str(t) for t in self.tokens))
        object.__setattr__(self, "activations", tuple(float(a) for a in self.activations))
        if len(self.tokens) != len(self.activations):
            raise ExplainError(
                f"an Example needs one activation per token: got {len(self.tokens)} tokens and "
                f"{len(self.activations)} activations"
            )

    @property
    def max_activation(self) -> float:
        """The largest activation in the window (0.0 for an empty window)."""
        return max(self.activations, default=0.0)

    @property
    def text(self) -> str:
        """The window's text: its tokens joined."""
        return "".join(self.tokens)

    def active_positions(self, threshold: float = 0.0) -> list[int]:
        """Positions whose activation is above ``threshold``, in order."""
        return [i for i, a in enumerate(self.activations) if a > threshold]


@dataclass(frozen=True)
class Explanation:
    """An explanation of one feature, with everything needed to reproduce it."""

    feature: int
    """Index of the feature (latent) explained."""
    text: str
    """The explanation, one plain sentence."""
    explainer: str
    """Name of the explainer that wrote it (``"token-pattern"``, ``"llm"``)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The explainer's settings (model, temperature, seed, thresholds, ...)."""
    prompt: list[dict[str, str]] | None = None
    """The exact chat messages sent, for LLM explainers; ``None`` otherwise."""
    pattern: dict[str, Any] | None = None
    """A machine-readable pattern (``tokens``, ``previous``, ``require_previous``) for the offline
    explainer and :class:`~mechscope.explain.PatternSimulator`; ``None`` for free text."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_json` reads it back."""
        return {"feature": self.feature, "text": self.text, "explainer": self.explainer,
                "settings": self.settings, "prompt": self.prompt, "pattern": self.pattern}  # fmt: skip

    @classmethod
    def from_json(cls, obj: Any, where: str = "explanation") -> Explanation:
        """Rebuild from :meth:`to_json`'s dict; raises :class:`ExplainError` naming ``where``."""
        d = _fields(obj, where, {"feature": int, "text": str, "explainer": str, "settings": dict})
        prompt, pattern = obj.get("prompt"), obj.get("pattern")
        if prompt is not None and not (isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt)):
            raise ExplainError(f"{where}: 'prompt' must be a list of chat messages or null")
        if pattern is not None and not isinstance(pattern, dict):
            raise ExplainError(f"{where}: 'pattern' must be an object or null")
        return cls(prompt=prompt, pattern=pattern, **d)


@dataclass(frozen=True)
class Score:
    """One scorer's verdict on one explanation."""

    feature: int
    """Index of the feature whose explanation was scored."""
    scorer: str
    """``"detection"``, ``"fuzzing"`` or ``"simulation"``."""
    value: float
    """The headline number: balanced accuracy (detection, fuzzing) or Pearson r (simulation)."""
    details: dict[str, Any]
    """Everything else: accuracy, precision, recall, F1, counts, the simulator and its settings."""
    seed: int
    """Seed of the scorer's shuffles and random markings (0 where nothing is drawn)."""
    prompts: list[dict[str, Any]]
    """Each LLM call as ``{"messages": [...], "reply": "..."}``; empty for offline simulators."""
    explanation_text: str
    """The explanation scored."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_json` reads it back."""
        return {"feature": self.feature, "scorer": self.scorer, "value": self.value, "details": self.details,
                "seed": self.seed, "prompts": self.prompts, "explanation_text": self.explanation_text}  # fmt: skip

    @classmethod
    def from_json(cls, obj: Any, where: str = "score") -> Score:
        """Rebuild from :meth:`to_json`'s dict; raises :class:`ExplainError` naming ``where``."""
        types = {"feature": int, "scorer": str, "value": (int, float), "details": dict, "seed": int,
                 "prompts": list, "explanation_text": str}  # fmt: skip
        d = _fields(obj, where, types)
        d["value"] = float(d["value"])
        return cls(**d)


def _fields(obj: Any, where: str, types: dict[str, Any]) -> dict[str, Any]:
    """The typed fields of a JSON object, or an error naming the first missing or mistyped one."""
    if not isinstance(obj, dict):
        raise ExplainError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    out = {}
    for key, typ in types.items():
        if key not in obj:
            raise ExplainError(f"{where}: missing field {key!r}")
        if not isinstance(obj[key], typ) or isinstance(obj[key], bool):
            raise ExplainError(f"{where}: field {key!r} has type {type(obj[key]).__name__}")
        out[key] = obj[key]
    return out


@dataclass(frozen=True)
class Judged(Generic[T]):
    """A simulator's answer, with the LLM exchange behind it (``None`` for offline simulators)."""

    value: T
    """The answer: a yes/no, or per-token activations in [0, 1]."""
    prompt: list[dict[str, str]] | None = None
    """The chat messages sent."""
    reply: str | None = None
    """The model's raw reply."""


class Explainer(Protocol):
    """Writes an explanation of one feature from its activating examples."""

    name: str

    def explain(self, feature: int, examples: Sequence[Example]) -> Explanation:
        """Explain ``feature`` from ``examples`` (windows where it fires)."""
        ...


class Simulator(Protocol):
    """Predicts a feature's behaviour from an explanation alone; the scorers' judge.

    None of the methods sees the true activations.
    """

    name: str

    def settings(self) -> dict[str, Any]:
        """What determines the answers (model, temperature, seed); stored in each Score."""
        ...

    def detect(self, explanation: Explanation, tokens: Sequence[str]) -> Judged[bool]:
        """Does the feature fire anywhere in ``tokens``?"""
        ...

    def judge_marking(
        self, explanation: Explanation, tokens: Sequence[str], marked: Sequence[int]
    ) -> Judged[bool]:
        """Are the tokens at positions ``marked`` the ones the explanation describes?"""
        ...

    def simulate(self, explanation: Explanation, tokens: Sequence[str]) -> Judged[list[float]]:
        """The predicted activation of each token, in [0, 1]."""
        ...


def mark(tokens: Sequence[str], positions: Sequence[int], values: Sequence[int] | None = None) -> str:
    """The text with the tokens at ``positions`` put in ``<<...>>``.

    Without ``values``, a run of neighbouring marked tokens shares one pair of markers
    (``The<< big cat>> sat``); with ``values`` (one per position) each marked token gets its own
    markers followed by its value in brackets (``The<< cat>>(7) sat``).
    """
    where = set(positions)
    value_of = dict(zip(positions, values)) if values is not None else {}
    out: list[str] = []
    for i, tok in enumerate(tokens):
        if i not in where:
            out.append(tok)
        elif values is not None:
            out.append(f"{MARK_OPEN}{tok}{MARK_CLOSE}({value_of[i]})")
        else:
            opens = i - 1 not in where
            closes = i + 1 not in where
            out.append(f"{MARK_OPEN if opens else ''}{tok}{MARK_CLOSE if closes else ''}")
    return "".join(out)
