"""Explanations and scores survive a JSON round trip; broken files fail loudly."""

from __future__ import annotations

import json

import pytest
from planted import windows

from mechscope.errors import ArtifactError, MechscopeError
from mechscope.explain import (
    Explanation,
    PatternSimulator,
    Score,
    TokenPatternExplainer,
    detection,
    load_explanations,
    load_scores,
    save_explanations,
    save_scores,
)


@pytest.fixture
def records():
    pos, neg = windows("dog", 20, 20, seed=0)
    e = TokenPatternExplainer().explain(2, pos)
    llm = Explanation(
        3, "cats", "llm", {"model": "m", "seed": 0}, prompt=[{"role": "user", "content": "<<x>>"}]
    )
    return [e, llm], [detection(e, pos, neg, PatternSimulator(), seed=1)]


def test_round_trip(tmp_path, records):
    explanations, scores = records
    save_explanations(tmp_path / "e.json", explanations)
    save_scores(tmp_path / "s.json", scores)
    assert load_explanations(tmp_path / "e.json") == explanations
    assert load_scores(tmp_path / "s.json") == scores
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.json", "s.json"]  # no temporary files left
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["kind"] == "mechscope-explanations" and doc["schema_version"] == 1


def test_truncated_file(tmp_path, records):
    path = save_explanations(tmp_path / "e.json", records[0])
    path.write_text(path.read_text()[:-40])
    with pytest.raises(ArtifactError, match="not valid JSON") as err:
        load_explanations(path)
    assert str(path) in str(err.value) and "truncated" in str(err.value)
    assert isinstance(err.value, MechscopeError)


def test_wrong_kind_and_bad_items(tmp_path, records):
    path = save_scores(tmp_path / "s.json", records[1])
    with pytest.raises(ArtifactError, match="expected a 'mechscope-explanations' file"):
        load_explanations(path)
    doc = json.loads(path.read_text())
    del doc["items"][0]["seed"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="item 0: missing field 'seed'"):
        load_scores(path)
    doc["items"][0]["seed"] = "zero"
    path.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="'seed' has type str"):
        load_scores(path)
    with pytest.raises(ArtifactError, match="no such file"):
        load_scores(tmp_path / "missing.json")


def test_score_json_is_plain(records):
    score = records[1][0]
    assert Score.from_json(json.loads(json.dumps(score.to_json()))) == score
