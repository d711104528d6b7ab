"""JSON Lines tasks: round trip, one clear error per malformed line, tokenisation errors by example."""

from __future__ import annotations

import json

import pytest

from mechscope.tasks import Task, TaskError, prepare
from mechscope.tasks.builtin import greater_than
from mechscope.tasks.jsonl import load_jsonl, save_jsonl
from tasks.test_builtin import word_model

ROWS = [
    {
        "clean": "The cat sat on the mat",
        "corrupted": "The dog sat on the mat",
        "answer": " cat",
        "wrong": " dog",
    },
    {"clean": "The dog ran away", "corrupted": "The cat ran away", "answer": [" dog", " a"], "wrong": " cat"},
]


def _write(tmp_path, text: str, name: str = "pairs.jsonl"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def words():
    return word_model()


def test_round_trip(tmp_path):
    task = Task(
        "pairs",
        ("When Mary and John went, John gave it to", "Année 17"),
        ("When Anna and Tom went, Paul gave it to", "Année 18"),
        (" Mary", ("3", "4", "5")),
        (" John", ("0", "1")),
    )
    path = save_jsonl(task, tmp_path / "sub" / "pairs.jsonl")
    assert [p.name for p in path.parent.iterdir()] == ["pairs.jsonl"]  # no temporary file left behind
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == [
        {"clean": task.clean[0], "corrupted": task.corrupted[0], "answer": " Mary", "wrong": " John"},
        {"clean": "Année 17", "corrupted": "Année 18", "answer": ["3", "4", "5"], "wrong": ["0", "1"]},
    ]
    back = load_jsonl(path, metric="prob_diff")
    assert (back.name, back.metric) == ("pairs", "prob_diff")
    assert (back.clean, back.corrupted, back.answers, back.wrong) == (
        task.clean,
        task.corrupted,
        task.answers,
        task.wrong,
    )
    assert load_jsonl(path, name="mine").name == "mine"


def test_blank_lines_are_skipped_and_order_is_kept(tmp_path, words):
    text = "\n" + json.dumps(ROWS[1]) + "\n\n   \n" + json.dumps(ROWS[0]) + "\n\n"
    task = load_jsonl(_write(tmp_path, text))
    assert task.clean == (ROWS[1]["clean"], ROWS[0]["clean"])
    assert task.answers == ((" dog", " a"), " cat")
    data = prepare(words, task)
    assert data.answer_mask.sum(1).tolist() == [2, 1]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"clean": "a", "corrupted": "b", "answer": " x", "wrong": " y"', r"invalid JSON \(Expecting"),
        ('["a", "b", " x", " y"]', "expected a JSON object .* got list"),
        ('"just text"', "expected a JSON object .* got str"),
        ('{"clean": "a", "corrupted": "b", "answer": " x"}', r"missing \['wrong'\] keys"),
        (
            '{"clean": "a", "corrupted": "b", "answer": " x", "wrong": " y", "note": 1}',
            r"unexpected \['note'\] keys",
        ),
        (
            '{"clean": 3, "corrupted": "b", "answer": " x", "wrong": " y"}',
            "'clean' must be a non-empty string",
        ),
        ('{"clean": "a", "corrupted": "", "answer": " x", "wrong": " y"}', "'corrupted' must be a non-empty"),
        (
            '{"clean": "a", "corrupted": "b", "answer": 7, "wrong": " y"}',
            "'answer' must be a non-empty string",
        ),
        ('{"clean": "a", "corrupted": "b", "answer": " x", "wrong": []}', "'wrong' must be a non-empty"),
        ('{"clean": "a", "corrupted": "b", "answer": [" x", 2], "wrong": " y"}', "'answer' must be"),
        (
            '{"clean": "a", "corrupted": "b", "answer": [" x", " x"], "wrong": " y"}',
            "'answer' must be .*distinct",
        ),
    ],
)
def test_each_bad_line_names_the_file_and_line(tmp_path, line, message):
    good = json.dumps(ROWS[0])
    path = _write(tmp_path, f"{good}\n\n{good}\n{line}\n{good}\n")  # the bad line is line 4
    with pytest.raises(TaskError, match=rf"pairs\.jsonl, line 4: {message}"):
        load_jsonl(path)


@pytest.mark.parametrize("text", ["", "\n  \n\n"])
def test_an_empty_file_is_an_error(tmp_path, text):
    with pytest.raises(TaskError, match=r"pairs\.jsonl: no examples"):
        load_jsonl(_write(tmp_path, text))


def test_missing_file_and_unknown_metric(tmp_path):
    with pytest.raises(TaskError, match=r"cannot read task file .*nope\.jsonl"):
        load_jsonl(tmp_path / "nope.jsonl")
    path = _write(tmp_path, json.dumps(ROWS[0]))
    with pytest.raises(TaskError, match="unknown metric 'acc'"):
        load_jsonl(path, metric="acc")


def test_prepare_names_the_example_with_a_multi_token_answer(tmp_path, words):
    rows = [ROWS[0], {**ROWS[1], "answer": [" dog", " Mississippi river"]}]
    task = load_jsonl(_write(tmp_path, "\n".join(json.dumps(r) for r in rows)))
    with pytest.raises(TaskError, match=r"example 1: answer ' Mississippi river' is 2 tokens"):
        prepare(words, task)


def test_prepare_names_the_example_whose_lengths_differ(tmp_path, words):
    rows = [ROWS[0], ROWS[1], {**ROWS[1], "corrupted": "The cat ran away and sat on the mat"}]
    task = load_jsonl(_write(tmp_path, "\n\n".join(json.dumps(r) for r in rows)))
    with pytest.raises(TaskError, match=r"example 2: clean prompt has 4 tokens but corrupted has 9"):
        prepare(words, task)


def test_token_id_tasks_cannot_be_saved(tmp_path, words):
    ids = Task("ids", ((5, 6, 7),), ((5, 6, 8),), (7,), (8,))
    with pytest.raises(TaskError, match="example 0: the clean prompt is token ids"):
        save_jsonl(ids, tmp_path / "ids.jsonl")
    answer_ids = Task("ids", ("The cat",), ("The dog",), (7,), (" dog",))
    with pytest.raises(TaskError, match="holds token ids"):
        save_jsonl(answer_ids, tmp_path / "ids.jsonl")
    assert not (tmp_path / "ids.jsonl").exists()


def test_a_builtin_task_survives_the_round_trip(tmp_path, words):
    task = greater_than(words, n=4, seed=2)
    back = load_jsonl(save_jsonl(task, tmp_path / "gt.jsonl"), name=task.name, metric=task.metric)
    a, b = prepare(words, task), prepare(words, back)
    for field in ("answer_ids", "answer_mask", "wrong_ids", "wrong_mask"):
        assert getattr(a, field).equal(getattr(b, field)), field
    assert a.clean.tokens.equal(b.clean.tokens) and a.corrupted.tokens.equal(b.corrupted.tokens)
