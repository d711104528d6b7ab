"""The prompts sent to an LLM and the parsers of its replies.

Formats, in the style of delphi and OpenAI's automated interpretability:

* **explain**: each example's text with its activating tokens marked ``<<token>>(v)``, ``v`` the
  activation on a 0-10 scale (10 = the largest activation shown); the reply ends with a line
  ``Explanation: ...``, whose text is kept (the last non-empty line when there is none);
* **detect** / **judge marking**: the explanation and one text (marked ``<<...>>`` for marking);
  the reply's first word is ``yes`` or ``no``;
* **simulate**: the explanation and the tokens one per line as ``index<TAB>"token"`` (JSON strings,
  so spaces show); the reply is one line per token, ``index<TAB>value`` with ``value`` in 0-10,
  checked for count, order and range.

A reply that does not parse raises :class:`~mechscope.explain.LLMError` quoting the reply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from .base import Example, mark
from .client import EXCERPT, LLMError

Messages = list[dict[str, str]]

EXPLAIN_SYSTEM = (
    "You are studying one feature of a language model: a unit that activates on some tokens of text. "
    "You will see text examples in which it activates. Each token on which it activates is marked "
    "<<like this>>{values}. Work out what the marked tokens have in common: which tokens, and in which "
    "contexts. You may reason briefly first; end your reply with one line of the form\n"
    "Explanation: <one short sentence saying what the feature fires on>"
)
JUDGE_SYSTEM = (
    "You check explanations of features of a language model. A feature activates on some tokens of "
    "text; an explanation says which ones. {task} Answer with one word: yes or no."
)
DETECT_TASK = "Given a text, say whether the feature described activates on any of its tokens."
MARKING_TASK = (
    "Some tokens of the text are marked <<like this>>. Say whether the marked tokens are the ones on "
    "which the feature described activates."
)
SIMULATE_SYSTEM = (
    "You predict how strongly a feature of a language model activates on each token of a text, from "
    "an explanation of the feature. Activations run from 0 (does not activate) to 10 (activates as "
    "strongly as it ever does); most tokens are usually 0."
)


def explain_messages(examples: Sequence[Example], show_activations: bool) -> Messages:
    """The explainer's chat messages for ``examples``."""
    top = max((ex.max_activation for ex in examples), default=0.0)
    lines = []
    for n, ex in enumerate(examples, 1):
        pos = ex.active_positions()
        values = (
            [max(1, round(10 * ex.activations[i] / top)) for i in pos]
            if show_activations and top > 0
            else None
        )
        lines.append(f"Example {n}: {mark(ex.tokens, pos, values)}")
    hint = ", followed by its activation in brackets on a scale from 0 to 10" if show_activations else ""
    return [
        {"role": "system", "content": EXPLAIN_SYSTEM.format(values=hint)},
        {"role": "user", "content": "\n".join(lines) + "\n\nWhat does this feature fire on?"},
    ]


def parse_explanation(reply: str) -> str:
    """The text after the last ``Explanation:`` (or the reply's last non-empty line), stripped."""
    at = reply.lower().rfind("explanation:")
    rest = reply[at + len("explanation:") :] if at >= 0 else reply
    lines = [ln.strip() for ln in rest.splitlines() if ln.strip()]
    text = (lines[0] if at >= 0 else lines[-1]) if lines else ""
    text = text.strip("*` ")
    if len(text) > 1 and text[0] == text[-1] == '"' and text.count('"') == 2:  # the whole sentence quoted
        text = text[1:-1].strip()
    if not text:
        raise LLMError(f"the model's reply holds no explanation: {reply[:EXCERPT]!r}")
    return text


def detect_messages(explanation: str, tokens: Sequence[str]) -> Messages:
    """Ask whether the feature fires anywhere in ``tokens``."""
    return _judge(DETECT_TASK, explanation, "".join(tokens),
                  "Does the feature activate on any token of this text? Answer yes or no.")  # fmt: skip


def marking_messages(explanation: str, tokens: Sequence[str], marked: Sequence[int]) -> Messages:
    """Ask whether the tokens at ``marked`` are the ones the explanation describes."""
    return _judge(MARKING_TASK, explanation, mark(tokens, marked),
                  "Are the marked tokens the ones the explanation describes? Answer yes or no.")  # fmt: skip


def _judge(task: str, explanation: str, text: str, question: str) -> Messages:
    return [
        {"role": "system", "content": JUDGE_SYSTEM.format(task=task)},
        {"role": "user", "content": f"Explanation: {explanation}\n\nText:\n{text}\n\n{question}"},
    ]


def parse_yes_no(reply: str) -> bool:
    """``True`` for a reply whose first word is yes, ``False`` for no; an :class:`LLMError` otherwise."""
    words = re.findall(r"[a-z]+", reply.lower())
    if not words or words[0] not in ("yes", "no"):
        raise LLMError(f"expected a reply starting with yes or no, got {reply[:EXCERPT]!r}")
    return words[0] == "yes"


def simulate_messages(explanation: str, tokens: Sequence[str]) -> Messages:
    """Ask for a 0-10 activation per token, one ``index<TAB>value`` line each."""
    listing = "\n".join(f"{i}\t{json.dumps(t, ensure_ascii=False)}" for i, t in enumerate(tokens))
    user = (
        f"Explanation: {explanation}\n\nTokens (index, tab, the token as a JSON string):\n{listing}\n\n"
        f"Reply with exactly {len(tokens)} lines, one per token in order, each the token's index, a tab, "
        "and its activation as an integer from 0 to 10. Write nothing else."
    )
    return [{"role": "system", "content": SIMULATE_SYSTEM}, {"role": "user", "content": user}]


def parse_simulation(reply: str, n: int) -> list[float]:
    """The ``n`` values of an ``index<TAB>value`` reply, scaled to [0, 1]; checked line by line."""
    lines = [
        ln.strip() for ln in reply.strip().splitlines() if ln.strip() and not ln.strip().startswith("```")
    ]
    if len(lines) != n:
        raise LLMError(
            f"simulation reply has {len(lines)} lines, expected one per token ({n}): {reply[:EXCERPT]!r}"
        )
    values = []
    for i, line in enumerate(lines):
        parts = line.split()
        try:
            index, value = int(parts[0]), float(parts[1])
            ok = len(parts) == 2 and index == i and 0.0 <= value <= 10.0
        except (IndexError, ValueError):
            ok = False
        if not ok:
            raise LLMError(
                f"simulation reply line {i + 1} is {line!r}; expected '{i}<TAB>value' with value in 0-10"
            )
        values.append(value / 10.0)
    return values
