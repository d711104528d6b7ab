"""Planted features on random token windows: the ground truth the explainers and scorers must find.

Windows are random draws from a 16-token vocabulary. A feature's rule gives each token's
activation (uniform in [1, 5] where it fires, 0 elsewhere). Half of the windows get the
feature's trigger planted at a random place, so there are enough activating windows; a window
is a positive when any activation is > 0, a negative otherwise.

* ``cat_after_the``: fires on " cat" only right after " the" (a context-dependent feature; its
  negatives often hold " cat" elsewhere, which a token-only explanation would call positive);
* ``dog``: fires on every " dog";
* ``cat_and_some_the``: fires on every " cat" and on 20% of the " the" tokens, which fill windows.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from mechscope.explain import Example

VOCAB = [" the", " a", " cat", " dog", " sat", " on", " mat", " and",
         " ran", " big", " small", " red", " house", " tree", " of", " in"]  # fmt: skip

Rule = Callable[[list[str], random.Random], list[float]]


def _cat_after_the(tokens: list[str], rng: random.Random) -> list[float]:
    return [rng.uniform(1, 5) if t == " cat" and i > 0 and tokens[i - 1] == " the" else 0.0
            for i, t in enumerate(tokens)]  # fmt: skip


def _dog(tokens: list[str], rng: random.Random) -> list[float]:
    return [rng.uniform(1, 5) if t == " dog" else 0.0 for t in tokens]


def _cat_and_some_the(tokens: list[str], rng: random.Random) -> list[float]:
    return [3.0 if t == " cat" or (t == " the" and rng.random() < 0.2) else 0.0 for t in tokens]


FEATURES: dict[str, tuple[list[str], Rule]] = {
    "cat_after_the": ([" the", " cat"], _cat_after_the),
    "dog": ([" dog"], _dog),
    "cat_and_some_the": ([" cat"], _cat_and_some_the),
}


def windows(feature: str, n_pos: int, n_neg: int, seed: int, length: int = 16,
            the_share: float = 0.0) -> tuple[list[Example], list[Example]]:  # fmt: skip
    """``n_pos`` activating and ``n_neg`` non-activating windows of ``feature`` (seeded).

    ``the_share``: probability that a token is " the" (else uniform over the vocabulary).
    """
    trigger, rule = FEATURES[feature]
    rng = random.Random(seed)
    pos: list[Example] = []
    neg: list[Example] = []
    while len(pos) < n_pos or len(neg) < n_neg:
        tokens = [" the" if rng.random() < the_share else rng.choice(VOCAB) for _ in range(length)]
        if rng.random() < 0.5:
            at = rng.randrange(length - len(trigger) + 1)
            tokens[at : at + len(trigger)] = trigger
        ex = Example(tuple(tokens), tuple(rule(tokens, rng)))
        bucket, limit = (pos, n_pos) if ex.active_positions() else (neg, n_neg)
        if len(bucket) < limit:
            bucket.append(ex)
    return pos, neg
