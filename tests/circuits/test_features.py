"""SAE features and an error term as circuit nodes: exact decomposition, the ground-truth features
of the compiled features model, and the exact check."""

from __future__ import annotations

import pytest
import torch

from known import relu_dictionary
from mechscope import load_model, wrap
from mechscope.circuits import EdgeEngine, EdgeProblem, Graph, methods
from mechscope.circuits.features import exact_feature_effects, feature_scores
from mechscope.errors import MechscopeError
from mechscope.toys.compiled import COMPILED
from mechscope.toys.transformer import TransformerSpec, build


def test_ground_truth_features_of_the_compiled_model():
    model = load_model("toy/compiled_features", device="cpu")
    truth = COMPILED["compiled_features"]()[1]
    gen = torch.Generator().manual_seed(0)
    clean, corrupt = truth.sample(16, gen), truth.sample(16, gen)

    def logit_of_token_0(logits):  # linear in the logits: only feature 0 promotes token 0
        return logits[..., 0].mean(-1)

    engine = EdgeEngine(model, Graph.from_model(model), EdgeProblem(clean, corrupt, logit_of_token_0, 0))
    dic = relu_dictionary(truth.feature_directions)  # the true features: the decomposition is exact
    scores = feature_scores(engine, dic, "m0")
    assert abs(scores.error) < 1e-6
    nodes = scores.nodes
    assert abs(float(nodes[0])) > 1e-3 and nodes[1:].abs().max() < 1e-6  # feature 0 is on few tokens
    exact = exact_feature_effects(engine, dic, "m0", torch.arange(len(nodes)))
    torch.testing.assert_close(exact, nodes, atol=1e-5, rtol=1e-4)
    assert scores.top(1)[0][0] == 0


def test_features_and_error_add_up_to_the_edge():
    spec = TransformerSpec(d_vocab=11, n_ctx=6, d_model=12, n_layers=2, n_heads=2, d_mlp=16, init_std=0.3)
    model = wrap(build(spec, seed=1).eval())
    gen = torch.Generator().manual_seed(1)
    clean, corrupt = torch.randint(0, 11, (4, 6), generator=gen), torch.randint(0, 11, (4, 6), generator=gen)
    engine = EdgeEngine(
        model,
        Graph.from_model(model),
        EdgeProblem(clean, corrupt, lambda lg: lg[:, -1].log_softmax(-1)[:, 2], 1),
    )
    dic = relu_dictionary(torch.randn(24, 12, generator=gen), b_dec=torch.randn(12, generator=gen))
    scores = feature_scores(engine, dic, "m0")
    assert abs(scores.error) > 1e-4  # a random dictionary leaves an error term
    eap = methods.eap(engine)
    edge = torch.tensor([engine.graph.edge_index[("m0", r)] for r in scores.receivers])
    torch.testing.assert_close(scores.edges.sum(0) + scores.error_edges, eap[edge], atol=1e-5, rtol=1e-4)
    with pytest.raises(MechscopeError, match="MLP node"):
        feature_scores(engine, dic, "a0.h1")
    with pytest.raises(MechscopeError, match="width"):
        feature_scores(engine, relu_dictionary(torch.randn(5, 7)), "m1")
