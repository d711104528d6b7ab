"""The offline explainer finds planted features, and its judge applies the pattern it wrote."""

from __future__ import annotations

import pytest
from planted import windows

from mechscope.explain import (
    Example,
    ExplainError,
    PatternConfig,
    PatternSimulator,
    TokenPatternExplainer,
    mark,
)


def test_finds_a_context_dependent_feature():
    pos, _ = windows("cat_after_the", 60, 0, seed=1)
    e = TokenPatternExplainer().explain(7, pos)
    assert e.feature == 7 and e.explainer == "token-pattern"
    assert e.pattern is not None
    assert e.pattern["tokens"] == [" cat"]
    assert e.pattern["previous"] == [" the"] and e.pattern["require_previous"] is True
    assert e.pattern["precision"] == 1.0
    assert e.text == 'fires on " cat" after " the"'
    assert e.settings == PatternConfig().__dict__
    assert e.prompt is None


def test_a_token_feature_needs_no_context():
    pos, _ = windows("dog", 60, 0, seed=2)
    e = TokenPatternExplainer().explain(3, pos)
    assert e.pattern == {"tokens": [" dog"], "previous": [], "require_previous": False, "coverage": 1.0,
                         "precision": 1.0}  # fmt: skip
    assert e.text == 'fires on " dog"'


def test_a_token_that_is_everywhere_ranks_below_a_precise_one():
    # " the" fills 40% of each window and fires on 20% of them: more activation mass than " cat",
    # but a fifth of the precision; ranked by mass alone it would come first.
    pos, _ = windows("cat_and_some_the", 60, 0, seed=3, length=20, the_share=0.4)
    mass = {
        t: sum(a for ex in pos for tok, a in zip(ex.tokens, ex.activations) if tok == t)
        for t in (" cat", " the")
    }
    assert mass[" the"] > mass[" cat"]
    e = TokenPatternExplainer().explain(0, pos)
    assert e.pattern is not None and e.pattern["tokens"][0] == " cat"


def test_often_after_is_mentioned_but_not_required():
    # " dog" fires everywhere, but most of the windows put " big" before it.
    exs = [Example((" big", " dog", " sat"), (0, 2, 0))] * 4 + [Example((" a", " dog", " ran"), (0, 2, 0))]
    e = TokenPatternExplainer().explain(0, exs)
    assert e.pattern is not None and e.pattern["previous"] == [" big"] and not e.pattern["require_previous"]
    assert e.text == 'fires on " dog" (often after " big")'


def test_deterministic():
    pos, _ = windows("cat_after_the", 40, 0, seed=4)
    assert TokenPatternExplainer().explain(1, pos) == TokenPatternExplainer().explain(1, list(pos))


def test_no_active_token_is_an_error():
    with pytest.raises(ExplainError, match="no example has an active token"):
        TokenPatternExplainer().explain(5, [Example((" a", " b"), (0.0, 0.0))])


def test_pattern_simulator_applies_the_previous_token():
    pos, _ = windows("cat_after_the", 30, 0, seed=5)
    e = TokenPatternExplainer().explain(0, pos)
    sim = PatternSimulator()
    tokens = [" cat", " the", " cat", " a", " cat"]
    assert sim.simulate(e, tokens).value == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert sim.detect(e, tokens).value and not sim.detect(e, [" a", " cat"]).value
    assert sim.judge_marking(e, tokens, [2]).value and not sim.judge_marking(e, tokens, [0]).value
    assert not sim.judge_marking(e, tokens, []).value


def test_pattern_simulator_needs_a_pattern():
    from mechscope.explain import Explanation

    free = Explanation(0, "cats", "llm")
    with pytest.raises(ExplainError, match="LLMSimulator"):
        PatternSimulator().detect(free, [" cat"])


def test_example_checks_lengths_and_mark_formats():
    with pytest.raises(ExplainError, match="one activation per token"):
        Example((" a", " b"), (1.0,))
    ex = Example([" The", " big", " cat", " sat"], [0, 1, 2, 0])
    assert ex.active_positions() == [1, 2] and ex.max_activation == 2.0 and ex.text == " The big cat sat"
    assert mark(ex.tokens, [1, 2]) == " The<< big cat>> sat"
    assert mark(ex.tokens, [1, 3]) == " The<< big>> cat<< sat>>"
    assert mark(ex.tokens, [1, 2], [5, 10]) == " The<< big>>(5)<< cat>>(10) sat"
