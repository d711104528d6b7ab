"""The LLM-backed explainer and judge, over any OpenAI-compatible endpoint.

:class:`LLMExplainer` (after delphi's default explainer and Bills et al. 2023, "Language models
can explain neurons in language models"):

1. keeps the ``max_examples`` examples with the largest max activation (stable order);
2. shows them with their activating tokens marked ``<<token>>(v)`` (see :mod:`.prompts`);
3. takes the explanation from the reply's ``Explanation:`` line;
4. stores the exact messages and the settings (model, temperature, seed, ...) in the Explanation.

:class:`LLMSimulator` asks the same endpoint, one request per text, the three questions of
:class:`~mechscope.explain.Simulator`: detection (yes/no), marking (yes/no) and per-token
simulation (0-10 per token, validated). Every answer carries its messages and the raw reply,
which the scorers store in each :class:`~mechscope.explain.Score`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import Example, ExplainError, Explanation, Judged
from .client import ChatClient, LLMConfig
from .prompts import (
    detect_messages,
    explain_messages,
    marking_messages,
    parse_explanation,
    parse_simulation,
    parse_yes_no,
    simulate_messages,
)


class LLMExplainer:
    """Explanations written by an LLM from marked examples."""

    name = "llm"

    def __init__(self, config: LLMConfig, max_examples: int = 20, show_activations: bool = True) -> None:
        self.client = ChatClient(config)
        self.max_examples = max_examples
        self.show_activations = show_activations

    def settings(self) -> dict[str, Any]:
        """The endpoint's settings plus the prompt's."""
        return {**self.client.config.settings(), "max_examples": self.max_examples,
                "show_activations": self.show_activations}  # fmt: skip

    def explain(self, feature: int, examples: Sequence[Example]) -> Explanation:
        """Ask the LLM to explain ``feature`` from ``examples``."""
        shown = sorted(examples, key=lambda ex: -ex.max_activation)[: self.max_examples]
        if not any(ex.active_positions() for ex in shown):
            raise ExplainError(
                f"feature {feature}: no example has an active token, so there is nothing to explain"
            )
        messages = explain_messages(shown, self.show_activations)
        text = parse_explanation(self.client.complete(messages))
        return Explanation(feature, text, self.name, settings=self.settings(), prompt=messages)


class LLMSimulator:
    """The scorers' judge, asked through an LLM (one request per text)."""

    name = "llm"

    def __init__(self, config: LLMConfig) -> None:
        self.client = ChatClient(config)

    def settings(self) -> dict[str, Any]:
        """The endpoint's settings (model, temperature, seed, ...)."""
        return self.client.config.settings()

    def detect(self, explanation: Explanation, tokens: Sequence[str]) -> Judged[bool]:
        """Ask whether the feature fires anywhere in ``tokens``."""
        messages = detect_messages(explanation.text, tokens)
        reply = self.client.complete(messages)
        return Judged(parse_yes_no(reply), messages, reply)

    def judge_marking(
        self, explanation: Explanation, tokens: Sequence[str], marked: Sequence[int]
    ) -> Judged[bool]:
        """Ask whether the marked tokens are the ones the explanation describes."""
        messages = marking_messages(explanation.text, tokens, marked)
        reply = self.client.complete(messages)
        return Judged(parse_yes_no(reply), messages, reply)

    def simulate(self, explanation: Explanation, tokens: Sequence[str]) -> Judged[list[float]]:
        """Ask for each token's activation (0-10, returned scaled to [0, 1])."""
        messages = simulate_messages(explanation.text, tokens)
        reply = self.client.complete(messages)
        return Judged(parse_simulation(reply, len(tokens)), messages, reply)
