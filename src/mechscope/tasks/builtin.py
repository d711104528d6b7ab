"""Built-in tasks: IOI, factual recall, induction and greater-than, built for one tokenizer.

Each builder takes the model (only its tokenizer is used) and returns a :class:`Task`
whose prompts already satisfy the conventions of ``tasks/base.py``: every answer is one
token, and each corrupted prompt has exactly as many tokens as its clean twin. Words that
are not a single token under the model's tokenizer are filtered out before sampling, so
the same call gives prompts of equal length on SmolLM2, Gemma or GPT-2.

Positions are token indices counted from the start of the unpadded prompt as the model's
tokenizer encodes it by default (``prepend_bos=None``), so they include any BOS the
tokenizer adds; ``prepare`` shifts them to padded coordinates and adds ``"end"``.

Sampling is deterministic: builders that sample take a ``seed`` and draw from their own
``random.Random(seed)``, never from global state.

1. ``ioi``: indirect-object identification (Wang et al. 2022, arXiv:2211.00593).
2. ``factual_recall``: subject → attribute facts for causal tracing (Meng et al. 2022,
   arXiv:2202.05262).
3. ``induction``: repeated random tokens (Olsson et al. 2022, "In-context learning and
   induction heads").
4. ``greater_than``: year comparison (Hanna et al. 2023, arXiv:2305.00586).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from ..models import HookedModel
from .base import Task, TaskError

# ----------------------------------------------------------------------------- helpers


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _ids(model: HookedModel, text: str) -> list[int]:
    """Token ids of ``text`` under the default BOS policy (what ``prepare`` uses)."""
    return model.to_tokens(text)[0].tolist()


def _single(model: HookedModel, text: str) -> int | None:
    """The id of ``text`` if it is exactly one known token (not ``<unk>``, not special), else None."""
    ids = model.to_tokens(text, prepend_bos=False)[0].tolist()
    if len(ids) != 1 or ids[0] in model.tokenizer.all_special_ids:
        return None
    return ids[0]


def _singles(model: HookedModel, words: Sequence[str]) -> list[str]:
    """The words that are one token with a leading space, in their original order."""
    return [w for w in dict.fromkeys(words) if _single(model, " " + w) is not None]


def _need(words: Sequence[object], k: int, what: str, model: HookedModel) -> None:
    if len(words) < k:
        raise TaskError(
            f"only {len(words)} {what} are single tokens under {model.cfg.name}'s "
            f"tokenizer; need at least {k}"
        )


def _special_prefix(model: HookedModel) -> list[int]:
    """The tokens the tokenizer puts before any text by default (``[bos]`` or ``[]``)."""
    default, plain = _ids(model, "hello"), model.to_tokens("hello", prepend_bos=False)[0].tolist()
    k = len(default) - len(plain)
    return default[:k] if k > 0 and default[k:] == plain else []


# ------------------------------------------------------------------------------- IOI

IOI_TEMPLATES: tuple[str, ...] = (
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to",
    "After [B] and [A] went to the [PLACE], [B] handed a [OBJECT] to",
    "Then, [B] and [A] had a long walk to the [PLACE]. [B] passed a [OBJECT] to",
    "Yesterday, [B] and [A] walked to the [PLACE]. [B] gave a [OBJECT] to",
    "Later, [B] and [A] were sitting in the [PLACE]. [B] offered a [OBJECT] to",
)
"""IOI templates in Wang et al.'s BABA form: ``[A]`` is the indirect object, ``[B]`` the subject.

