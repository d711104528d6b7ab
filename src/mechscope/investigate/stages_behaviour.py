"""The investigation's first three stages: evaluate the behaviour, localise it, find its circuit.

Each stage writes into its own directory and returns the summary recorded in its
``stage.json``; every path in a summary is relative to the run directory, so the report and
``mechscope compare`` can link each number to the file it came from.

* ``evaluate``: accuracy, top-1 and the metric on the clean and corrupted prompts
  (``evaluate/eval.json``), the prompts with their top next tokens (``prompts.json``).
* ``localise``: exact activation patching of each sweep in ``sweeps`` (clean into corrupted,
  so the normalised effect is the fraction of the behaviour a site restores alone), attribution
  patching of the heads and its correlation with exact patching; heat maps (PNG and HTML);
  ``layer_scores``: each layer's summed |normalised head effect|, which picks the dictionaries'
  layers when they are not given.
* ``circuit``: edge scores (EAP-IG by default), the top edges checked against exact edge
  patching, the faithfulness curve; the circuit's components ranked by the summed |score| of
  their kept edges.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .._fs import atomic_write_json
from ..interventions import PatchResult, SweepConfig, sweep
from ..interventions.attribution import attribution_patching
from ..pipeline.localise import correlation
from ..tasks import evaluate
from ..tasks.jsonl import save_jsonl
from .runner import StageContext
from .session import Session

__all__ = ["circuit_stage", "evaluate_stage", "head_name", "localise_stage"]


def evaluate_stage(ctx: StageContext, session: Session) -> dict[str, Any]:
    """Measure the behaviour on every prompt pair."""
    s = session.settings("evaluate")
    model, data = session.model, session.prepared()
    ctx.progress(0, 2, f"{data.task.name}: {data.n} prompt pairs")
    ev = evaluate(model, data, session.config.behaviour.metric)
    atomic_write_json(ctx.out_dir / "eval.json", ev.as_dict())
    ctx.progress(1, 2, str(ev))
    show = min(s["show"], data.n)
    with torch.no_grad():
        logits = model(
            data.clean.tokens[:show], attention_mask=data.clean.attention_mask[:show], logits_to_keep=1
        )
    probs = logits[:, -1].float().softmax(-1).cpu()  # [show d_vocab]
    top_p, top_i = probs.topk(min(s["top_k"], probs.shape[-1]), dim=-1)  # [show k]
    rows = []
    for b in range(show):
        rows.append({
            "clean": _text(model, data.task.clean[b]), "corrupted": _text(model, data.task.corrupted[b]),
            "answer": _text(model, data.task.answers[b]), "wrong": _text(model, data.task.wrong[b]),
            "top": [{"token": _text(model, int(i)), "prob": float(p)} for p, i in zip(top_p[b], top_i[b])],
        })  # fmt: skip
    atomic_write_json(ctx.out_dir / "prompts.json", {"task": data.task.name, "prompts": rows})
    save_jsonl(data.task, ctx.out_dir / "task.jsonl")
    ctx.progress(2, 2, "done")
    return {**ev.as_dict(), "description": data.task.description, "eval": "evaluate/eval.json",
            "prompts": "evaluate/prompts.json"}  # fmt: skip


def _text(model: Any, x: Any) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        x = [x]
    ids = [int(v) for v in x]
    if model.tokenizer is None:
        return " ".join(str(v) for v in ids)
    return str(model.to_string(ids))


def head_name(layer: str | int, head: str | int) -> str:
    """A head's name in the circuit graph and the summary: ``a{layer}.h{head}``."""
    return f"a{layer}.h{head}"


def _save(result: PatchResult, out: Path, stage: str, name: str, title: str, top: int) -> dict[str, Any]:
    d = result.save(out / name)
    result.plot(d / "heatmap.png", title=title)
    result.to_html(d / "heatmap.html", title=title)
    span = result.clean - result.corrupted
    rows = []
    for labels, v in result.top(top):
        site = dict(zip((a.name for a in result.axes), labels))
        row = {"site": ", ".join(f"{k} {lab}" for k, lab in site.items()), "value": v,
               "effect": v - result.baseline, "normalised": (v - result.corrupted) / span if span else None}  # fmt: skip
        if "head" in site and "layer" in site:
            row["component"] = head_name(site["layer"], site["head"])
        rows.append(row)
    return {"name": name, "title": title, "method": result.method, "sweep": result.sweep,
            "dir": f"{stage}/{name}", "png": f"{stage}/{name}/heatmap.png", "html": f"{stage}/{name}/heatmap.html",
            "seconds": result.info.get("seconds"), "top": rows}  # fmt: skip


