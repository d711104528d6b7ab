"""``mechscope circuit``: find the circuit of a behaviour and measure how faithful it is.

1. Load the model, build and evaluate the task (a built-in name or a JSONL file).
2. Build the edge graph and the engine (clean, ablated runs), score every edge with the
   chosen method (exact, eap, eap-ig or acdc).
3. Check the top edges' scores against exact edge patching (``check_top`` of them).
4. Measure faithfulness against circuit size (top-k circuits pruned to connected edges)
   and the MIB-style CPR/CMD summaries.
5. Write the circuit directory: ``circuit.json`` + ``scores.safetensors`` (the top
   ``circuit_edges`` edges marked), ``graph.svg``, ``graph.png``, ``graph.html``
   (interactive), ``faithfulness.png``, ``summary.json``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .._fs import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..circuits import methods
from ..circuits.circuit import Circuit
from ..circuits.engine import EdgeEngine, EdgeProblem
from ..circuits.faithfulness import Curve, curve
from ..circuits.graph import Graph
from ..circuits.render import to_html, to_png, to_svg
from ..errors import MechscopeError
from ..models import DEFAULT_MODEL, HookedModel, load_model
from ..tasks import PreparedTask, evaluate, make_metric, prepare
from .patch import build_task

METHOD_NAMES = ("eap-ig", "eap", "exact", "acdc")
"""Edge-scoring methods ``mechscope circuit`` runs."""


@dataclass(frozen=True)
class CircuitJobConfig:
    """What ``mechscope circuit`` runs."""

    task: str = "ioi"
    """A built-in task (ioi, factual, induction, greater_than) or a JSONL file."""
    model: str = DEFAULT_MODEL
    """Model: a built-in name, a .gguf file, a local HF directory, a hub id or toy/<name>."""
    method: str = "eap-ig"
    """eap-ig, eap, exact or acdc."""
    out: Path = Path("runs")
    """Directory under which the circuit directory is created."""
    n: int = 8
    """Number of task examples (built-in tasks)."""
    seed: int = 0
    """Seed for task generation."""
    metric: str | None = None
    """Metric name (default: the task's own)."""
    ablation: str = "corrupted"
    """What an ablated edge carries: corrupted (the corrupted prompt's activation), mean or zero."""
    graph: str = "layer"
    """Receivers: layer (one attention input per layer) or qkv (each head's q, k, v; costlier)."""
    steps: int = 5
    """EAP-IG interpolation steps."""
    tau: float = 0.05
    """ACDC threshold (absolute metric change)."""
    batch: int = 16
    """Edge masks per forward pass (exact patching, curves)."""
    circuit_edges: int = 200
    """Edges kept in the saved circuit (before pruning to connected edges)."""
    check_top: int = 20
    """Check this many top edges against exact edge patching (0: skip)."""
    fractions: tuple[float, ...] = (0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
    """Edge fractions of the faithfulness curve."""
    device: str | None = None
    """Device for the model (default: CUDA when available, else CPU)."""


def task_problem(model: HookedModel, data: PreparedTask, metric: str | None = None) -> EdgeProblem:
    """The engine's problem for a prepared task: its prompts and its metric at the final position."""
    m = make_metric(metric or data.task.metric, model, data)
    return EdgeProblem(data.clean, data.corrupted, lambda logits: m(logits[:, -1], data), 1, m.name)


def score_edges(engine: EdgeEngine, config: CircuitJobConfig) -> tuple[torch.Tensor, dict[str, Any]]:
    """Every edge's score by ``config.method``, and the settings used."""
    if config.method == "eap-ig":
        return methods.eap_ig(engine, steps=config.steps, progress=True), {"steps": config.steps}
    if config.method == "eap":
        return methods.eap(engine), {}
    if config.method == "exact":
        return methods.exact(engine, batch=config.batch, progress=True), {"batch": config.batch}
    if config.method == "acdc":
        return methods.acdc(engine, config.tau, progress=True)[0], {"tau": config.tau}
    raise MechscopeError(f"method must be one of {', '.join(METHOD_NAMES)}, not {config.method!r}")


def run_circuit(
    config: CircuitJobConfig, progress: Callable[[str], None] | None = None, model: HookedModel | None = None
) -> tuple[Path, Circuit, Curve]:
    """Run the job and write its directory; returns ``(directory, circuit, curve)``."""
    say = progress or (lambda _msg: None)
    if config.method not in METHOD_NAMES:
        raise MechscopeError(f"method must be one of {', '.join(METHOD_NAMES)}, not {config.method!r}")
    if model is None:
        say(f"loading {config.model}")
        model = load_model(config.model, device=config.device)
    data = prepare(model, build_task(model, config.task, config.n, config.seed))
    say(str(evaluate(model, data, config.metric)))
    graph = Graph.from_model(model, config.graph)
    engine = EdgeEngine(model, graph, task_problem(model, data, config.metric), config.ablation)
    say(f"{config.method} over {graph.n_edges} edges ({config.graph} graph, {config.ablation} ablation)")
    t0 = time.perf_counter()
    scores, settings = score_edges(engine, config)
    seconds = time.perf_counter() - t0
    info = {"model": config.model, "task": data.task.name, "n": data.n, "seconds": round(seconds, 2)}
    circuit = Circuit(graph, scores, config.method, config.ablation, engine.problem.name, settings, info=info)
    check = top_check(engine, circuit, config)
    say(f"faithfulness curve over {len(config.fractions)} circuit sizes")
    faith = curve(engine, circuit, config.fractions, batch=config.batch)
    out = write_circuit_dir(config, data.task.name, circuit.top(config.circuit_edges), faith, check)
    return out, circuit, faith


def top_check(engine: EdgeEngine, circuit: Circuit, config: CircuitJobConfig) -> dict[str, Any]:
    """The top edges' scores next to their exact edge-patching scores."""
    if config.check_top <= 0:
        return {}
    top = circuit.ranked()[: config.check_top]
    exact = (
        circuit.scores[top]
        if circuit.method == "exact"
        else methods.exact_edges(engine, top, batch=config.batch)
    )
    est = circuit.scores[top]
    corr = float(torch.corrcoef(torch.stack([est, exact]))[0, 1]) if len(top) > 1 else float("nan")
    return {
        "edges": [circuit.graph.edge_names[i] for i in top.tolist()],
        "score": est.tolist(),
        "exact": exact.tolist(),
        "pearson": corr,
        "sign_agreement": float((est.sign() == exact.sign()).float().mean()),
    }


def write_circuit_dir(
    config: CircuitJobConfig, task: str, circuit: Circuit, faith: Curve, check: dict[str, Any],
    out: Path | None = None,
) -> Path:  # fmt: skip
    """The circuit directory: circuit files, graphs, the faithfulness plot and ``summary.json``.

    ``out`` defaults to a new ``circuit-<method>-<task>-<stamp>`` under ``config.out``.
    """
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path(config.out) / f"circuit-{config.method}-{task}-{stamp}"
    circuit.save(out)
    data = circuit.to_json()
    atomic_write_text(out / "graph.svg", to_svg(data))
    to_png(data, out / "graph.png")
    to_html(data, out / "graph.html", title=f"{task}: {config.method} circuit")
    plot_curve(faith, out / "faithfulness.png", f"{task}: {config.method}")
    summary = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "n_edges": circuit.graph.n_edges,
        "circuit_edges": int(circuit.in_circuit.sum()) if circuit.in_circuit is not None else 0,
        "top_edges": circuit.top_edges(20),
        "curve": asdict(faith),
        "top_check": check,
        **circuit.info,
    }
    atomic_write_json(out / "summary.json", summary)
    return out


def plot_curve(faith: Curve | dict[str, Curve], path: Path, title: str) -> Path:
    """Faithfulness against the fraction of edges kept (one line per curve)."""
    curves = faith if isinstance(faith, dict) else {"": faith}
    fig = Figure(figsize=(6, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for label, c in curves.items():
        name = f"{label} " if label else ""
        ax.plot(c.fractions, c.faithfulness, marker="o", label=f"{name}CPR {c.cpr:.2f}, CMD {c.cmd:.2f}")
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.axhline(0.8, color="gray", lw=0.5, ls=":")
    ax.set(xscale="symlog", xlabel="fraction of edges kept", ylabel="normalised faithfulness", title=title)
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return atomic_write_bytes(path, buf.getvalue())