The first four are from Wang et al.'s list (their final ``[A]`` is the answer, so it is
dropped); the rest are paraphrases in the same style.
"""

IOI_NAMES: tuple[str, ...] = _words(
    "Mary John Alice Bob Charlie Tom Anna James Michael David Sarah Emma Daniel Laura Paul "
    "Kate Peter Lisa Mark Jessica Chris Rachel Steven Emily Robert Linda Richard Susan Kevin "
    "Amy Brian Helen George Grace Jack Rose Adam Julia Sam Lucy Ben Claire Eric Sophie Frank "
    "Jane Henry Alex Ryan Kelly Jason Andrew Victoria Sean Diana Oliver Hannah Luke Simon "
    "Jacob Olivia Maria"
)
"""First names; those that are one token (with a leading space) are used."""
IOI_PLACES: tuple[str, ...] = _words(
    "store garden restaurant school hospital office house station park beach market library"
)
"""Places for ``[PLACE]``; single-token ones are used."""
IOI_OBJECTS: tuple[str, ...] = _words(
    "ring bone drink snack book letter gift ball flower cake key hat pen computer necklace"
)
"""Objects for ``[OBJECT]`` (after "a", so none starts with a vowel); single-token ones are used."""

_SLOT = re.compile(r"\[(A|B|PLACE|OBJECT)\]")


def _ioi_template(template: int | str | None) -> str:
    if template is None:
        return IOI_TEMPLATES[0]
    if isinstance(template, int):
        if not 0 <= template < len(IOI_TEMPLATES):
            raise TaskError(f"IOI template index {template} is out of range 0..{len(IOI_TEMPLATES) - 1}")
        return IOI_TEMPLATES[template]
    names = [m.group(1) for m in _SLOT.finditer(template) if m.group(1) in ("A", "B")]
    if names != ["B", "A", "B"]:
        raise TaskError(
            f"IOI template {template!r} must hold [B], [A], [B] in that order (BABA form), "
            f"e.g. {IOI_TEMPLATES[0]!r}; it holds {names}"
        )
    if template != template.rstrip() or re.match(r"\[[AB]\]", template):
        raise TaskError(
            f"IOI template {template!r} must not start with a name or end with whitespace "
            "(names are single tokens only after a space)"
        )
    return template


def _fill(template: str, names: Sequence[str], place: str, obj: str) -> str:
    """Fill the template's three name slots, in order of appearance, with ``names``."""
    it = iter(names)
    values = {"PLACE": place, "OBJECT": obj}
    return _SLOT.sub(lambda m: next(it) if m.group(1) in ("A", "B") else values[m.group(1)], template)


def ioi(
    model: HookedModel,
    n: int = 32,
    *,
    seed: int = 0,
    template: int | str | None = None,
    order: str = "mixed",
) -> Task:
    """Indirect-object identification (Wang et al. 2022, "Interpretability in the Wild").

    * clean: a template filled with two names, e.g. ``"Then, Mary and John went to the
      store. John gave a drink to"``. ``order="ABBA"`` puts the indirect object (IO)
      first, ``"BABA"`` the subject (S) first, ``"mixed"`` alternates (even examples ABBA).
    * corrupted: Wang et al.'s ABC distribution: the same sentence with IO, S1 and S2
      replaced by three fresh distinct names (none equal to IO or S), so no name repeats:
      ``"Then, Anna and Tom went to the store. Paul gave a drink to"``.
    * answer: ``" IO"``; wrong: ``" S"``.
    * positions: ``"IO"``, ``"S1"``, ``"S2"``: the token index of each name in the clean prompt.

    Names, places and objects are drawn (from ``random.Random(seed)``) among
    :data:`IOI_NAMES`, :data:`IOI_PLACES` and :data:`IOI_OBJECTS`, keeping only words that
    are one token with a leading space, so all prompts from one template have the same
    length and every position index means the same slot in every example.

    ``template`` picks one of :data:`IOI_TEMPLATES` by index (default 0) or is a template
    string of your own in the BABA form (``[B] ... [A] ... [B] ... to``, with ``[PLACE]``
    and ``[OBJECT]``). To mix templates, build one task per template and concatenate
    them; note that mixing templates breaks position alignment *across* examples (named
    positions stay correct per example, but column ``p`` no longer means the same slot).
    """
    if order not in ("ABBA", "BABA", "mixed"):
        raise TaskError(f"IOI order must be 'ABBA', 'BABA' or 'mixed', not {order!r}")
    if n < 1:
        raise TaskError(f"IOI needs n >= 1, not {n}")
    text = _ioi_template(template)
    names = _singles(model, IOI_NAMES)
    places = _singles(model, IOI_PLACES)
    objects = _singles(model, IOI_OBJECTS)
    _need(names, 5, "IOI names", model)
    _need(places, 1, "IOI places", model)
    _need(objects, 1, "IOI objects", model)

    rng = random.Random(seed)
    clean, corrupted, answers, wrong = [], [], [], []
    pos: dict[str, list[int]] = {"IO": [], "S1": [], "S2": []}
    for i in range(n):
        io, s, *abc = rng.sample(names, 5)
        place, obj = rng.choice(places), rng.choice(objects)
        abba = order == "ABBA" or (order == "mixed" and i % 2 == 0)
        prompt = _fill(text, (io, s, s) if abba else (s, io, s), place, obj)
        corrupt = _fill(text, abc, place, obj)
        ids = _ids(model, prompt)
        io_id, s_id = _single(model, " " + io), _single(model, " " + s)
        io_at = [j for j, t in enumerate(ids) if t == io_id]
        s_at = [j for j, t in enumerate(ids) if t == s_id]
        if len(io_at) != 1 or len(s_at) != 2:
            raise TaskError(
                f"IOI example {i}: cannot find the names as single tokens in {prompt!r} "
                f"({model.to_str_tokens(prompt)}); does the template put a space before every name?"
            )
        if len(_ids(model, corrupt)) != len(ids):
            raise TaskError(f"IOI example {i}: {prompt!r} and {corrupt!r} differ in token count")
        clean.append(prompt)
        corrupted.append(corrupt)
        answers.append(" " + io)
        wrong.append(" " + s)
        pos["IO"].append(io_at[0])
        pos["S1"].append(s_at[0])
        pos["S2"].append(s_at[1])
    return Task(
        "ioi",
        tuple(clean),
        tuple(corrupted),
        tuple(answers),
        tuple(wrong),
        "logit_diff",
        {k: tuple(v) for k, v in pos.items()},
        "indirect-object identification: predict the name that is not repeated (Wang et al. 2022)",
    )


