"""Circuits over SAE features: MLP nodes split into chosen features plus an error node."""

from __future__ import annotations

import torch

from known import relu_dictionary
from mechscope import load_model, wrap
from mechscope.circuits import Circuit, EdgeEngine, EdgeProblem, Graph, faithfulness, methods, roc_auc
from mechscope.circuits.features import feature_scores
from mechscope.circuits.render import to_svg
from mechscope.toys.compiled import COMPILED
from mechscope.toys.transformer import TransformerSpec, build


def test_graph_with_feature_nodes():
    g = Graph(2, 2, 2, features=((1, (4, 7)),))
    assert g.mlp_nodes(0) == ["m0"] and g.mlp_nodes(1) == ["m1.f4", "m1.f7", "m1.err"]
    assert "m1" not in g.sources and ("m1.f7", "logits") in g.edge_index
    assert g.receivers[g.receiver_index("m1")].feeds == ("m1.f4", "m1.f7", "m1.err")
    assert g.node_info("m1.f7") == {
        "name": "m1.f7",
        "kind": "feature",
        "layer": 1,
        "head": None,
        "feature": 7,
    }


def test_feature_sources_add_up_and_match_the_node_level_scores():
    spec = TransformerSpec(d_vocab=11, n_ctx=6, d_model=12, n_layers=2, n_heads=2, d_mlp=16, init_std=0.3)
    model = wrap(build(spec, seed=1).eval())
    gen = torch.Generator().manual_seed(1)
    clean, corrupt = torch.randint(0, 11, (4, 6), generator=gen), torch.randint(0, 11, (4, 6), generator=gen)
    problem = EdgeProblem(clean, corrupt, lambda lg: lg[:, -1].log_softmax(-1)[:, 2], 1)
    dic = relu_dictionary(torch.randn(24, 12, generator=gen), b_dec=torch.randn(12, generator=gen))
    plain = EdgeEngine(model, Graph.from_model(model), problem)
    chosen = [0, 5, 9, 17]
    graph = Graph.from_model(model, features={0: chosen})
    engine = EdgeEngine(model, graph, problem, dictionaries={0: dic})
    # every edge kept is the clean run, none kept the corrupted run: the split is exact
    keep = torch.stack(
        [torch.ones(graph.n_edges, dtype=torch.bool), torch.zeros(graph.n_edges, dtype=torch.bool)]
    )
    keep_plain = torch.stack(
        [
            torch.ones(plain.graph.n_edges, dtype=torch.bool),
            ~torch.ones(plain.graph.n_edges, dtype=torch.bool),
        ]
    )
    torch.testing.assert_close(engine.run(keep), plain.run(keep_plain), atol=1e-5, rtol=1e-5)
    # EAP on feature edges equals the node-level decomposition's feature edges
    eap = methods.eap(engine)
    node_level = feature_scores(plain, dic, "m0")
    for i in chosen:
        for k, r in enumerate(node_level.receivers):
            assert abs(float(eap[graph.edge_index[(f"m0.f{i}", r)]]) - float(node_level.edges[i, k])) < 1e-5
    # and exact patching of a feature edge changes the metric (the engine reads features in-run)
    exact = methods.exact(engine)
    assert exact[[graph.edge_index[(f"m0.f{i}", "logits")] for i in chosen]].abs().max() > 1e-4


def test_feature_circuit_of_the_compiled_features_model():
    model = load_model("toy/compiled_features", device="cpu")
    truth = COMPILED["compiled_features"]()[1]
    gen = torch.Generator().manual_seed(0)
    clean = truth.sample(16, gen)

    def logit_of_token_0(logits):  # only feature 0 promotes token 0; minus the mean: the shift does nothing
        return (logits[..., 0] - logits.mean(-1)).mean(-1)

    graph = Graph.from_model(model, features={0: list(range(16))})
    dic = relu_dictionary(truth.feature_directions)
    engine = EdgeEngine(model, graph, EdgeProblem(clean, None, logit_of_token_0, 0), "zero", {0: dic})
    known = graph.edges_of(["input->m0", "m0.f0->logits"])
    scores = methods.exact(engine)
    assert roc_auc(scores, known) == 1.0
    circuit = Circuit(graph, scores, "exact", "zero", "logit_of_token_0").top(2)
    assert set(circuit.edges) == {"input->m0", "m0.f0->logits"}
    assert faithfulness(engine, circuit) > 0.999
    svg = to_svg(circuit.to_json())
    assert 'data-node="m0.f0"' in svg and 'data-kind="feature"' in svg
