"""Scorers on planted features: the right explanation scores high, another feature's scores chance."""

from __future__ import annotations

import math

import pytest
import stub_llm
from planted import windows

from mechscope.explain import (
    Example,
    ExplainError,
    Explanation,
    LLMConfig,
    LLMSimulator,
    PatternSimulator,
    TokenPatternExplainer,
    detection,
    fuzzing,
    load_scores,
    save_scores,
    simulation,
)


@pytest.fixture(scope="module")
def cat():
    """The " cat"-after-" the" feature: its explanation from training windows, and held-out windows."""
    train, _ = windows("cat_after_the", 60, 0, seed=10)
    pos, neg = windows("cat_after_the", 100, 100, seed=11)
    return TokenPatternExplainer().explain(0, train), pos, neg


@pytest.fixture(scope="module")
def dog_explanation():
    """The explanation of a different planted feature (" dog"), used as a shuffled explanation."""
    return TokenPatternExplainer().explain(0, windows("dog", 60, 0, seed=12)[0])


def test_the_right_explanation_scores_high(cat):
    e, pos, neg = cat
    sim = PatternSimulator()
    d, f, s = detection(e, pos, neg, sim, seed=0), fuzzing(e, pos, sim, seed=0), simulation(e, pos + neg, sim)
    assert d.value >= 0.9 and f.value >= 0.9 and s.value >= 0.8
    assert d.details["n"] == 200 and f.details["n"] == 200 and s.details["n_tokens"] == 200 * 16
    assert (d.scorer, f.scorer, s.scorer) == ("detection", "fuzzing", "simulation")
    assert d.prompts == [] and d.details["simulator"] == "pattern" and d.explanation_text == e.text


def test_half_right_explanation_loses_detection(cat):
    # the same tokens without the required context: the negatives holding " cat" elsewhere fool it
    e, pos, neg = cat
    assert e.pattern is not None
    loose = Explanation(0, 'fires on " cat"', "hand", pattern={**e.pattern, "require_previous": False})
    assert sum(" cat" in ex.tokens for ex in neg) > 30
    d = detection(loose, pos, neg, PatternSimulator())
    assert d.details["recall"] == 1.0 and d.value < 0.85


def test_another_features_explanation_scores_chance(cat, dog_explanation):
    _, pos, neg = cat
    sim = PatternSimulator()
    d = detection(dog_explanation, pos, neg, sim, seed=0)
    f = fuzzing(dog_explanation, pos, sim, seed=0)
    s = simulation(dog_explanation, pos + neg, sim)
    assert abs(d.value - 0.5) <= 0.15 and abs(f.value - 0.5) <= 0.15
    assert abs(s.value) < 0.2


class Recording(PatternSimulator):
    """The pattern judge, remembering every marking it was shown."""

    def __init__(self) -> None:
        self.seen: list[tuple[tuple[str, ...], list[int]]] = []

    def judge_marking(self, explanation, tokens, marked):
        self.seen.append((tuple(tokens), list(marked)))
        return super().judge_marking(explanation, tokens, marked)


def test_fuzzing_marks_the_active_tokens_or_as_many_inactive_ones(cat):
    e, pos, _ = cat
    rec = Recording()
    fuzzing(e, pos[:20], rec, seed=3)
    active = {ex.tokens: ex.active_positions() for ex in pos[:20]}
    right = [m for t, m in rec.seen if m == active[t]]
    wrong = [(t, m) for t, m in rec.seen if m != active[t]]
    assert len(right) == len(wrong) == 20
    assert all(len(m) == len(active[t]) and not set(m) & set(active[t]) for t, m in wrong)
    assert rec.seen[:2] != [(pos[0].tokens, active[pos[0].tokens])] * 2  # shuffled, not paired in order
    other = Recording()
    fuzzing(e, pos[:20], other, seed=4)
    assert other.seen != rec.seen
    again = Recording()
    fuzzing(e, pos[:20], again, seed=3)
    assert again.seen == rec.seen


def test_simulation_of_a_constant_is_zero_with_a_note(cat):
    _, pos, neg = cat
    never = Explanation(0, 'fires on " zebra"', "hand",
                        pattern={"tokens": [" zebra"], "previous": [], "require_previous": False})  # fmt: skip
    s = simulation(never, pos + neg, PatternSimulator())
    assert s.value == 0.0 and not math.isnan(s.value) and "constant" in s.details["note"]


def test_inputs_are_checked(cat):
    e, pos, _ = cat
    sim = PatternSimulator()
    with pytest.raises(ExplainError, match="negative 0"):
        detection(e, pos, [pos[0]], sim)
    with pytest.raises(ExplainError, match="activating and non-activating"):
        detection(e, pos, [], sim)
    with pytest.raises(ExplainError, match="no"):
        fuzzing(e, [Example((" a",), (0.0,))], sim)


def test_llm_scorers_end_to_end(tmp_path):
    # the stub judges literally by the explanation's first quoted token (see stub_llm.rule_judge)
    train, _ = windows("dog", 40, 0, seed=20)
    pos, neg = windows("dog", 12, 12, seed=21)
    e = TokenPatternExplainer().explain(9, train)
    with stub_llm.serve(stub_llm.rule_judge()) as stub:
        cfg = LLMConfig(f"{stub.url}/v1", "judge-model", seed=5, max_retries=0)
        sim = LLMSimulator(cfg)
        d, f, s = detection(e, pos, neg, sim, seed=7), fuzzing(e, pos, sim, seed=7), simulation(e, pos, sim)
        d_again = detection(e, pos, neg, sim, seed=7)
        d_other = detection(e, pos, neg, sim, seed=8)
    assert d.value == 1.0 and f.value == 1.0 and s.value >= 0.8
    assert len(stub.requests) == 24 + 24 + 12 + 24 + 24
    assert len(d.prompts) == 24 and len(f.prompts) == 24 and len(s.prompts) == 12
    assert d.prompts[0]["messages"] == stub.requests[0]["body"]["messages"]
    assert d.prompts[0]["reply"] in ("yes", "no") and e.text in d.prompts[0]["messages"][-1]["content"]
    assert d.seed == 7 and d.details["simulator"] == "llm"
    assert d.details["simulator_settings"] == {"base_url": f"{stub.url}/v1", "model": "judge-model",
                                               "temperature": 0.0, "seed": 5, "max_tokens": 512}  # fmt: skip
    assert d_again.prompts == d.prompts and d_other.prompts != d.prompts
    assert all(r["body"]["seed"] == 5 and r["body"]["model"] == "judge-model" for r in stub.requests)
    path = save_scores(tmp_path / "scores.json", [d, f, s])
    assert load_scores(path) == [d, f, s]
