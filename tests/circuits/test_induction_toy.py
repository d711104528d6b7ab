"""On the trained 2-layer induction toy, circuit discovery finds the previous-token head's
K-composition into the induction heads."""

from __future__ import annotations

import pytest
import torch

from mechscope import load_model
from mechscope.circuits import Circuit, EdgeEngine, EdgeProblem, Graph, faithfulness, methods
from mechscope.toys.induction import InductionRecipe, eval_batch

RECIPE = InductionRecipe()
PERIOD = RECIPE.n_ctx // 2


@pytest.fixture(scope="module")
def engine():
    model = load_model("toy/induction", device="cpu")
    clean = eval_batch(RECIPE, PERIOD, batch=32, seed=1)  # a random block, twice
    corrupt = clean.clone()  # a different first copy: the second copy's earlier occurrences are gone
    corrupt[:, :PERIOD] = torch.randint(
        0, RECIPE.d_vocab, (32, PERIOD), generator=torch.Generator().manual_seed(2)
    )

    def repeated_logprob(logits):  # log-prob of each next token in the second copy
        lp = logits[:, :-1].log_softmax(-1).gather(-1, clean[:, 1:, None])[..., 0]
        return lp[:, PERIOD:].mean(-1)

    graph = Graph.from_model(model, mode="qkv")
    return EdgeEngine(model, graph, EdgeProblem(clean, corrupt, repeated_logprob, logits_to_keep=0))


@pytest.mark.parametrize("method", ["exact", "eap-ig"])
def test_previous_token_head_composes_into_the_induction_heads_keys(engine, method):
    scores = methods.exact(engine) if method == "exact" else methods.eap_ig(engine, steps=5)
    graph = engine.graph
    head_to_head = [i for i, (s, r) in enumerate(graph.edges) if s.startswith("a0.") and r.startswith("a1.")]
    top = sorted(head_to_head, key=lambda i: -abs(float(scores[i])))[:2]
    assert {graph.edge_names[i] for i in top} == {"a0.h0->a1.h0<k>", "a0.h0->a1.h1<k>"}
    assert all(scores[i] < -0.5 for i in top)  # each, ablated alone, costs over half a nat
    circuit = Circuit(graph, scores, method, "corrupted", "repeated_logprob").top(12)
    assert {"a0.h0->a1.h0<k>", "a0.h0->a1.h1<k>"} <= set(circuit.edges)
    assert faithfulness(engine, circuit) > 0.7