# --------------------------------------------------------------------- factual recall

FACTS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "landmark_city": (
        "The {} is located in the city of",
        (
            ("Eiffel Tower", " Paris"),
            ("Colosseum", " Rome"),
            ("Brandenburg Gate", " Berlin"),
            ("Kremlin", " Moscow"),
            ("Louvre", " Paris"),
            ("Acropolis", " Athens"),
            ("Sagrada Familia", " Barcelona"),
            ("Hagia Sophia", " Istanbul"),
            ("Parthenon", " Athens"),
            ("Burj Khalifa", " Dubai"),
            ("Vatican", " Rome"),
            ("Prado Museum", " Madrid"),
            ("Rijksmuseum", " Amsterdam"),
            ("Taj Mahal", " Agra"),
        ),
    ),
    "city_country": (
        "The city of {} is located in the country of",
        (
            ("Lyon", " France"),
            ("Osaka", " Japan"),
            ("Milan", " Italy"),
            ("Barcelona", " Spain"),
            ("Mumbai", " India"),
            ("Shanghai", " China"),
            ("Krakow", " Poland"),
            ("Manchester", " England"),
            ("Istanbul", " Turkey"),
            ("Hamburg", " Germany"),
            ("Naples", " Italy"),
            ("Marseille", " France"),
            ("Kyoto", " Japan"),
            ("Seville", " Spain"),
            ("Rio de Janeiro", " Brazil"),
        ),
    ),
    "official_language": (
        "In {}, the official language is",
        (
            ("France", " French"),
            ("Germany", " German"),
            ("Brazil", " Portuguese"),
            ("Mexico", " Spanish"),
            ("Italy", " Italian"),
            ("Russia", " Russian"),
            ("Japan", " Japanese"),
            ("Poland", " Polish"),
            ("Sweden", " Swedish"),
            ("Turkey", " Turkish"),
            ("Egypt", " Arabic"),
            ("Israel", " Hebrew"),
            ("Korea", " Korean"),
            ("Finland", " Finnish"),
        ),
    ),
    "athlete_sport": (
        "The famous athlete {} is known for playing the sport of",
        (
            ("Michael Jordan", " basketball"),
            ("Roger Federer", " tennis"),
            ("Tiger Woods", " golf"),
            ("Serena Williams", " tennis"),
            ("LeBron James", " basketball"),
            ("Babe Ruth", " baseball"),
            ("Tom Brady", " football"),
            ("Rafael Nadal", " tennis"),
            ("Derek Jeter", " baseball"),
            ("Peyton Manning", " football"),
            ("Wayne Gretzky", " hockey"),
        ),
    ),
}
"""Relation name → (prompt template with ``{}`` for the subject, ((subject, answer), ...))."""


