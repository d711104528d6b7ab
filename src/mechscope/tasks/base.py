"""A behaviour: clean prompts, matching corrupted prompts, answers, and a default metric.

Conventions used everywhere downstream (patching, attribution, circuits):

* Every prompt is evaluated at its **last token**: the answer is the next token.
* Prompts are **left-padded**, so the answer position is the last column for every
  example and positions line up from the right.
* A clean prompt and its corrupted twin have the **same number of tokens**, so position
  ``p`` means the same slot in both (checked up front, naming the offending example).
* ``answers`` are the correct next tokens and ``wrong`` the contrasting ones; each is one
  token or a set of tokens (greater-than uses sets of digits). A multi-token answer is an
  error that names the example.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import MechscopeError
from ..models import HookedModel, TokenBatch
from ..models.tokens import pad, pad_id_of

Prompt = str | Sequence[int]
"""A prompt as text, or as token ids (used by tasks built from random tokens)."""
Answer = str | int | Sequence[str] | Sequence[int]
"""One answer token (text or id) or a set of them."""


class TaskError(MechscopeError):
    """A task that cannot be run as specified (tokenisation, lengths, files)."""


@dataclass(frozen=True)
class Task:
    """A behaviour to localise: clean/corrupted prompt pairs with answers."""

    name: str
    """Short name, e.g. ``"ioi"``."""
    clean: tuple[Prompt, ...]
    """Prompts on which the model shows the behaviour."""
    corrupted: tuple[Prompt, ...]
    """One corrupted twin per clean prompt, with the same number of tokens."""
    answers: tuple[Answer, ...]
    """Correct next token(s) of each clean prompt."""
    wrong: tuple[Answer, ...]
    """Contrasting next token(s) of each prompt (e.g. the IOI subject)."""
    metric: str = "logit_diff"
    """Default metric name (see ``tasks.metrics.METRICS``)."""
    positions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Named positions per example, counted from the start of the unpadded prompt (e.g. ``subject_last``)."""
    description: str = ""
    """One line on what the task measures."""
    aligned: bool = True
    """Whether clean and corrupted prompts must have equal token counts (needed for position patching)."""

    def __post_init__(self) -> None:
        n = len(self.clean)
        if n == 0:
            raise TaskError(f"task {self.name!r} has no examples")
        for what in ("corrupted", "answers", "wrong"):
            if len(getattr(self, what)) != n:
                raise TaskError(
                    f"task {self.name!r}: {len(getattr(self, what))} {what} for {n} clean prompts"
                )
        for key, pos in self.positions.items():
            if len(pos) != n:
                raise TaskError(
                    f"task {self.name!r}: position {key!r} has {len(pos)} entries for {n} examples"
                )

    def __len__(self) -> int:
        return len(self.clean)

    def subset(self, index: Sequence[int]) -> Task:
        """The task restricted to the examples at ``index``."""
        pick = lambda xs: tuple(xs[i] for i in index)  # noqa: E731
        return Task(
            self.name,
            pick(self.clean),
            pick(self.corrupted),
            pick(self.answers),
            pick(self.wrong),
            self.metric,
            {k: pick(v) for k, v in self.positions.items()},
            self.description,
            self.aligned,
        )


@dataclass(frozen=True)
class PreparedTask:
    """A task tokenised for one model; what every method downstream consumes."""

    task: Task
    """The task this was prepared from."""
    clean: TokenBatch
    """Clean prompts, left-padded, ``[n pos]``."""
    corrupted: TokenBatch
    """Corrupted prompts, left-padded to the same width, ``[n pos]``."""
    answer_ids: Tensor
    """Correct answer token ids ``[n n_answers]`` (padded; see ``answer_mask``)."""
    answer_mask: Tensor
    """Which entries of ``answer_ids`` are real ``[n n_answers]`` (bool)."""
    wrong_ids: Tensor
    """Contrasting token ids ``[n n_wrong]`` (padded; see ``wrong_mask``)."""
    wrong_mask: Tensor
    """Which entries of ``wrong_ids`` are real ``[n n_wrong]`` (bool)."""
    positions: dict[str, Tensor] = field(default_factory=dict)
    """Named positions in padded coordinates, each ``[n]``."""

    @property
    def n(self) -> int:
        """Number of examples."""
        return self.clean.tokens.shape[0]

    @property
    def width(self) -> int:
        """Padded prompt length."""
        return self.clean.tokens.shape[1]

    def to(self, device: torch.device | str) -> PreparedTask:
        """The same task with every tensor on ``device``."""
        return PreparedTask(
            self.task,
            self.clean.to(device),
            self.corrupted.to(device),
            self.answer_ids.to(device),
            self.answer_mask.to(device),
            self.wrong_ids.to(device),
            self.wrong_mask.to(device),
            {k: v.to(device) for k, v in self.positions.items()},
        )


