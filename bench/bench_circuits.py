"""Circuit discovery on SmolLM2-135M IOI: method costs, exact edge patching throughput, faithfulness.

What is measured
----------------
The real SmolLM2-135M (fp32, CPU) on ``--n`` 8 IOI prompts (15 tokens, left-padded), metric
logit difference at the last position, corrupted (ABC) prompts as the ablation, the
layer-mode edge graph (9,331 edges: every source into each layer's attention input, each
MLP input and the logits).

1. **Cost against one forward plus backward.** The baseline is one forward pass and a
   backward pass to the activations (the weights are frozen, as for every method here) on
   the clean prompts. EAP's total is the engine's two recording runs (clean and corrupted,
   with every head's output) plus one clean forward and backward; EAP-IG's is the same two
   runs plus ``m`` forward and backward passes. Targets: EAP <= 3x, EAP-IG <= (m + 2)x.
2. **Exact edge patching throughput.** ``--edges`` 48 edges drawn uniformly (seeded) from
   the graph. mechscope's exact scorer groups edges by their receiver's block, runs ``16``
   masks per forward and recomputes only from that block on; the baseline is one full
   forward per edge (the same engine, no batching, no skipping). Both give the same scores
   (checked). Target: >= 10x the loop.
3. **Faithfulness curves** of EAP and EAP-IG (m = 5): the top-k circuit (pruned to edges
   connected to input and logits) at edge fractions 0 .. 20 %, CPR and CMD, and the first
   fraction reaching 0.8.

Each timing is the minimum over ``--rounds`` rounds (other processes only add time).
There is no peer implementation to run side by side: TransformerLens 3.9's
``attribution_patching`` declares edge EAP and EAP-IG but raises ``NotImplementedError``
for them, and the reference EAP-IG code (hannamw/EAP-IG) is not on a package registry.

Run: ``.venv/bin/python bench/bench_circuits.py [--n 8] [--rounds 3]``; results go to stdout
and ``bench/results/circuits.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mechscope import DEFAULT_MODEL, load_model
from mechscope.circuits import methods
from mechscope.circuits.circuit import Circuit
from mechscope.circuits.engine import EdgeEngine
from mechscope.circuits.faithfulness import curve
from mechscope.circuits.graph import Graph
from mechscope.pipeline.circuit import task_problem
from mechscope.tasks import make_task, prepare

FRACTIONS = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def best(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--edges", type=int, default=48)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument(
        "--shape-only", default=None, metavar="DIR",
        help="a directory with SmolLM2's config.json and tokenizer: random weights of the same shape, for "
        "throughput only (e.g. on a GPU machine that cannot get the weights); implies --only-exact",
    )  # fmt: skip
    ap.add_argument("--batch", type=int, default=16, help="edge masks per forward in exact patching")
    ap.add_argument("--only-exact", action="store_true", help="measure exact edge patching throughput only")
    ap.add_argument("--out", default=None, help="results file (default: bench/results/circuits.json)")
    args = ap.parse_args()
    model = _model(args.device, args.shape_only)
    data = prepare(model, make_task("ioi", model, n=args.n, seed=0))
    problem = task_problem(model, data)
    graph = Graph.from_model(model, "layer")
    res: dict[str, object] = {
        "machine": {
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
            "weights": "random, SmolLM2's shape" if args.shape_only else "SmolLM2-135M-Instruct",
            "torch": torch.__version__,
        },
        "n": args.n,
        "width": data.width,
        "n_edges": graph.n_edges,
    }

    if args.shape_only or args.only_exact:
        res["exact"] = exact_throughput(EdgeEngine(model, graph, problem), args.edges, args.batch)
        _write(res, args.out)
        return

    def fwd_bwd() -> None:
        with model.hooks(grad=True):
            logits = model(data.clean, logits_to_keep=1)
        problem.metric(logits).sum().backward()

    fwd_bwd()  # warm-up
    base = best(fwd_bwd, args.rounds)
    engine_s = best(lambda: EdgeEngine(model, graph, problem), args.rounds)
    engine = EdgeEngine(model, graph, problem)
    eap_s = best(lambda: methods.eap(engine), args.rounds)
    ig_s = best(lambda: methods.eap_ig(engine, steps=args.steps), args.rounds)
    res["cost"] = {
        "fwd_bwd_s": base,
        "engine_runs_s": engine_s,
        "eap_method_s": eap_s,
        "eap_ig_method_s": ig_s,
        "eap_total_x": (engine_s + eap_s) / base,
        "eap_ig_total_x": (engine_s + ig_s) / base,
        "eap_ig_target_x": args.steps + 2,
    }
    res["exact"] = exact_throughput(engine, args.edges, args.batch)
    eap, ig = methods.eap(engine), methods.eap_ig(engine, steps=args.steps)
    curves = {}
    for name, scores in (("eap", eap), ("eap-ig", ig)):
        c = curve(engine, Circuit(graph, scores, name, "corrupted", problem.name), FRACTIONS, batch=9)
        curves[name] = {**c.__dict__, "reaches_0.8_at": c.first_reaching(0.8)}
    res["curves"] = curves
    _write(res, args.out)


def _write(res: dict[str, object], out: str | None) -> None:
    print(json.dumps(res, indent=2))
    path = Path(out) if out else Path(__file__).parent / "results" / "circuits.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2) + "\n")


def _model(device: str, shape_only: str | None):  # type: ignore[no-untyped-def]
    if shape_only is None:
        return load_model(DEFAULT_MODEL, device=device)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from mechscope import wrap

    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shape_only)).to(device).eval()
    return wrap(hf, AutoTokenizer.from_pretrained(shape_only), name="smollm2-135m (random weights)")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def exact_throughput(engine: EdgeEngine, k: int, batch: int = 16) -> dict[str, float]:
    """Batched, block-skipping exact patching of ``k`` random edges against one full forward per edge."""
    gen = torch.Generator().manual_seed(0)
    edges = torch.randperm(engine.graph.n_edges, generator=gen)[:k]
    methods.exact_edges(engine, edges[:batch], batch=batch)  # warm-up (kernels, allocator)
    _sync()
    t0 = time.perf_counter()
    fast = methods.exact_edges(engine, edges, batch=batch)
    _sync()
    fast_s = time.perf_counter() - t0
    base = engine.clean_metric.mean().cpu()
    slow = torch.empty(k)
    t0 = time.perf_counter()
    for i, e in enumerate(edges.tolist()):
        keep = torch.ones(1, engine.graph.n_edges, dtype=torch.bool)
        keep[0, e] = False
        slow[i] = engine.run(keep).mean() - base
    _sync()
    loop_s = time.perf_counter() - t0
    return {
        "edges": k,
        "batch": batch,
        "batched_edges_per_s": k / fast_s,
        "loop_edges_per_s": k / loop_s,
        "speedup": loop_s / fast_s,
        "max_abs_diff": float((fast - slow).abs().max()),
        "full_graph_estimate_min": engine.graph.n_edges / (k / fast_s) / 60,
    }


if __name__ == "__main__":
    main()
