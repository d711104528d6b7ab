"""Built-in tasks: structure on real tokenizers, behaviour on SmolLM2, and loud errors.

Fast tests use a word-level GPT-2-style model built here (``word_model``): its tokenizer
encodes " 1732" as " 17" + "32", so greater-than's two-digit mode is exercised without
GPT-2's weights. Tests marked ``real`` use SmolLM2-135M and Gemma 3 270M.
"""

from __future__ import annotations

import re

import pytest
import torch

import mechscope
from mechscope.tasks import Task, TaskError, evaluate, prepare
from mechscope.tasks.builtin import (
    BUILTIN_TASKS,
    FACTS,
    IOI_TEMPLATES,
    factual_recall,
    greater_than,
    induction,
    ioi,
    make_task,
)

WORDS = (
    "The the a war siege voyage lasted from year to cat dog sat on mat ran away and went store "
    "Then Mary John gave drink"
)


def word_model(pattern: str = r" ?\d\d| ?[A-Za-z]+| ?[^\sA-Za-z\d]+") -> mechscope.HookedModel:
    """A random 1-layer GPT-2 whose word-level tokenizer knows ``WORDS``, " 17" and "00".."99".

    Unknown pieces become ``<unk>``; nothing is prepended (like GPT-2's tokenizer).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, GPT2Config, PreTrainedTokenizerFast

    pieces = ["<pad>", "<bos>", "<eos>", "<unk>", " 17"]
    pieces += [p for w in WORDS.split() for p in (w, " " + w)]
    pieces += [f"{y:02d}" for y in range(100)] + [".", ",", " ."]
    vocab = {p: i for i, p in enumerate(dict.fromkeys(pieces))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=1, n_head=2, n_positions=64)
    return mechscope.wrap(AutoModelForCausalLM.from_config(cfg), fast)


@pytest.fixture(scope="module")
def words() -> mechscope.HookedModel:
    return word_model()


# ------------------------------------------------------------------- fast: structure, errors


def test_greater_than_uses_two_digit_tokens_when_the_tokenizer_has_them(words):
    assert words.to_str_tokens("The war lasted from the year 1732")[-2:] == [" 17", "32"]
    task = greater_than(words, n=12, seed=3)
    assert task.metric == "prob_diff"
    data = prepare(words, task)
    everything = {f"{y:02d}" for y in range(100)}
    for i, prompt in enumerate(task.clean):
        match = re.fullmatch(r"The (\w+) lasted from the year 17(\d\d) to the year 17", prompt)
        assert match, prompt
        yy = match.group(2)
        assert 2 <= int(yy) <= 98
        assert all(isinstance(a, str) and int(a) > int(yy) for a in task.answers[i])
        assert all(isinstance(w, str) and int(w) <= int(yy) for w in task.wrong[i])
        assert set(task.answers[i]) | set(task.wrong[i]) == everything
        assert task.corrupted[i] == prompt.replace(f"17{yy} to", "1701 to")
        assert words.to_str_tokens(prompt)[task.positions["YY"][i]] == yy
        assert data.answer_mask[i].sum() == 99 - int(yy)
    assert len(set(task.clean)) > 1


def test_greater_than_refuses_a_tokenizer_that_keeps_years_whole():
    whole = word_model(r" ?\d+| ?[A-Za-z]+| ?[^\sA-Za-z\d]+")  # " 1732" is one (unknown) piece
    with pytest.raises(TaskError, match="neither into digits nor into two-digit tokens"):
        greater_than(whole)


def test_ioi_needs_single_token_names(words):
    with pytest.raises(TaskError, match="only 2 IOI names are single tokens"):
        ioi(words)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(order="AABB"), "order must be"),
        (dict(template=len(IOI_TEMPLATES)), "out of range"),
        (dict(template="Then, [A] and [B] went. [B] gave it to"), r"\[B\], \[A\], \[B\]"),
        (dict(template="Then, [B] and [A] went. [B] gave it to "), "end with whitespace"),
    ],
)
def test_ioi_rejects_bad_arguments(words, kwargs, message):
    with pytest.raises(TaskError, match=message):
        ioi(words, **kwargs)


def test_make_task_names_the_choices(words):
    assert set(BUILTIN_TASKS) == {"ioi", "factual", "induction", "greater_than"}
    with pytest.raises(
        TaskError, match="unknown task 'iol'; choose one of ioi, factual, induction, greater_than"
    ):
        make_task("iol", words)
    assert make_task("greater_than", words, n=3, seed=1) == greater_than(words, n=3, seed=1)


# ------------------------------------------------------------------- real tokenizers

_MODELS: dict[str, mechscope.HookedModel] = {}


def _load(name: str) -> mechscope.HookedModel:
    if name not in _MODELS:
        _MODELS[name] = mechscope.load_model(name, device="cpu")
    return _MODELS[name]


@pytest.fixture(scope="module")
def smol() -> mechscope.HookedModel:
    return _load("smollm2-135m")


@pytest.fixture(params=["smollm2-135m", "gemma3-270m"], scope="module")
def real(request) -> mechscope.HookedModel:
    return _load(request.param)


def _check_aligned(model, task: Task) -> None:
    data = prepare(model, task)  # raises on any clean/corrupted length mismatch or multi-token answer
    assert data.n == len(task)
    lengths = data.clean.attention_mask.sum(1)
    assert torch.equal(lengths, data.corrupted.attention_mask.sum(1))
    for key, pos in task.positions.items():  # prepare's padded positions land on the same tokens
        for i, p in enumerate(pos):
            unpadded = model.to_tokens(task.clean[i])[0] if isinstance(task.clean[i], str) else task.clean[i]
            assert data.clean.tokens[i, data.positions[key][i]] == int(unpadded[p]), (key, i)


@pytest.mark.real
def test_ioi_positions_point_at_the_names(real):
    task = ioi(real, n=12, seed=1)
    _check_aligned(real, task)
    assert len({len(real.to_tokens(p)[0]) for p in task.clean}) == 1  # one template: all aligned
    orders = []
    for i, prompt in enumerate(task.clean):
        toks, bad = real.to_str_tokens(prompt), real.to_str_tokens(task.corrupted[i])
        io, s1, s2 = (task.positions[k][i] for k in ("IO", "S1", "S2"))
        assert toks[io] == task.answers[i] and toks[s1] == toks[s2] == task.wrong[i]
        assert io != s1 and s1 < s2
        orders.append("ABBA" if io < s1 else "BABA")
        abc = {bad[io], bad[s1], bad[s2]}
        assert len(abc) == 3 and not abc & {task.answers[i], task.wrong[i]}
        assert [t for j, t in enumerate(toks) if j not in (io, s1, s2)] == [
            t for j, t in enumerate(bad) if j not in (io, s1, s2)
        ]
    assert orders == ["ABBA", "BABA"] * 6
    assert all(ioi(real, n=4, order="BABA").positions["IO"][i] > 0 for i in range(4))


@pytest.mark.real
def test_ioi_is_deterministic_and_seeded(smol):
    assert ioi(smol, n=8, seed=5) == ioi(smol, n=8, seed=5)
    assert ioi(smol, n=8, seed=5).clean != ioi(smol, n=8, seed=6).clean
    other = ioi(smol, n=4, template=1)
    assert all(p.startswith("When ") and p.endswith("decided to give it to") for p in other.clean)


@pytest.mark.real
def test_factual_positions_span_the_subject(real):
    task = factual_recall(real)
    _check_aligned(real, task)
    assert len(task) >= 40
    subjects = {tm.format(s): s for tm, facts in FACTS.values() for s, _ in facts}
    answers = {tm.format(s): a for tm, facts in FACTS.values() for s, a in facts}
    for i, prompt in enumerate(task.clean):
        toks = real.to_str_tokens(prompt)
        first, last = task.positions["subject_first"][i], task.positions["subject_last"][i]
        assert "".join(toks[first : last + 1]).strip() == subjects[prompt]
        assert first >= 1 and len(toks) - 1 - last >= 4  # words before the subject, several after
        partner = task.corrupted[i]
        assert partner != prompt and answers[partner] == task.wrong[i] != task.answers[i]
        assert len(real.to_tokens(partner)[0]) == len(toks)
    assert factual_recall(real, n=5) == task.subset(range(5))
    with pytest.raises(TaskError, match="usable facts"):
        factual_recall(real, n=len(task) + 1)


@pytest.mark.real
def test_induction_repeats_random_tokens(real):
    L = 8
    task = induction(real, n=6, seq_len=L, seed=2)
    _check_aligned(real, task)
    bos = real.to_tokens("x")[0].tolist()[:-1]  # what the tokenizer prepends: [bos] or []
    b = len(bos)
    for clean, bad, ans, wrong in zip(task.clean, task.corrupted, task.answers, task.wrong):
        r, r2 = list(clean[b : b + L]), list(bad[b : b + L])
        assert list(clean[:b]) == list(bad[:b]) == bos
        assert list(clean[b + L :]) == list(bad[b + L :]) == r[:-1]
        assert len(set(r) | set(r2) | {wrong}) == 2 * L + 1  # all distinct
        assert ans == r[-1] and clean.count(ans) == 1 and ans not in bad
        assert not set(real.tokenizer.all_special_ids) & set(r + r2)
        text = real.to_string(r)
        assert re.fullmatch(r"( [A-Za-z]{2,})+", text), text
    assert task.positions["first_copy_last"] == (b + L - 1,) * 6
    assert all(c[b + L - 1] == a for c, a in zip(task.clean, task.answers))
    assert all(c[b + L - 2] == c[-1] for c in task.clean)
    assert induction(real, n=3, seq_len=L, seed=2) == task.subset(range(3))
    assert induction(real, n=3, seq_len=L, seed=3).clean != task.subset(range(3)).clean


@pytest.mark.real
def test_greater_than_digit_answers_and_year_position(real):
    task = greater_than(real, n=10, seed=4)
    _check_aligned(real, task)
    for i, prompt in enumerate(task.clean):
        yy = prompt.split("year 17")[1][:2]
        assert 1 <= int(yy[0]) <= 8
        assert task.answers[i] == tuple(str(d) for d in range(int(yy[0]) + 1, 10))
        assert task.wrong[i] == tuple(str(d) for d in range(int(yy[0])))
        assert real.to_str_tokens(prompt)[task.positions["YY"][i]] == yy[1]
        assert real.to_str_tokens(task.corrupted[i])[task.positions["YY"][i] - 1 :][:2] == ["0", "1"]
        nxt = real.to_tokens(prompt + yy[0])[0].tolist()  # answers are the tokens the text produces
        assert nxt[:-1] == real.to_tokens(prompt)[0].tolist() and nxt[-1] == real.to_single_token(yy[0])
    assert greater_than(real, n=10, seed=4) == task
    assert greater_than(real, n=10, seed=5).clean != task.clean


# ------------------------------------------------------------------- behaviour (SmolLM2)
# Measured numbers (seed 0) are in docs/tasks.md; thresholds leave a margin below them.


@pytest.mark.real
def test_smollm2_does_ioi(smol):
    e = evaluate(smol, ioi(smol, n=24))
    assert e.clean_accuracy >= 0.9 and e.clean_top1 >= 0.8  # measured 1.00, 1.00
    assert e.corrupted_top1 <= 0.1  # ABC: the answer name is absent; measured 0.00
    assert e.clean_metric >= 4.0 and abs(e.corrupted_metric) <= 1.5  # measured 5.46 / 0.08


@pytest.mark.real
def test_smollm2_recalls_facts(smol):
    e = evaluate(smol, factual_recall(smol))
    assert e.clean_accuracy >= 0.9 and e.clean_top1 >= 0.8  # measured 1.00, 0.98
    assert e.corrupted_accuracy <= 0.2  # the partner's fact wins; measured 0.00
    assert e.clean_metric >= 5.0 and e.corrupted_metric <= -5.0  # measured 8.20 / -8.76


@pytest.mark.real
def test_smollm2_does_induction(smol):
    e = evaluate(smol, induction(smol, n=24))
    assert e.clean_accuracy >= 0.9 and e.clean_top1 >= 0.4  # measured 1.00, 0.62
    assert e.corrupted_top1 <= 0.1  # measured 0.00
    assert e.clean_metric >= 6.0 and e.clean_metric - e.corrupted_metric >= 6.0  # measured 10.62 / -0.32


@pytest.mark.real
def test_smollm2_does_greater_than(smol):
    e = evaluate(smol, greater_than(smol, n=24))
    assert e.metric == "prob_diff"
    assert e.clean_metric >= 0.3 and e.corrupted_metric <= 0.0  # measured 0.50 / -0.72
    assert e.clean_accuracy >= 0.9 and e.corrupted_accuracy <= 0.2  # measured 1.00 / 0.00