def prepare(model: HookedModel, task: Task, *, prepend_bos: bool | None = None) -> PreparedTask:
    """Tokenise ``task`` for ``model`` and check it: one-token answers, aligned lengths.

    Raises :class:`TaskError` naming the first offending example.
    """
    clean = [_ids(model, p, prepend_bos) for p in task.clean]
    corrupted = [_ids(model, p, prepend_bos) for p in task.corrupted]
    if task.aligned:
        for i, (c, k) in enumerate(zip(clean, corrupted)):
            if len(c) != len(k):
                raise TaskError(
                    f"task {task.name!r}, example {i}: clean prompt has {len(c)} tokens but corrupted has "
                    f"{len(k)}, so positions do not line up: {_show(task.clean[i])} vs {_show(task.corrupted[i])}"
                )
    pad_id = pad_id_of(model.tokenizer)
    width = max(max(map(len, clean)), max(map(len, corrupted)))
    clean_b = _left_pad(clean, pad_id, width)
    corr_b = _left_pad(corrupted, pad_id, width)
    answers, answer_mask = _answer_table(model, task, task.answers, "answer")
    wrongs, wrong_mask = _answer_table(model, task, task.wrong, "wrong answer")
    positions = {
        k: torch.tensor([width - len(clean[i]) + p for i, p in enumerate(v)])
        for k, v in task.positions.items()
    }
    positions["end"] = torch.full((len(clean),), width - 1)
    prepared = PreparedTask(task, clean_b, corr_b, answers, answer_mask, wrongs, wrong_mask, positions)
    return prepared.to(model.device)


def _ids(model: HookedModel, prompt: Prompt, prepend_bos: bool | None) -> list[int]:
    if isinstance(prompt, str):
        return model.to_tokens(prompt, prepend_bos=prepend_bos)[0].tolist()
    return [int(t) for t in prompt]


def _left_pad(ids: list[list[int]], pad_id: int, width: int) -> TokenBatch:
    batch = pad(ids, pad_id, "left")
    extra = width - batch.tokens.shape[1]
    if extra:
        tokens = torch.cat([torch.full((len(ids), extra), pad_id, dtype=torch.long), batch.tokens], 1)
        mask = torch.cat([torch.zeros((len(ids), extra), dtype=torch.long), batch.attention_mask], 1)
        batch = TokenBatch(tokens, mask, "left")
    return batch


def _answer_table(
    model: HookedModel, task: Task, answers: Sequence[Answer], what: str
) -> tuple[Tensor, Tensor]:
    rows = [[_answer_id(model, task, i, a, what) for a in _as_set(ans)] for i, ans in enumerate(answers)]
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = True
    return ids, mask


def _as_set(answer: Answer) -> list[str | int]:
    if isinstance(answer, str | int):
        return [answer]
    out: list[str | int] = list(answer)  # type: ignore[arg-type]
    if not out:
        raise TaskError("an answer set is empty")
    return out


def _answer_id(model: HookedModel, task: Task, i: int, answer: str | int, what: str) -> int:
    if isinstance(answer, int):
        if not 0 <= answer < model.cfg.d_vocab:
            raise TaskError(f"task {task.name!r}, example {i}: {what} id {answer} is outside the vocabulary")
        return answer
    ids = model.to_tokens(answer, prepend_bos=False)[0].tolist()
    if len(ids) != 1:
        pieces = model.to_str_tokens(answer, prepend_bos=False)
        raise TaskError(
            f"task {task.name!r}, example {i}: {what} {answer!r} is {len(ids)} tokens {pieces}; "
            "answers must be single tokens (include the leading space, e.g. ' Paris')"
        )
    return ids[0]


def _show(prompt: Prompt) -> str:
    return repr(prompt) if isinstance(prompt, str) else f"<{len(prompt)} token ids>"


def as_dict(task: Task) -> dict[str, Any]:
    """A JSON-friendly description of ``task`` (for artifacts)."""
    return {
        "name": task.name,
        "n": len(task),
        "metric": task.metric,
        "description": task.description,
        "example": {
            "clean": _show(task.clean[0]) if not isinstance(task.clean[0], str) else task.clean[0],
            "corrupted": _show(task.corrupted[0])
            if not isinstance(task.corrupted[0], str)
            else task.corrupted[0],
            "answer": task.answers[0],
            "wrong": task.wrong[0],
        },
    }


def aligned_groups(model: HookedModel, task: Task) -> dict[tuple[int, ...], list[int]]:
    """Example indices grouped by layout: ``(token count, *named positions) -> [index, ...]``.

    Position-resolved results (a layer × position sweep) are meaningful across examples only
    when every example has the same layout.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, prompt in enumerate(task.clean):
        key = (len(_ids(model, prompt, None)), *(pos[i] for pos in task.positions.values()))
        groups.setdefault(key, []).append(i)
    return groups


def aligned_subset(model: HookedModel, task: Task, n: int | None = None) -> Task:
    """The largest group of examples with one layout (see :func:`aligned_groups`), first ``n`` of it."""
    best = max(aligned_groups(model, task).values(), key=len)
    return task.subset(best[:n] if n else best)
