"""Checks and an ``index.html`` for the compiled ground-truth models (``mechscope toy analyze``).

For a compiled model and its :class:`~mechscope.toys.compiled.GroundTruth`:

* accuracy of the model against the algorithm on sampled inputs;
* the circuit alone (every other edge zero-ablated, :func:`~mechscope.toys.edges.edge_forward`):
  its accuracy and the largest change in log-probabilities;
* each circuit edge removed in turn: the accuracy left (each should break the algorithm).
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .._fs import atomic_write_bytes, atomic_write_json, atomic_write_text
from .compiled import COMPILED, GroundTruth
from .edges import edge_forward


@dataclass(frozen=True)
class CompiledCheck:
    """Measured behaviour of a compiled model and of its declared circuit."""

    n_inputs: int
    """Sequences checked."""
    accuracy: float
    """Argmax of the model against the algorithm, where the algorithm is defined."""
    circuit_accuracy: float
    """The same with only the circuit's edges kept (the rest zero-ablated)."""
    circuit_max_logprob_diff: float
    """Largest |log-prob(circuit only) - log-prob(full model)| where the algorithm is defined."""
    without_edge: dict[str, float]
    """Accuracy with each circuit edge removed from the circuit."""


def check_compiled(model: Any, truth: GroundTruth, n: int = 1000, seed: int = 0) -> CompiledCheck:
    """Run the checks on ``n`` sequences from ``truth.sample``."""
    tokens = truth.sample(n, torch.Generator().manual_seed(seed))
    answers = truth.algorithm(tokens)
    defined = answers >= 0
    hf = getattr(model, "hf_model", model)
    with torch.no_grad():
        full = hf(input_ids=tokens).logits

    def accuracy(logits: torch.Tensor) -> float:
        return (logits.argmax(-1) == answers)[defined].float().mean().item()

    circuit = edge_forward(hf, tokens, keep=truth.edges)
    diff = (circuit.log_softmax(-1) - full.log_softmax(-1))[defined].abs().max().item()
    without = {
        f"{s}->{d}": accuracy(edge_forward(hf, tokens, keep=[e for e in truth.edges if e != (s, d)]))
        for s, d in truth.edges
    }
    return CompiledCheck(n, accuracy(full), accuracy(circuit), diff, without)


def write_compiled_report(name: str, out: str | Path, n: int = 1000) -> Path:
    """Write ``circuit.json``, ``checks.json``, ``edges.png`` and ``index.html`` for toy ``name``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, truth = COMPILED[name]()
    check = check_compiled(model, truth, n)
    atomic_write_json(out / "circuit.json", truth.to_json())
    atomic_write_json(out / "checks.json", check.__dict__)
    fig = Figure(figsize=(8, 0.45 * len(check.without_edge) + 1.4))
    ax = fig.add_subplot(1, 1, 1)
    names = list(check.without_edge)
    ax.barh(names, [check.without_edge[e] for e in names], color="tab:red")
    ax.axvline(check.circuit_accuracy, color="tab:green", ls="--", label="whole circuit")
    ax.set(xlim=(0, 1.02), xlabel="accuracy", title=f"{name}: accuracy with one circuit edge removed")
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    fig.tight_layout()
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(out / "edges.png", buf.getvalue())
    esc = html.escape
    rows = [
        ("algorithm", truth.description),
        ("circuit components", ", ".join(truth.components)),
        ("distractors (outside the circuit)", ", ".join(truth.distractors)),
        (f"model accuracy ({check.n_inputs} inputs)", f"{check.accuracy:.2%}"),
        ("circuit only (others zero-ablated)", f"{check.circuit_accuracy:.2%}"),
        ("largest log-prob change, circuit only", f"{check.circuit_max_logprob_diff:.2e}"),
    ]
    table = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    edges = "".join(f"<li><code>{esc(e)}</code></li>" for e in truth.edge_names())
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(name)}</title></head><body>"
        f"<h1>{esc(name)}</h1><table>{table}</table><h2>Circuit edges</h2><ul>{edges}</ul>"
        "<figure><img src='edges.png' alt='edges.png'></figure></body></html>\n"
    )
    return atomic_write_text(out / "index.html", page)
