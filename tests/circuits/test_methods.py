"""Circuit methods: ground-truth recovery on the compiled models, identities, faithfulness, export."""

from __future__ import annotations

import json

import pytest
import torch

from mechscope import load_model, wrap
from mechscope.circuits import methods
from mechscope.circuits.circuit import Circuit, connected
from mechscope.circuits.engine import EdgeEngine, EdgeProblem
from mechscope.circuits.faithfulness import baselines, completeness, curve, faithfulness, roc_auc
from mechscope.circuits.graph import Graph
from mechscope.toys.compiled import COMPILED
from mechscope.toys.transformer import TransformerSpec, build


def compiled_engine(name, ablation="zero", n=32):
    model = load_model(f"toy/{name}", device="cpu")
    truth = COMPILED[name]()[1]
    gen = torch.Generator().manual_seed(0)
    clean, corrupt = truth.sample(n, gen), truth.sample(n, gen)
    answers = truth.algorithm(clean)

    def answer_logprob(logits):  # mean log-prob of the algorithm's answer where it is defined
        lp = logits.log_softmax(-1).gather(-1, answers.clamp(min=0)[..., None])[..., 0]
        defined = (answers >= 0).float()
        return (lp * defined).sum(1) / defined.sum(1)

    graph = Graph.from_model(model, mode="qkv")
    problem = EdgeProblem(clean, corrupt, answer_logprob, logits_to_keep=0, name="answer_logprob")
    return EdgeEngine(model, graph, problem, ablation), graph.edges_of(truth.edges)


@pytest.mark.parametrize("name", list(COMPILED))
def test_methods_recover_the_declared_circuit(name):
    engine, truth = compiled_engine(name)
    base = baselines(engine)
    assert faithfulness(engine, truth, base) >= 0.99
    assert completeness(engine, truth, base) <= 0.05
    assert roc_auc(methods.exact(engine, batch=7), truth) >= 0.99
    # m = 10: the histogram's MLP is a saturated step function; at m = 5 EAP-IG's AUC there is 0.90
    assert roc_auc(methods.eap_ig(engine, steps=10), truth) >= 0.99
    assert roc_auc(methods.eap_ig_activations(engine, steps=10), truth) >= 0.99
    scores, kept = methods.acdc(engine, tau=0.01)
    assert roc_auc(scores, truth) >= 0.99
    assert torch.equal(kept, truth)
    (_, kept_small), (_, kept_large) = methods.acdc_sweep(engine, [0.01, 100.0])
    assert torch.equal(kept_small, kept) and not kept_large.any()  # a huge threshold prunes everything


def test_top_edge_effect_is_its_exact_score():
    engine, _ = compiled_engine("compiled_induction")
    scores = methods.exact(engine)
    top = int(scores.abs().argmax())
    keep = torch.ones(1, engine.graph.n_edges, dtype=torch.bool)
    keep[0, top] = False
    change = float(engine.run(keep).mean() - engine.clean_metric.mean())
    assert change == pytest.approx(float(scores[top]), abs=1e-6) and abs(change) > 0.1


def _linear_toy():
    """Attention-only, no norms, patterns frozen below: the model is linear in every residual input."""
    spec = TransformerSpec(
        d_vocab=11,
        n_ctx=6,
        d_model=12,
        n_layers=2,
        n_heads=2,
        d_mlp=0,
        layer_norm=False,
        bias=False,
        init_std=0.5,
    )
    return wrap(build(spec, seed=2).eval())


