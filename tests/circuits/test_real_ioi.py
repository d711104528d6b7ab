"""SmolLM2 IOI: EAP-IG agrees with exact edge patching and beats EAP at small circuit sizes."""

from __future__ import annotations

import pytest
import torch

from mechscope import DEFAULT_MODEL, load_model
from mechscope.circuits import Circuit, EdgeEngine, Graph, curve, methods
from mechscope.pipeline.circuit import task_problem
from mechscope.tasks import make_task, prepare

FRACTIONS = (0.0, 0.001, 0.002, 0.005, 0.05, 0.1, 0.2)


@pytest.fixture(scope="module")
def engine():
    model = load_model(DEFAULT_MODEL, device="cpu")
    data = prepare(model, make_task("ioi", model, n=8, seed=0))
    return EdgeEngine(model, Graph.from_model(model, "layer"), task_problem(model, data))


@pytest.mark.real
def test_eap_ig_top_edges_match_exact_patching(engine):
    ig = methods.eap_ig(engine, steps=5)
    top = torch.sort(ig.abs(), descending=True).indices[:12]
    exact = methods.exact_edges(engine, top, batch=12)
    assert torch.corrcoef(torch.stack([ig[top], exact]))[0, 1] > 0.8
    assert (ig[top].sign() == exact.sign()).float().mean() >= 0.9
    # the strongest edge: the embeddings into the first MLP (SmolLM2's detokenising MLP 0)
    assert engine.graph.edge_names[int(top[0])] == "input->m0" and exact[0] < -3


@pytest.mark.real
def test_eap_ig_curve_rises_and_beats_eap_at_small_budgets(engine):
    graph = engine.graph
    ig = curve(
        engine, Circuit(graph, methods.eap_ig(engine, steps=5), "eap-ig", "corrupted", "ld"), FRACTIONS
    )
    eap = curve(engine, Circuit(graph, methods.eap(engine), "eap", "corrupted", "ld"), FRACTIONS)
    f_ig, f_eap = ig.faithfulness, eap.faithfulness
    assert f_ig[0] == pytest.approx(0.0, abs=1e-4)
    assert f_ig[-1] > f_ig[-2] > f_ig[-3] > max(f_ig[1:4])  # rises with the edge count
    assert all(a > b for a, b in zip(f_ig[1:4], f_eap[1:4], strict=True))  # 0.1 - 0.5 % of the edges
    assert ig.cpr > eap.cpr