def factual_recall(model: HookedModel, n: int | None = None) -> Task:
    """Subject → attribute facts for causal tracing (Meng et al. 2022, "Locating and Editing
    Factual Associations in GPT").

    * clean: a fact from :data:`FACTS`, e.g. ``"The Eiffel Tower is located in the city of"``.
    * corrupted: the same relation's prompt for *another* subject whose answer differs and
      whose prompt has the same token count under this tokenizer (the first such subject
      after this one in the relation's list, cyclically), e.g.
      ``"The Brandenburg Gate is located in the city of"``.
    * answer: the fact's answer (``" Paris"``); wrong: the partner's answer (``" Berlin"``).
    * positions: ``"subject_first"`` and ``"subject_last"``, the first and last token of the
      subject in the clean prompt. Every template puts words before the subject and
      several tokens after it, so the last subject token is distinct from the final
      position (Meng et al.'s early-site/late-site split).

    Facts whose answer is not a single token, whose subject's tokens cannot be located,
    or that have no same-length partner are dropped, so the number of facts depends on
    the tokenizer. Examples are ordered by relation, then as listed; ``n`` keeps the
    first ``n`` (default: all). Prompt lengths differ across relations and subjects.
    """
    clean, corrupted, answers, wrong = [], [], [], []
    first, last = [], []
    for template, facts in FACTS.values():
        head = template[: template.index("{}")].rstrip()
        if not head:
            raise TaskError(f"fact template {template!r} must have words before the subject")
        n_head = len(_ids(model, head))
        usable = []
        for subject, answer in facts:
            prompt = template.format(subject)
            ids = _ids(model, prompt)
            upto = _ids(model, template[: template.index("{}")] + subject)
            if (
                _single(model, answer) is None
                or ids[: len(upto)] != upto
                or upto[:n_head] != _ids(model, head)
                or len(upto) <= n_head
            ):
                continue
            usable.append((prompt, answer, len(ids), n_head, len(upto) - 1))
        for i, (prompt, answer, length, s_first, s_last) in enumerate(usable):
            partner = next(
                (
                    usable[(i + k) % len(usable)]
                    for k in range(1, len(usable))
                    if usable[(i + k) % len(usable)][2] == length
                    and usable[(i + k) % len(usable)][1] != answer
                ),
                None,
            )
            if partner is None:
                continue
            clean.append(prompt)
            corrupted.append(partner[0])
            answers.append(answer)
            wrong.append(partner[1])
            first.append(s_first)
            last.append(s_last)
    if not clean:
        raise TaskError(
            "no built-in fact has a single-token answer and a same-length partner under this tokenizer"
        )
    if n is not None and not 1 <= n <= len(clean):
        raise TaskError(f"factual_recall has {len(clean)} usable facts for this tokenizer; n={n} asked")
    task = Task(
        "factual",
        tuple(clean),
        tuple(corrupted),
        tuple(answers),
        tuple(wrong),
        "logit_diff",
        {"subject_first": tuple(first), "subject_last": tuple(last)},
        "factual recall: complete a fact about the subject (Meng et al. 2022)",
    )
    return task if n is None else task.subset(range(n))


# ------------------------------------------------------------------------- induction


def _word_pool(model: HookedModel) -> list[int]:
    """Ordinary word tokens: a space then 2+ ASCII letters, in the first half of the vocabulary.

    The first half avoids rare, under-trained tokens; special tokens are excluded.
    """
    tok = model.tokenizer
    if tok is None:
        raise TaskError("induction needs the model's tokenizer to pick ordinary tokens")
    size = min(len(tok), model.cfg.d_vocab) // 2
    special = set(tok.all_special_ids)
    texts = tok.batch_decode([[i] for i in range(size)])
    return [
        i
        for i, t in enumerate(texts)
        if i not in special and len(t) >= 3 and t[0] == " " and t[1:].isascii() and t[1:].isalpha()
    ]