def test_eap_equals_exact_patching_on_a_linear_model():
    model, clean, corrupt, frozen = _linear_setup(seed=0)

    def logit_diff(logits):  # linear in the logits
        return logits[:, -1, 1] - logits[:, -1, 2]

    with model.hooks(frozen):
        for mode in ("layer", "qkv"):
            engine = EdgeEngine(
                model, Graph.from_model(model, mode), EdgeProblem(clean, corrupt, logit_diff, 1)
            )
            exact, eap = methods.exact(engine), methods.eap(engine)
            assert exact.abs().max() > 0.01
            torch.testing.assert_close(eap, exact, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(
                methods.eap_ig_activations(engine, steps=2), exact, atol=1e-5, rtol=1e-4
            )
            # linear: ablating a node (all its outgoing edges at once) is the sum of its edges' effects
            nodes = methods.exact_nodes(engine, batch=4)
            summed = methods.node_scores(engine, exact)
            assert nodes.keys() == summed.keys()
            for name, value in nodes.items():
                assert value == pytest.approx(summed[name], abs=1e-4)


def _linear_setup(seed):
    """The linear toy, clean and corrupted tokens, and hooks freezing its patterns to the clean run's."""
    model = _linear_toy()
    gen = torch.Generator().manual_seed(seed)
    clean, corrupt = torch.randint(0, 11, (3, 6), generator=gen), torch.randint(0, 11, (3, 6), generator=gen)
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(2)]
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names=names)

    def constant(pattern):
        def hook(t, point):  # rows are variant-major copies of the clean batch
            return pattern.to(t.dtype).repeat(t.shape[0] // pattern.shape[0], 1, 1, 1)

        return hook

    return model, clean, corrupt, [(name, constant(cache[name])) for name in names]


def test_eap_ig_approaches_exact_as_steps_grow_on_a_single_path():
    """One MLP between input and logits (attention zeroed): the input->m0 edge is the only path."""
    spec = TransformerSpec(
        d_vocab=9,
        n_ctx=4,
        d_model=10,
        n_layers=1,
        n_heads=1,
        d_mlp=16,
        layer_norm=False,
        bias=True,
        init_std=0.5,
    )
    hf = build(spec, seed=4).eval()
    with torch.no_grad():
        hf.model.layers[0].attn.o_proj.weight.zero_()
    model = wrap(hf)
    gen = torch.Generator().manual_seed(1)
    clean, corrupt = torch.randint(0, 9, (4, 4), generator=gen), torch.randint(0, 9, (4, 4), generator=gen)
    engine = EdgeEngine(
        model, Graph.from_model(model), EdgeProblem(clean, corrupt, lambda lg: lg[:, -1, 0], 1)
    )
    edge = engine.graph.edge_index[("input", "m0")]
    exact = float(methods.exact(engine)[edge])
    errors = [abs(float(methods.eap_ig(engine, steps=m)[edge]) - exact) for m in (1, 4, 32)]
    assert abs(exact) > 0.05
    assert errors[2] < errors[1] < errors[0] and errors[2] < 0.01 * abs(exact)


def test_circuit_pruning_export_and_curve(tmp_path):
    engine, truth = compiled_engine("compiled_induction")
    circuit = Circuit(engine.graph, methods.exact(engine), "exact", "zero", "answer_logprob", {"batch": 32})
    top = circuit.top(int(truth.sum()))
    assert torch.equal(top.in_circuit, truth)
    # an edge whose source nothing reaches is pruned: keep only a1.h0->logits
    lone = torch.zeros_like(truth)
    lone[engine.graph.edge_index[("a1.h0", "logits")]] = True
    assert not connected(engine.graph, lone).any()
    c = curve(engine, circuit, fractions=(0.0, 0.1, 0.3, 1.0))
    assert c.faithfulness[0] == pytest.approx(0.0, abs=1e-6) and c.faithfulness[-1] == pytest.approx(
        1.0, abs=1e-6
    )
    assert c.faithfulness[2] >= 0.99 and 0 < c.cmd < 0.5 < c.cpr <= 1
    top.save(tmp_path / "c")
    loaded = Circuit.load(tmp_path / "c")
    assert torch.equal(loaded.scores, top.scores) and torch.equal(loaded.in_circuit, top.in_circuit)
    data = json.loads((tmp_path / "c" / "circuit.json").read_text())
    assert data["method"] == "exact" and sum(e["in_circuit"] for e in data["edges"]) == int(truth.sum())
    assert {e["port"] for e in data["edges"]} == {"q", "k", "v", None}


def test_roc_auc_closed_form():
    assert roc_auc(torch.tensor([3.0, 2.0, 1.0, 0.0]), torch.tensor([True, True, False, False])) == 1.0
    assert (
        roc_auc(torch.tensor([0.0, 2.0, 1.0, 3.0]), torch.tensor([True, True, False, False])) == 0.25
    )  # 1 of 4 pairs
    assert roc_auc(torch.tensor([1.0, 1.0]), torch.tensor([True, False])) == 0.5


def test_per_position_scores_add_up_and_match_exact_on_a_linear_model():
    model, clean, corrupt, frozen = _linear_setup(seed=5)
    with model.hooks(frozen):
        engine = EdgeEngine(
            model, Graph.from_model(model), EdgeProblem(clean, corrupt, lambda lg: lg[:, -1, 1], 1)
        )
        per_pos = methods.eap(engine, per_position=True)  # [pos, E]
        assert per_pos.shape == (6, engine.graph.n_edges)
        torch.testing.assert_close(per_pos.sum(0), methods.eap(engine), atol=1e-5, rtol=1e-5)
        edges = torch.tensor([0, 3, engine.graph.n_edges - 1])
        exact = methods.exact_per_position(engine, edges, batch=5)  # [pos, 3]
        torch.testing.assert_close(exact, per_pos[:, edges], atol=1e-5, rtol=1e-4)
        assert exact.abs().max() > 0.01
