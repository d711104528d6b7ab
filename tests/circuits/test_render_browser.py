"""The interactive circuit page in headless Chromium: it renders without errors, makes no outside
request, shows an edge's score on hover and a node's edges on click, and the slider prunes."""

from __future__ import annotations

import torch

from browser import page, serve
from mechscope import load_model
from mechscope.circuits import Circuit, EdgeEngine, EdgeProblem, Graph, methods
from mechscope.circuits.render import to_html
from mechscope.toys import ground_truth


def _circuit():
    truth = ground_truth("compiled_histogram")
    model = load_model("toy/compiled_histogram", device="cpu")
    gen = torch.Generator().manual_seed(0)
    clean = truth.sample(16, gen)
    answers = truth.algorithm(clean).clamp(min=0)

    def metric(logits):
        return logits.log_softmax(-1).gather(-1, answers[..., None])[..., 0].mean(-1)

    engine = EdgeEngine(model, Graph.from_model(model, "qkv"), EdgeProblem(clean, None, metric, 0), "zero")
    return Circuit(engine.graph, methods.exact(engine), "exact", "zero", "answer_logprob").top(6)


def test_circuit_page_in_chromium(tmp_path):
    circuit = _circuit()
    to_html(circuit.to_json(), tmp_path / "graph.html")
    best = circuit.edges[0]
    with serve(tmp_path) as base, page() as pg:
        pg.goto(f"{base}/graph.html")
        edges = pg.locator("[data-edge]")
        assert edges.count() == len(circuit.edges) == 6
        # hover the best edge: the tooltip names it with its score
        pg.locator(f'[data-edge="{best}"]').dispatch_event("mousemove", {"clientX": 50, "clientY": 50})
        tip = pg.locator(".tip")
        assert tip.is_visible() and tip.inner_text().startswith(f"{best}: ")
        # click a node: the panel says what it is and lists its edges
        pg.locator('[data-node="m0"]').click(force=True)
        panel = pg.locator("aside")
        assert panel.is_visible()
        text = panel.inner_text()
        assert text.startswith("m0") and "kind mlp · layer 0" in text
        assert "incoming (2)\ninput" in text and "a0.h0" in text and "outgoing (1)\nlogits" in text
        # the slider keeps the top edge only (one of the edges tied for the largest |score|)
        pg.evaluate(
            "() => { const s = document.querySelector('input[type=range]'); s.value = '1';"
            " s.dispatchEvent(new Event('input', {bubbles: true})); }"
        )
        visible = pg.evaluate(
            "() => Array.from(document.querySelectorAll('[data-edge]'))"
            ".filter(e => getComputedStyle(e).display !== 'none').map(e => +e.dataset.score)"
        )
        assert len(visible) == 1 and abs(visible[0]) == float(circuit.scores.abs().max())
        assert not pg.errors, pg.errors
        assert all(u.startswith(base) for u in pg.requests), pg.requests