def induction(model: HookedModel, n: int = 32, *, seq_len: int = 16, seed: int = 0) -> Task:
    """Repeated random tokens (Olsson et al. 2022, "In-context learning and induction heads").

    With ``b`` the tokens the tokenizer puts first (``[bos]`` for Gemma, none for SmolLM2)
    and ``L = seq_len``, each example draws ``2L + 1`` distinct ordinary word tokens (see
    ``_word_pool``) from ``random.Random(seed)``: ``r`` (L), ``r'`` (L) and one more, ``x``.

    * clean: ``b + r + r[:L-1]`` (token ids, length ``len(b) + 2L - 1``); the final token
      ``r[L-2]`` occurred before, followed by ``r[L-1]``.
    * corrupted: ``b + r' + r[:L-1]``: same length and same final segment, but nothing
      earlier to copy from.
    * answer: ``r[L-1]`` (an int id); wrong: ``x``, a token in neither ``r`` nor ``r'``.
    * positions: ``"first_copy_last"`` = ``len(b) + L - 1``, where ``r[L-1]`` (the answer)
      sits in the first copy: what an induction head at the final position attends to.
      ``"first_copy_match"`` = ``len(b) + L - 2``, the earlier occurrence of the final
      token ``r[L-2]`` (what a previous-token head at ``first_copy_last`` reads).
    """
    if seq_len < 2:
        raise TaskError(f"induction needs seq_len >= 2, not {seq_len}")
    if n < 1:
        raise TaskError(f"induction needs n >= 1, not {n}")
    pool = _word_pool(model)
    _need(pool, 2 * seq_len + 1, "ordinary word tokens", model)
    bos = _special_prefix(model)
    rng = random.Random(seed)
    clean, corrupted, answers, wrong = [], [], [], []
    for _ in range(n):
        draw = rng.sample(pool, 2 * seq_len + 1)
        r, r2, x = draw[:seq_len], draw[seq_len : 2 * seq_len], draw[-1]
        clean.append((*bos, *r, *r[:-1]))
        corrupted.append((*bos, *r2, *r[:-1]))
        answers.append(r[-1])
        wrong.append(x)
    b = len(bos)
    return Task(
        "induction",
        tuple(clean),
        tuple(corrupted),
        tuple(answers),
        tuple(wrong),
        "logit_diff",
        {"first_copy_last": (b + seq_len - 1,) * n, "first_copy_match": (b + seq_len - 2,) * n},
        "induction: continue a repeated sequence of random tokens (Olsson et al. 2022)",
    )


# ---------------------------------------------------------------------- greater-than

GT_NOUNS: tuple[str, ...] = _words(
    "war expedition drought famine siege occupation reign journey campaign conflict dynasty "
    "rebellion alliance negotiations pilgrimage epidemic voyage marriage partnership "
    "construction trial investigation"
)
"""Nouns for "The [NOUN] lasted from ..." (from Hanna et al.'s list); single-token ones are used."""

_GT_HEAD = "The {} lasted from the year 17"


def _year_mode(model: HookedModel, noun: str) -> tuple[str, dict[str, int]]:
    """How the tokenizer continues "... the year 17": by one digit, or by a two-digit token.

    Returns ``("digit", {"0": id, ...})`` or ``("pair", {"00": id, ...})`` (the two-digit
    strings that are one token after "17"), read off the tokenised text itself.
    """
    head = _GT_HEAD.format(noun)
    base = _ids(model, head)
    tails: dict[str, list[int]] = {}
    for y in range(100):
        yy = f"{y:02d}"
        full = _ids(model, head + yy)
        if full[: len(base)] == base:
            tails[yy] = full[len(base) :]
    if len(tails) == 100 and all(len(t) == 2 for t in tails.values()):
        digits = {yy[0]: t[0] for yy, t in tails.items()}
        if len(digits) == 10 and all(tails[yy] == [digits[yy[0]], digits[yy[1]]] for yy in tails):
            return "digit", digits
    pairs = {yy: t[0] for yy, t in tails.items() if len(t) == 1}
    if len(pairs) >= 10:
        return "pair", pairs
    raise TaskError(
        "greater_than: this tokenizer splits years neither into digits nor into two-digit tokens: "
        f"{head + '32'!r} -> {model.to_str_tokens(head + '32')}"
    )


def _answer_form(model: HookedModel, text: str, id_: int) -> str | int:
    """``text`` if it tokenises on its own to ``id_`` (readable), else the id itself."""
    return text if _single(model, text) == id_ else id_