def localise_stage(ctx: StageContext, session: Session) -> dict[str, Any]:
    """Exact patching sweeps, attribution patching of the heads, and the layers that matter."""
    s = session.settings("localise")
    model, data = session.model, session.prepared(s["n"])
    metric = session.config.behaviour.metric
    sweeps, results, by_kind = list(s["sweeps"]), [], {}
    total = len(sweeps) + (1 if s["attribution"] else 0)
    for i, kind in enumerate(sweeps):
        ctx.progress(i, total, f"exact patching: {kind} ({data.n} pairs)")
        r = sweep(model, data, kind, metric=metric, config=SweepConfig())
        by_kind[kind] = r
        results.append(
            _save(
                r,
                ctx.out_dir,
                ctx.name,
                kind,
                f"{data.task.name}: patching {kind} (clean into corrupted)",
                s["top"],
            )
        )
    summary: dict[str, Any] = {"n": data.n, "metric": metric, "sweeps": results}
    heads = by_kind.get("heads")
    if heads is not None:
        norm = heads.normalized().abs()  # [layer head]
        layers = [int(x) for x in heads.axes[0].labels]
        summary["layer_scores"] = {str(layer): float(norm[i].sum()) for i, layer in enumerate(layers)}
        summary["top_heads"] = [r for r in results[sweeps.index("heads")]["top"] if "component" in r]
    if s["attribution"] and heads is not None:
        ctx.progress(len(sweeps), total, "attribution patching: heads")
        t0 = time.perf_counter()
        atp = attribution_patching(model, data, "heads", metric=metric)
        atp_s = time.perf_counter() - t0
        results.append(
            _save(
                atp,
                ctx.out_dir,
                ctx.name,
                "heads-atp",
                f"{data.task.name}: attribution patching of the heads",
                s["top"],
            )
        )
        summary["atp_vs_exact"] = {"correlation": correlation(heads, atp), "exact_seconds": heads.info.get("seconds"),
                                   "atp_seconds": round(atp_s, 3)}  # fmt: skip
    atomic_write_json(ctx.out_dir / "localise.json", summary)
    ctx.progress(total, total, "done")
    return summary


def circuit_stage(ctx: StageContext, session: Session) -> dict[str, Any]:
    """Edge scores, exact checks of the top edges, the faithfulness curve, the components."""
    from ..circuits.circuit import Circuit
    from ..circuits.engine import EdgeEngine
    from ..circuits.faithfulness import curve
    from ..circuits.graph import Graph
    from ..pipeline.circuit import CircuitJobConfig, score_edges, task_problem, top_check, write_circuit_dir

    s = session.settings("circuit")
    model, data = session.model, session.prepared(s["n"])
    cfg = CircuitJobConfig(
        task=data.task.name, model=session.config.model.name, method=s["method"], n=data.n, seed=session.config.seed,
        metric=session.config.behaviour.metric, ablation=s["ablation"], graph=s["graph"], steps=s["steps"],
        batch=s["batch"], circuit_edges=s["circuit_edges"], check_top=s["check_top"], fractions=tuple(s["fractions"]),
    )  # fmt: skip
    graph = Graph.from_model(model, cfg.graph)
    engine = EdgeEngine(model, graph, task_problem(model, data, cfg.metric), cfg.ablation)
    ctx.progress(0, 3, f"{cfg.method} over {graph.n_edges} edges")
    t0 = time.perf_counter()
    scores, settings = score_edges(engine, cfg)
    info = {
        "model": cfg.model,
        "task": data.task.name,
        "n": data.n,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    circuit = Circuit(graph, scores, cfg.method, cfg.ablation, engine.problem.name, settings, info=info)
    ctx.progress(1, 3, f"checking the top {cfg.check_top} edges with exact edge patching")
    check = top_check(engine, circuit, cfg)
    ctx.progress(2, 3, f"faithfulness at {len(cfg.fractions)} circuit sizes")
    faith = curve(engine, circuit, cfg.fractions, batch=cfg.batch)
    kept = circuit.top(cfg.circuit_edges)
    write_circuit_dir(cfg, data.task.name, kept, faith, check, out=ctx.out_dir / "circuit")
    ctx.progress(3, 3, "done")
    return {
        "method": cfg.method, "graph": cfg.graph, "ablation": cfg.ablation, "n": data.n, "metric": circuit.metric,
        "n_edges": graph.n_edges, "circuit_edges": int(kept.in_circuit.sum()) if kept.in_circuit is not None else 0,
        "method_seconds": info["seconds"], "top_edges": [[e, float(v)] for e, v in circuit.top_edges(10)],
        "components": _components(kept), "top_check": check, "curve": asdict(faith),
        "dir": "circuit/circuit", "graph_png": "circuit/circuit/graph.png", "graph_html": "circuit/circuit/graph.html",
        "curve_png": "circuit/circuit/faithfulness.png", "summary": "circuit/circuit/summary.json",
    }  # fmt: skip


def _components(circuit: Any, k: int = 12) -> list[dict[str, Any]]:
    """The kept circuit's nodes ranked by the summed |score| of the kept edges they send or receive."""
    if circuit.in_circuit is None:
        return []
    totals: dict[str, float] = {}
    for i in torch.nonzero(circuit.in_circuit).flatten().tolist():
        src, dst = circuit.graph.edges[i]
        w = abs(float(circuit.scores[i]))
        # sources are components; a layer-mode receiver (a{L}, m{L}) is not one head, a q/k/v port is
        for node in (src, dst.split("<")[0] if "<" in dst else None):
            if node is not None:
                totals[node] = totals.get(node, 0.0) + w
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:k]
    return [{"component": n, "score": v} for n, v in ranked]
