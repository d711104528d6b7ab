"""Inputs of the tiny investigation used by the investigate tests: a tiny random Llama, an
induction task written as token ids, a text corpus, every stage on and sized to run in seconds."""

from __future__ import annotations

import json
import random
from pathlib import Path

import tiny

TINY_CONFIG = """
seed = 0
[model]
name = "tiny-llama"
device = "cpu"
[behaviour]
task = "ids.jsonl"
n = 8
[corpus]
source = "corpus.txt"
ctx_len = 32
n_tokens = 4096
[stages.localise.settings]
n = 4
[stages.circuit.settings]
n = 4
check_top = 5
[stages.dictionaries.settings]
expansion = 2
k = 4
batch_size = 256
eval_contexts = 2
[stages.features.settings]
n_contexts = 16
n_features = 3
check_top = 3
dashboards = 4
[stages.explain.settings]
held_out = 8
held_out_len = 16
[stages.checks.settings]
max_new_tokens = 4
"""


def write_inputs(root: Path) -> Path:
    """The tiny model, ``ids.jsonl`` (repeated random tokens), ``corpus.txt`` and
    ``tiny.toml`` under ``root``; returns the config's path."""
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "tiny-llama" / "config.json").is_file():
        tiny.build("llama-gqa", root / "tiny-llama")
    rng = random.Random(0)
    rows = []
    for _ in range(16):
        a, b = rng.sample(range(3, 256), 6), rng.sample(range(3, 256), 6)
        rows.append(
            {"clean": [1, *a, *a[:-1]], "corrupted": [1, *b, *b[:-1]], "answer": a[-1], "wrong": b[-1]}
        )
    (root / "ids.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs = (
        f"Document {i}: the quick brown fox jumps over {i} lazy dogs. Mary gave John a drink."
        for i in range(400)
    )
    (root / "corpus.txt").write_text("\n\n".join(docs))
    (root / "tiny.toml").write_text(TINY_CONFIG)
    return root / "tiny.toml"