def greater_than(model: HookedModel, n: int = 32, *, seed: int = 0) -> Task:
    """Year comparison (Hanna et al. 2023, "How does GPT-2 compute greater-than?").

    * clean: ``"The [NOUN] lasted from the year 17YY to the year 17"``, NOUN drawn from
      :data:`GT_NOUNS` (single-token ones) and YY from ``random.Random(seed)``.
    * corrupted: the same sentence with start year 1701, as in Hanna et al.
    * Digit tokenizers (SmolLM2, Gemma: "1732" is "1", "7", "3", "2"): the next token is
      the end year's tens digit. YY has tens digit 1..8; answers = the digit tokens
      ``d > tens(YY)`` and wrong = ``d < tens(YY)`` (the equal digit is in neither set).
    * Two-digit tokenizers (GPT-2: " 17" then "32"): the next token is the two-digit
      year; YY is in 02..98, answers = ``YY' > YY`` and wrong = ``YY' <= YY``.
    * The mode is detected by tokenising the prompt itself, and answer strings are exactly
      the tokens the tokenizer produces after "17" (``"3"``, no leading space).
    * metric: ``prob_diff`` (P(answers) - P(wrong), Hanna et al.'s probability difference).
    * positions: ``"YY"``, the last token of the start year in the clean prompt.
    """
    if n < 1:
        raise TaskError(f"greater_than needs n >= 1, not {n}")
    nouns = _singles(model, GT_NOUNS)
    _need(nouns, 1, "greater-than nouns", model)
    mode, table = _year_mode(model, nouns[0])
    if mode == "digit":
        starts = [f"{y:02d}" for y in range(10, 90)]
    else:
        starts = [yy for yy in table if 2 <= int(yy) <= 98]
        if "01" not in table:
            raise TaskError("greater_than: '01' is not one token after '17' under this tokenizer")
    rng = random.Random(seed)
    clean, corrupted, answers, wrong, yy_at = [], [], [], [], []
    for i in range(n):
        noun, yy = rng.choice(nouns), rng.choice(starts)
        prompt = f"The {noun} lasted from the year 17{yy} to the year 17"
        corrupt = f"The {noun} lasted from the year 1701 to the year 17"
        if mode == "digit":
            good = [d for d in table if int(d) > int(yy[0])]
            bad = [d for d in table if int(d) < int(yy[0])]
        else:
            good = [y for y in table if int(y) > int(yy)]
            bad = [y for y in table if int(y) <= int(yy)]
        ids, upto = _ids(model, prompt), _ids(model, f"The {noun} lasted from the year 17{yy}")
        if ids[: len(upto)] != upto or len(_ids(model, corrupt)) != len(ids):
            raise TaskError(f"greater_than example {i}: {prompt!r} does not tokenise like {corrupt!r}")
        clean.append(prompt)
        corrupted.append(corrupt)
        answers.append(tuple(_answer_form(model, t, table[t]) for t in sorted(good)))
        wrong.append(tuple(_answer_form(model, t, table[t]) for t in sorted(bad)))
        yy_at.append(len(upto) - 1)
    return Task(
        "greater_than",
        tuple(clean),
        tuple(corrupted),
        tuple(answers),  # type: ignore[arg-type]
        tuple(wrong),  # type: ignore[arg-type]
        "prob_diff",
        {"YY": tuple(yy_at)},
        "greater-than: an end year after the start year is more likely (Hanna et al. 2023)",
    )


# -------------------------------------------------------------------------- registry

BUILTIN_TASKS: dict[str, Callable[..., Task]] = {
    "ioi": ioi,
    "factual": factual_recall,
    "induction": induction,
    "greater_than": greater_than,
}
"""Built-in task builders by name; each is called as ``builder(model, **kwargs)``."""


def make_task(name: str, model: HookedModel, **kwargs: object) -> Task:
    """The built-in task called ``name`` for ``model`` (``kwargs`` go to its builder)."""
    if name not in BUILTIN_TASKS:
        raise TaskError(f"unknown task {name!r}; choose one of {', '.join(BUILTIN_TASKS)}")
    return BUILTIN_TASKS[name](model, **kwargs)
