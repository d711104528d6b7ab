"""The reference edge-masked forward: all edges kept is the model; ablations do what they say."""

from __future__ import annotations

import pytest
import torch

from mechscope.toys.edges import all_edges, edge_forward, node_names, parse_edge
from mechscope.toys.transformer import TransformerSpec, build

SPEC = TransformerSpec(
    d_vocab=11, n_ctx=7, d_model=16, n_layers=2, n_heads=2, d_mlp=24, layer_norm=True, bias=True
)


@pytest.fixture(scope="module")
def model():
    return build(SPEC, seed=3).eval()


def test_graph_shape():
    assert node_names(2, 2) == ["input", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1", "logits"]
    edges = all_edges(2, 2)
    # a0 ports: 2 heads x 3 ports x 1 source; m0: 3 sources; a1 ports: 2 x 3 x 4; m1: 6; logits: 7
    assert len(edges) == 6 + 3 + 24 + 6 + 7 == len(set(edges))
    assert ("m0", "a1.h1<v>") in edges and ("a1.h0", "a0.h0<q>") not in edges and ("a0.h0", "m0") in edges
    assert parse_edge("a0.h1 -> m1") == ("a0.h1", "m1")
    with pytest.raises(ValueError, match="source->receiver"):
        parse_edge("a0.h1 m1")


def test_all_edges_kept_is_the_model(model):
    tokens = torch.randint(0, 11, (3, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(input_ids=tokens).logits
    for ablation in ("zero", "mean", torch.randint(0, 11, (3, 7))):
        torch.testing.assert_close(
            edge_forward(model, tokens, all_edges(2, 2), ablation), ref, atol=1e-5, rtol=1e-5
        )
    torch.testing.assert_close(edge_forward(model, tokens), ref, atol=1e-5, rtol=1e-5)


def test_corrupted_ablation_of_every_edge_is_the_corrupted_run(model):
    clean = torch.randint(0, 11, (2, 7), generator=torch.Generator().manual_seed(1))
    corrupt = torch.randint(0, 11, (2, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(input_ids=corrupt).logits
    torch.testing.assert_close(
        edge_forward(model, clean, keep=[], ablation=corrupt), ref, atol=1e-5, rtol=1e-5
    )


def test_one_edge_ablated_equals_a_hand_patch(model):
    """Zeroing input->logits only: the final residual loses exactly the embeddings."""
    tokens = torch.randint(0, 11, (2, 7), generator=torch.Generator().manual_seed(4))
    keep = [e for e in all_edges(2, 2) if e != ("input", "logits")]
    inner = model.model
    with torch.no_grad():
        captured = {}
        handle = inner.ln_f.register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0]))
        model(input_ids=tokens)
        handle.remove()
        embeds = inner.embed_tokens(tokens) + inner.embed_positions.weight[:7]
        ref = model.lm_head(inner.ln_f(captured["x"] - embeds))
    torch.testing.assert_close(edge_forward(model, tokens, keep), ref, atol=1e-5, rtol=1e-5)


def test_bad_input(model):
    tokens = torch.zeros(1, 7, dtype=torch.long)
    with pytest.raises(ValueError, match="unknown edges"):
        edge_forward(model, tokens, keep=[("a5.h0", "logits")])
    with pytest.raises(ValueError, match="ablation"):
        edge_forward(model, tokens, keep=[], ablation="median")
    with pytest.raises(ValueError, match="must match"):
        edge_forward(model, tokens, keep=[], ablation=torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(TypeError, match="toy transformer"):
        edge_forward(torch.nn.Linear(2, 2), tokens)
