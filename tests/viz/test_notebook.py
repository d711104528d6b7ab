"""`_repr_html_` of the result objects and the `mechscope.viz` widgets, several on one fixture page,
rendered in headless Chromium the way a notebook shows them (each output carries its own bundle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mechscope
from browser import page, serve
from mechscope import viz
from mechscope.errors import MechscopeError
from mechscope.interventions.results import Axis, PatchResult

TEXT = "the quick brown fox"


@pytest.fixture(scope="module")
def outputs(tiny_dirs):
    model = mechscope.load_model(str(tiny_dirs["llama-gqa"]))
    _, cache = model.run_with_cache(TEXT, names=["blocks.1.attn.hook_pattern", "blocks.0.hook_resid_post"])
    values = torch.tensor([[0.5, -2.0, 1.0], [0.25, 3.0, -1.5]])
    result = PatchResult(values, (Axis("layer", ("0", "1")), Axis("pos", ("a", "b", "c"))),
                         "activation_patching", "resid_pre", "logit_diff", 2.0, 0.0)  # fmt: skip
    toks = [str(t) for t in model.to_str_tokens(TEXT)]
    pattern = cache["blocks.1.attn.hook_pattern"][0]
    widgets = [
        result._repr_html_(),
        result._repr_html_(),  # the same object twice: no id clash
        cache._repr_html_(),
        viz.attention(toks, pattern, layer=1)._repr_html_(),
        viz.tokens(["a", "<script>x</script>", " c"], [0.0, 1.5, -0.5])._repr_html_(),
        viz.graph(
            [
                {"id": "in", "layer": 0, "index": 0, "kind": "input", "label": "in"},
                {"id": "out", "layer": 1, "index": 0, "kind": "logits", "label": "out"},
            ],
            [{"source": "in", "target": "out", "weight": 0.7}],
        )._repr_html_(),
    ]
    return widgets, values, pattern


def test_several_widgets_render_on_one_page(outputs, tmp_path):
    widgets, values, pattern = outputs
    html = '<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>'
    html += "\n".join(f'<div class="output">{w}</div>' for w in widgets) + "</body></html>"
    (tmp_path / "nb.html").write_text(html)
    with serve(tmp_path) as url, page() as pg:
        pg.goto(f"{url}/nb.html")
        pg.wait_for_function("document.querySelectorAll('[data-component]').length >= 6")
        kinds = pg.eval_on_selector_all("[data-component]", "els => els.map(e => e.dataset.component)")
        assert sorted(kinds) == sorted(["heatmap", "heatmap", "attention", "attention", "tokens", "graph"])
        vmax = pg.eval_on_selector_all("[data-component=heatmap]", "els => els.map(e => +e.dataset.vmax)")
        # drawn normalised, as PatchResult.plot does: (value - corrupted 0) / (clean 2 - corrupted 0)
        assert vmax == pytest.approx([float((values / 2.0).abs().max())] * 2)
        acts = pg.eval_on_selector_all(
            "[data-component=tokens] [data-act]", "els => els.map(e => +e.dataset.act)"
        )
        assert acts == pytest.approx([0.0, 1.5, -0.5])
        assert pg.evaluate("document.querySelectorAll('script:not([type])').length") == 0
        assert pg.evaluate("typeof window.x") == "undefined"  # the token's <script> stayed text
        assert pg.evaluate("Object.isFrozen(globalThis.mechscope)")
        heads = pg.eval_on_selector_all("[data-component=attention]", "els => els.map(e => e.dataset.head)")
        assert len(heads) == 2
        pg.screenshot(path=str(tmp_path / "notebook.png"), full_page=True)
        assert not pg.errors, pg.errors
        assert all(u.startswith(url) or u.startswith(("data:", "blob:")) for u in pg.requests), pg.requests
    assert (tmp_path / "notebook.png").stat().st_size > 1000
    assert pattern.shape[0] == 4  # the cache widget drew every head of the tiny model


def test_standalone_page_and_errors(tmp_path):
    w = viz.heatmap(np.array([[1.0, -1.0]]), ["r"], ["a", "b"], title="t</script><b>")
    path = w.save(tmp_path / "w.html")
    text = path.read_text()
    assert text.count("<script") == 2 and "t</script><b>" not in text  # bundle once + the call; title escaped
    with pytest.raises(MechscopeError, match="labels say"):
        viz.heatmap(np.zeros((2, 2)), ["r"], ["a", "b"])
    with pytest.raises(MechscopeError, match="tokens"):
        viz.attention(["a"], np.zeros((1, 2, 2)))
    with pytest.raises(MechscopeError, match="unknown component"):
        viz.Widget("pie", {})
