"""Compiled ground-truth models: exact on every input, the declared circuit alone reproduces the
output, and every declared edge is needed."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from mechscope import load_model
from mechscope.toys.compiled import (
    COMPILED,
    build_compiled,
    compile_features,
    compile_histogram,
    compile_induction,
    histogram_answers,
    induction_answers,
)
from mechscope.toys.compiled_report import check_compiled, write_compiled_report
from mechscope.toys.edges import all_edges, edge_forward


def _all_sequences(tokens: range, n: int, bos: int | None = None) -> torch.Tensor:
    rows = list(itertools.product(tokens, repeat=n - (bos is not None)))
    t = torch.tensor(rows)
    return torch.cat([torch.full((len(rows), 1), bos), t], dim=1) if bos is not None else t


def test_algorithms_on_hand_examples():
    t = torch.tensor([[1, 2, 3, 1, 4, 1, 2]])
    # 1 was followed by 2 (pos 1) then by 4 (pos 4): the most recent wins. 2 -> 3; 3, 4: no earlier copy.
    assert induction_answers(t).tolist() == [[1, 2, 3, 2, 4, 4, 3]]
    h = torch.tensor([[0, 5, 5, 6, 5]])
    assert histogram_answers(h).tolist() == [[-1, 1, 2, 1, 3]]


# Exhaustive: every sequence of a small instance (the constructions are parametric in the size).
EXHAUSTIVE = [
    (lambda: compile_induction(d_vocab=3, n_ctx=6), lambda: _all_sequences(range(3), 6)),
    (lambda: compile_histogram(d_vocab=4, n_ctx=7), lambda: _all_sequences(range(1, 4), 7, bos=0)),
    (lambda: compile_features(d_vocab=12, n_features=6), lambda: torch.arange(12)[:, None]),
]


@pytest.mark.parametrize("case", range(len(EXHAUSTIVE)), ids=["induction", "histogram", "features"])
def test_exact_on_every_input_and_circuit_is_sufficient_and_necessary(case):
    make, inputs = EXHAUSTIVE[case]
    model, truth = make()
    tokens = inputs()
    answers = truth.algorithm(tokens)
    defined = answers >= 0
    with torch.no_grad():
        full = model(input_ids=tokens).logits
    assert torch.equal(full.argmax(-1)[defined], answers[defined])
    # Only the circuit's edges carry activations; everything else is zero-ablated.
    circuit = edge_forward(model, tokens, keep=truth.edges)
    assert torch.equal(circuit.argmax(-1)[defined], answers[defined])
    torch.testing.assert_close(
        circuit.log_softmax(-1)[defined], full.log_softmax(-1)[defined], atol=1e-5, rtol=0
    )
    # The distractors are active: dropping them changes the raw logits (not the log-probs).
    assert (circuit - full).abs().max() > 1.0
    for edge in truth.edges:
        rest = [e for e in truth.edges if e != edge]
        broken = edge_forward(model, tokens, keep=rest).argmax(-1)
        assert not torch.equal(broken[defined], answers[defined]), f"edge {edge} is not needed"


@pytest.mark.parametrize("name", list(COMPILED))
def test_default_sizes_on_sampled_inputs(name):
    model, truth = COMPILED[name]()
    check = check_compiled(model, truth, n=500)
    assert check.accuracy == 1.0 and check.circuit_accuracy == 1.0
    assert check.circuit_max_logprob_diff < 1e-4
    assert max(check.without_edge.values()) < 0.9
    assert set(truth.components) >= {s for s, _ in truth.edges} | {"logits"}
    assert set(truth.edges) <= set(all_edges(model.config.n_layers, model.config.n_heads))


def test_features_are_written_exactly_into_the_known_subspace(tmp_path):
    model, truth = compile_features()
    wrapped = load_model(build_compiled("compiled_features", tmp_path), device="cpu")
    tokens = torch.arange(model.config.d_vocab).view(-1, model.config.n_ctx)  # every token once
    _, cache = wrapped.run_with_cache(tokens, names=[truth.feature_hook])
    acts = cache[truth.feature_hook].flatten(0, 1)  # [token, d_model]
    expected = truth.feature_acts @ truth.feature_directions
    torch.testing.assert_close(acts, expected, atol=1e-5, rtol=0)
    d = truth.feature_directions
    torch.testing.assert_close(d @ d.T, torch.eye(len(d)), atol=1e-5, rtol=0)
    assert (truth.feature_acts > 0).sum(dim=1).max() <= 2  # sparse: at most 2 features per token
    # not axis-aligned: no direction is close to a single residual dimension
    assert d.abs().max() < 0.95


def test_load_model_builds_compiled_toys_and_caches_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    model = load_model("toy/compiled_histogram", device="cpu")
    where = tmp_path / "toys" / "compiled_histogram"
    meta = json.loads((where / "circuit.json").read_text())
    assert meta["edges"][-1] == "m0->logits" and meta["version"] >= 1
    stamp = (where / "model.safetensors").stat().st_mtime_ns
    load_model("toy/compiled_histogram", device="cpu")
    assert (where / "model.safetensors").stat().st_mtime_ns == stamp  # current: not rebuilt
    tokens = torch.tensor([[0, 3, 3, 5, 3]])
    assert model(tokens)[0, 1:].argmax(-1).tolist() == [1, 2, 1, 3]


def test_compiled_report(tmp_path):
    page = write_compiled_report("compiled_induction", tmp_path, n=200)
    html = page.read_text()
    assert "a0.h0-&gt;a1.h0&lt;k&gt;" in html and (tmp_path / "edges.png").stat().st_size > 1000
    checks = json.loads((tmp_path / "checks.json").read_text())
    assert checks["accuracy"] == 1.0 and len(checks["without_edge"]) == 8
