"""Per-position edge masks, scores and circuits."""

from __future__ import annotations

import json

import pytest
import torch

from mechscope import wrap
from mechscope.circuits import Circuit, EdgeEngine, EdgeProblem, Graph, faithfulness, methods
from mechscope.circuits.circuit import connected_by_position
from mechscope.errors import MechscopeError
from mechscope.toys.transformer import TransformerSpec, build

SPEC = TransformerSpec(d_vocab=13, n_ctx=8, d_model=16, n_layers=2, n_heads=2, d_mlp=24, init_std=0.3)


@pytest.fixture(scope="module")
def engine():
    model = wrap(build(SPEC, seed=7).eval())
    gen = torch.Generator().manual_seed(0)
    clean, corrupt = torch.randint(0, 13, (3, 6), generator=gen), torch.randint(0, 13, (3, 6), generator=gen)
    problem = EdgeProblem(clean, corrupt, lambda lg: lg.log_softmax(-1)[..., 4].mean(-1), logits_to_keep=0)
    return EdgeEngine(model, Graph.from_model(model, "qkv"), problem)


def test_position_masks_agree_with_whole_edge_masks(engine):
    gen = torch.Generator().manual_seed(1)
    keep = torch.rand(4, engine.graph.n_edges, generator=gen) < 0.5
    per_pos = keep[:, None].expand(-1, 6, -1)
    torch.testing.assert_close(engine.run(per_pos), engine.run(keep), atol=1e-6, rtol=1e-6)
    # keeping every edge at every position is the clean run
    none = torch.ones(1, 6, engine.graph.n_edges, dtype=torch.bool)
    torch.testing.assert_close(engine.run(none), engine.clean_metric[None], atol=1e-5, rtol=1e-5)
    with pytest.raises(MechscopeError, match="edge masks"):
        engine.run(torch.ones(1, 5, engine.graph.n_edges, dtype=torch.bool))


def test_pruning_follows_attention_across_positions():
    layer = Graph(1, 1, 1, mlp=False)  # edges: input->a0, input->logits, a0.h0->logits
    chosen = torch.zeros(3, layer.n_edges, dtype=torch.bool)
    chosen[0, layer.edge_index[("input", "a0")]] = True  # read at position 0 ...
    chosen[2, layer.edge_index[("a0.h0", "logits")]] = True  # ... written out at position 2
    assert torch.equal(connected_by_position(layer, chosen), chosen)
    qkv = Graph(1, 1, 1, mlp=False, mode="qkv")
    for port, kept in (("q", False), ("k", True), ("v", True)):
        chosen = torch.zeros(3, qkv.n_edges, dtype=torch.bool)
        chosen[0, qkv.edge_index[("input", f"a0.h0<{port}>")]] = True
        chosen[2, qkv.edge_index[("a0.h0", "logits")]] = True
        assert bool(connected_by_position(qkv, chosen).any()) is kept, port  # a query stays at its position
    backwards = torch.zeros(3, layer.n_edges, dtype=torch.bool)
    backwards[2, layer.edge_index[("input", "a0")]] = True  # attention cannot carry position 2 back to 0
    backwards[0, layer.edge_index[("a0.h0", "logits")]] = True
    assert not connected_by_position(layer, backwards).any()


def test_per_position_circuit(engine, tmp_path):
    scores = methods.exact_per_position(engine, torch.arange(engine.graph.n_edges), batch=64)  # [pos, E]
    circuit = Circuit(engine.graph, scores, "exact", "corrupted", "logprob")
    assert circuit.per_position and circuit.top_edges(1)[0][0].count("@") == 1
    full = circuit.top(scores.numel())
    assert faithfulness(engine, full) == pytest.approx(1.0, abs=1e-5)
    small = circuit.top(20)
    assert 0 < int(small.in_circuit.sum()) <= 20
    small.save(tmp_path / "c")
    loaded = Circuit.load(tmp_path / "c")
    assert torch.equal(loaded.scores, scores) and torch.equal(loaded.in_circuit, small.in_circuit)
    data = json.loads((tmp_path / "c" / "circuit.json").read_text())
    assert data["per_position"] and sum(e["in_circuit"] for e in data["edges"]) == int(
        small.in_circuit.any(0).sum()
    )
