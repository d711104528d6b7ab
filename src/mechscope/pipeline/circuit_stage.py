"""The demo's circuit stage: the IOI circuit of the demo model, found with EAP-IG.

1. Build the IOI task (``n`` prompts), the layer-mode edge graph and the engine (clean and
   corrupted runs; an ablated edge carries the corrupted prompt's activation).
2. Score every edge with EAP-IG (``steps`` interpolation steps over the input embeddings).
3. Check the top ``check_top`` edges against exact edge patching.
4. Faithfulness of the top-k circuits at a few edge fractions (CPR, CMD).
5. Write ``circuit/`` (the circuit with its top ``circuit_edges`` edges marked, graphs, curve)
   and ``circuit.json`` (the summary the report reads).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .._fs import atomic_write_json
from ..models import HookedModel
from .circuit import CircuitJobConfig, run_circuit


def circuit_stage(
    model: HookedModel, run_dir: Path, *, n: int = 8, say: Callable[[str], None] = lambda _m: None
) -> dict[str, Any]:
    """Run the stage and write ``circuit.json`` in ``run_dir``; return its contents."""
    config = CircuitJobConfig(
        task="ioi", model=model.cfg.name, method="eap-ig", out=run_dir / "circuits", n=n, steps=5,
        circuit_edges=150, check_top=20, fractions=(0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
    )  # fmt: skip
    say(f"IOI circuit: EAP-IG over the edge graph ({n} prompts)")
    t0 = time.perf_counter()
    out, circuit, faith = run_circuit(config, progress=say, model=model)
    seconds = time.perf_counter() - t0
    summary = _read_summary(out)
    rel = out.relative_to(run_dir)
    result = {
        "dir": str(rel),
        "graph_png": f"{rel}/graph.png",
        "graph_html": f"{rel}/graph.html",
        "curve_png": f"{rel}/faithfulness.png",
        "n_edges": circuit.graph.n_edges,
        "circuit_edges": summary["circuit_edges"],
        "method_seconds": circuit.info["seconds"],
        "stage_seconds": round(seconds, 2),
        "top_edges": circuit.top_edges(10),
        "curve": asdict(faith),
        "top_check": summary["top_check"],
        "ablation": circuit.ablation,
        "metric": circuit.metric,
    }
    atomic_write_json(run_dir / "circuit.json", result)
    return result


def _read_summary(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "summary.json").read_text()))
