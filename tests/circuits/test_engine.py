"""The edge engine against the dense reference forward, and against plain runs on every family."""

from __future__ import annotations

import pytest
import torch

from mechscope import wrap
from mechscope.circuits.engine import EdgeEngine, EdgeProblem
from mechscope.circuits.graph import Graph
from mechscope.errors import MechscopeError
from mechscope.toys.edges import edge_forward
from mechscope.toys.transformer import TransformerSpec, build

SPEC = TransformerSpec(
    d_vocab=13, n_ctx=8, d_model=16, n_layers=2, n_heads=2, d_mlp=24, layer_norm=True, bias=True
)


def _logit_metric(logits):  # [n, pos, vocab] -> [n]: a nonlinear function of every position
    return logits.log_softmax(-1)[..., 3].mean(-1)


@pytest.fixture(scope="module")
def toy():
    return wrap(build(SPEC, seed=5).eval())


@pytest.mark.parametrize("ablation", ["zero", "mean", "corrupted"])
def test_random_edge_subsets_match_the_dense_reference(toy, ablation):
    gen = torch.Generator().manual_seed(0)
    clean, corrupt = torch.randint(0, 13, (4, 8), generator=gen), torch.randint(0, 13, (4, 8), generator=gen)
    graph = Graph.from_model(toy, mode="qkv")
    engine = EdgeEngine(toy, graph, EdgeProblem(clean, corrupt, _logit_metric, logits_to_keep=0), ablation)
    keep = torch.rand(6, graph.n_edges, generator=gen) < 0.6
    got = engine.run(keep)  # [6, n]
    ref_ablation = corrupt if ablation == "corrupted" else ablation
    for v in range(6):
        edges = [graph.edges[i] for i in range(graph.n_edges) if keep[v, i]]
        ref = _logit_metric(edge_forward(toy, clean, keep=edges, ablation=ref_ablation))
        torch.testing.assert_close(got[v], ref, atol=1e-5, rtol=1e-5)


def _families_problem(model):
    gen = torch.Generator().manual_seed(1)
    clean = torch.randint(3, model.cfg.d_vocab, (3, 6), generator=gen)
    corrupt = torch.randint(3, model.cfg.d_vocab, (3, 6), generator=gen)
    return clean, corrupt


@pytest.mark.parametrize("mode", ["layer", "qkv"])
def test_full_is_clean_and_empty_is_corrupted_on_every_family(tiny_model, mode):
    model = tiny_model
    clean, corrupt = _families_problem(model)
    if model.adapter.post_attn_norm:
        with pytest.raises(MechscopeError, match="norm after attention"):
            EdgeEngine(model, Graph.from_model(model, mode), EdgeProblem(clean, corrupt, _logit_metric, 0))
        return
    graph = Graph.from_model(model, mode)
    engine = EdgeEngine(model, graph, EdgeProblem(clean, corrupt, _logit_metric, logits_to_keep=0))
    with torch.no_grad():
        clean_m = _logit_metric(model(clean))
        corrupt_m = _logit_metric(model(corrupt))
    keep = torch.stack(
        [torch.ones(graph.n_edges, dtype=torch.bool), torch.zeros(graph.n_edges, dtype=torch.bool)]
    )
    got = engine.run(keep)
    torch.testing.assert_close(got[0], clean_m, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[1], corrupt_m, atol=1e-4, rtol=1e-4)
    # dropping one edge into the last receiver changes the output but not to the corrupted value
    one = torch.ones(1, graph.n_edges, dtype=torch.bool)
    one[0, graph.edge_index[("input", "logits")]] = False
    moved = engine.run(one)[0]
    assert (moved - clean_m).abs().max() > 1e-4 and (moved - corrupt_m).abs().max() > 1e-4


def test_gradients_reach_every_receiver(toy):
    gen = torch.Generator().manual_seed(3)
    clean, corrupt = torch.randint(0, 13, (2, 8), generator=gen), torch.randint(0, 13, (2, 8), generator=gen)
    for mode in ("layer", "qkv"):
        graph = Graph.from_model(toy, mode)
        engine = EdgeEngine(toy, graph, EdgeProblem(clean, corrupt, _logit_metric, logits_to_keep=0))
        grads = engine.receiver_grads()
        assert grads.shape == (len(graph.receivers), 2, 8, 16)
        assert (grads.flatten(1).abs().sum(1) > 0).all()


def test_bad_input(toy):
    clean = torch.zeros(2, 8, dtype=torch.long)
    graph = Graph.from_model(toy)
    with pytest.raises(MechscopeError, match="ablation must be"):
        EdgeEngine(toy, graph, EdgeProblem(clean, clean, _logit_metric, 0), ablation="resample")
    with pytest.raises(MechscopeError, match="needs corrupted"):
        EdgeEngine(toy, graph, EdgeProblem(clean, None, _logit_metric, 0))
    with pytest.raises(MechscopeError, match="align"):
        EdgeEngine(toy, graph, EdgeProblem(clean, clean[:1], _logit_metric, 0))
    with pytest.raises(MechscopeError, match="not this model's"):
        EdgeEngine(toy, Graph(3, 2, 2), EdgeProblem(clean, None, _logit_metric, 0), ablation="zero")
    engine = EdgeEngine(toy, graph, EdgeProblem(clean, None, _logit_metric, 0), ablation="zero")
    with pytest.raises(MechscopeError, match="edge masks"):
        engine.run(torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(MechscopeError, match="not in this"):
        graph.edges_of(["a9.h0->logits"])


@pytest.mark.parametrize("mode", ["layer", "qkv"])
def test_runs_from_a_later_block_equal_full_runs(tiny_model, mode):
    """Dropping edges only into receivers of block >= L: recomputing from block L gives the full run's metric."""
    model = tiny_model
    if model.adapter.post_attn_norm:
        pytest.skip("heads are not additive under a post-attention norm")
    clean, corrupt = _families_problem(model)
    graph = Graph.from_model(model, mode)
    engine = EdgeEngine(model, graph, EdgeProblem(clean, corrupt, _logit_metric, logits_to_keep=1))
    layers = engine.receiver_layer(torch.arange(graph.n_edges))
    gen = torch.Generator().manual_seed(4)
    for start in range(1, graph.n_layers + 1):
        keep = torch.rand(3, graph.n_edges, generator=gen) < 0.5
        keep[:, layers < start] = True
        torch.testing.assert_close(engine.run(keep, start=start), engine.run(keep), atol=1e-4, rtol=1e-4)
    with pytest.raises(MechscopeError, match="before block"):
        engine.run(torch.zeros(1, graph.n_edges, dtype=torch.bool), start=1)
