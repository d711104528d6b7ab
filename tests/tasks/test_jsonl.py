"""JSON Lines tasks: round trip, one clear error per malformed line, tokenisation errors by example."""

from __future__ import annotations

import json

import pytest
import torch

import mechscope
from mechscope.errors import MechscopeError
from mechscope.tasks import Task, TaskError, evaluate, prepare
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
            '{"clean": "a", "corrupted": "b", "answer": 7.0, "wrong": " y"}',
            "'answer' must be a non-empty string, a non-negative integer token id",
        ),
        ('{"clean": [], "corrupted": [1], "answer": 1, "wrong": 2}', r"'clean' must be .*got \[\]"),
        ('{"clean": [1, 2], "corrupted": [], "answer": 1, "wrong": 2}', r"'corrupted' must be .*got \[\]"),
        ('{"clean": [1], "corrupted": [2], "answer": [], "wrong": 2}', r"'answer' must be .*got \[\]"),
        (
            '{"clean": [1, true], "corrupted": [1, 2], "answer": 1, "wrong": 2}',
            "'clean' entry 1 is true; .*not booleans",
        ),
        (
            '{"clean": [1], "corrupted": [2], "answer": false, "wrong": 2}',
            "'answer' is false; .*not booleans",
        ),
        (
            '{"clean": [1], "corrupted": [2], "answer": 1, "wrong": [2, true]}',
            "'wrong' entry 1 is true; .*not booleans",
        ),
        (
            '{"clean": [1, -3], "corrupted": [1, 2], "answer": 1, "wrong": 2}',
            "'clean' entry 1 is -3; .*non-negative",
        ),
        ('{"clean": [1], "corrupted": [2], "answer": -1, "wrong": 2}', "'answer' is -1; .*non-negative"),
        (
            '{"clean": [1], "corrupted": [2], "answer": 1, "wrong": [0, -2]}',
            "'wrong' entry 1 is -2; .*non-negative",
        ),
        (
            '{"clean": [1, 2.0], "corrupted": [1, 2], "answer": 1, "wrong": 2}',
            "'clean' entry 1 is 2.0; 'clean' must be",
        ),
        (
            '{"clean": [1, "2"], "corrupted": [1, 2], "answer": 1, "wrong": 2}',
            "'clean' entry 1 is '2'; 'clean' must be",
        ),
        (
            '{"clean": [1, 2], "corrupted": "a b", "answer": 1, "wrong": 2}',
            "'clean' is token ids but 'corrupted' is text",
        ),
        (
            '{"clean": "a b", "corrupted": [1, 2], "answer": " x", "wrong": 2}',
            "'clean' is text but 'corrupted' is token ids",
        ),
        ('{"clean": [1], "corrupted": [2], "answer": [1, " x"], "wrong": 2}', "'answer' must be"),
        (
            '{"clean": [1], "corrupted": [2], "answer": [3, 4, 3], "wrong": 2}',
            "'answer' must be .*has repeats",
        ),
        ('{"clean": "a", "corrupted": "b", "answer": " x", "wrong": []}', "'wrong' must be a non-empty"),
        ('{"clean": "a", "corrupted": "b", "answer": [" x", 2], "wrong": " y"}', "'answer' must be"),
        (
            '{"clean": "a", "corrupted": "b", "answer": [" x", " x"], "wrong": " y"}',
            "'answer' must be .*has repeats",
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


def test_a_token_id_task_round_trips(tmp_path):
    task = Task(
        "ids",
        ((5, 6, 7), "The cat", (0,)),
        ((5, 6, 8), "The dog", (3,)),
        (7, (" cat", " a"), (1, 2, 0)),
        ((8, 9), 4, " dog"),
    )
    path = save_jsonl(task, tmp_path / "ids.jsonl")
    assert [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] == [
        {"clean": [5, 6, 7], "corrupted": [5, 6, 8], "answer": 7, "wrong": [8, 9]},
        {"clean": "The cat", "corrupted": "The dog", "answer": [" cat", " a"], "wrong": 4},
        {"clean": [0], "corrupted": [3], "answer": [1, 2, 0], "wrong": " dog"},
    ]
    back = load_jsonl(path)
    assert (back.clean, back.corrupted, back.answers, back.wrong) == (
        task.clean,
        task.corrupted,
        task.answers,
        task.wrong,
    )
    assert isinstance(back.clean[0], tuple) and isinstance(back.answers[0], int)


def test_save_writes_tensor_and_list_ids_as_integers(tmp_path):
    task = Task("t", (torch.tensor([3, 1, 4]),), ([2, 7, 1],), (torch.tensor(5),), ([6, torch.tensor(0)],))
    back = load_jsonl(save_jsonl(task, tmp_path / "t.jsonl"))
    assert (back.clean, back.corrupted, back.answers, back.wrong) == (
        ((3, 1, 4),),
        ((2, 7, 1),),
        (5,),
        ((6, 0),),
    )


@pytest.mark.parametrize(
    "example, message",
    [
        ({"clean": ()}, r"'clean' must be .*got \[\]"),
        ({"corrupted": "The dog"}, "'clean' is token ids but 'corrupted' is text"),
        ({"clean": (5, -1)}, "'clean' entry 1 is -1; token ids must be non-negative"),
        ({"answers": True}, "'answer' is true; token ids are integers, not booleans"),
        ({"wrong": (8, 8)}, "'wrong' must be .*has repeats"),
        ({"wrong": (8, " dog")}, "'wrong' must be"),
        ({"answers": ()}, r"'answer' must be .*got \[\]"),
        ({"answers": 7.0}, "'answer' must be .*got 7.0"),
        ({"clean": (5, 6.5)}, "'clean' entry 1 is 6.5"),
    ],
)
def test_save_refuses_what_jsonl_cannot_hold(tmp_path, example, message):
    fields = {"clean": (5, 6, 7), "corrupted": (5, 6, 8), "answers": 7, "wrong": 8, **example}
    good = ("The cat", "The dog", " cat", " dog")
    task = Task(
        "ids", *((good[k], fields[f]) for k, f in enumerate(("clean", "corrupted", "answers", "wrong")))
    )
    with pytest.raises(TaskError, match=rf"task 'ids', example 1: {message}"):
        save_jsonl(task, tmp_path / "ids.jsonl")
    assert not (tmp_path / "ids.jsonl").exists()


def test_mixed_text_and_id_lines_prepare(tmp_path, words):
    ids = prepare(words, load_jsonl(_write(tmp_path, json.dumps(ROWS[0])))).clean.tokens[0].tolist()
    answer = words.to_tokens(" cat", prepend_bos=False)[0].tolist()
    row = {"clean": ids, "corrupted": [*ids[:-1], answer[0]], "answer": answer[0], "wrong": [answer[0] + 1]}
    task = load_jsonl(_write(tmp_path, json.dumps(ROWS[0]) + "\n" + json.dumps(row)))
    data = prepare(words, task)
    assert data.clean.tokens[0].equal(data.clean.tokens[1])
    assert data.answer_ids[:, 0].tolist() == [answer[0]] * 2


def test_an_id_task_runs_on_a_model_without_a_tokenizer(tmp_path):
    from mechscope.toys.compiled import COMPILED

    model = mechscope.load_model("toy/compiled_induction", device="cpu")
    assert model.tokenizer is None and model.cfg.d_vocab == 8
    truth = COMPILED["compiled_induction"]()[1]
    clean = truth.sample(6, torch.Generator().manual_seed(0))
    corrupted = truth.sample(6, torch.Generator().manual_seed(1))
    answers = truth.algorithm(clean)[:, -1]
    rows = [
        {
            "clean": clean[i].tolist(),
            "corrupted": corrupted[i].tolist(),
            "answer": int(answers[i]),
            "wrong": [t for t in range(8) if t != int(answers[i])][:2],
        }
        for i in range(6)
    ]
    task = load_jsonl(_write(tmp_path, "\n".join(json.dumps(r) for r in rows), "induct.jsonl"))
    assert task.clean[0] == tuple(clean[0].tolist()) and task.answers[0] == int(answers[0])
    data = prepare(model, task)
    assert data.clean.tokens.equal(clean) and data.corrupted.tokens.equal(corrupted)
    assert bool(data.clean.attention_mask.all())
    assert data.answer_ids[:, 0].equal(answers) and bool(data.answer_mask.all())
    assert data.wrong_ids.tolist() == [r["wrong"] for r in rows]
    result = evaluate(model, data)
    assert result.n == 6 and result.clean_accuracy == 1.0 and result.clean_top1 == 1.0
    with pytest.raises(TaskError, match="example 0: answer id 8 is outside the vocabulary"):
        prepare(model, load_jsonl(_write(tmp_path, json.dumps({**rows[0], "answer": 8}), "bad.jsonl")))
    with pytest.raises(MechscopeError, match="no tokenizer"):
        prepare(model, load_jsonl(_write(tmp_path, json.dumps(ROWS[0]), "text.jsonl")))


def test_a_builtin_task_survives_the_round_trip(tmp_path, words):
    task = greater_than(words, n=4, seed=2)
    back = load_jsonl(save_jsonl(task, tmp_path / "gt.jsonl"), name=task.name, metric=task.metric)
    a, b = prepare(words, task), prepare(words, back)
    for field in ("answer_ids", "answer_mask", "wrong_ids", "wrong_mask"):
        assert getattr(a, field).equal(getattr(b, field)), field
    assert a.clean.tokens.equal(b.clean.tokens) and a.corrupted.tokens.equal(b.corrupted.tokens)
