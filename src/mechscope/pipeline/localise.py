"""The demo's localisation stage: where does SmolLM2 compute IOI and factual recall?

1. IOI (Wang et al. 2022): evaluate; exact activation patching of the residual stream
   (layer × position) and of every head's output; attribution patching of the heads, with
   its correlation to exact patching; the top heads.
2. Factual recall (Meng et al. 2022): evaluate on a group of prompts with one layout; exact
   patching of the residual stream (causal tracing).
3. Each result is saved as its own artifact directory under ``results/`` with a PNG and an
   interactive HTML heat map; ``localisation.json`` summarises everything for the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._fs import atomic_write_json
from ..interventions import PatchResult, sweep
from ..interventions.attribution import attribution_patching
from ..models import HookedModel
from ..tasks import Task, aligned_groups, evaluate, make_task, prepare


def correlation(a: PatchResult, b: PatchResult) -> float:
    """Pearson correlation of two results' effects (values minus their baselines)."""
    x = torch.stack([(a.values - a.baseline).flatten(), (b.values - b.baseline).flatten()]).double()
    return float(torch.corrcoef(x)[0, 1])


def _save(result: PatchResult, root: Path, name: str, title: str) -> dict[str, Any]:
    out = result.save(root / "results" / name)
    result.plot(out / "heatmap.png", title=title)
    result.to_html(out / "heatmap.html", title=title)
    names = [a.name for a in result.axes]
    top = [
        {
            "site": ", ".join(f"{n} {lab}" for n, lab in zip(names, labels)),
            "value": v,
            "effect": v - result.baseline,
        }
        for labels, v in result.top(8)
    ]
    return {
        "name": name,
        "title": title,
        "method": result.method,
        "sweep": result.sweep,
        "png": f"results/{name}/heatmap.png",
        "html": f"results/{name}/heatmap.html",
        "seconds": result.info.get("seconds"),
        "top": top,
    }


def _tracing_subset(model: HookedModel, n: int) -> Task:
    """Factual prompts sharing one length and subject-end position, preferring long subjects."""
    task = make_task("factual", model)
    groups: dict[tuple[int, int], list[int]] = {}
    for key, members in aligned_groups(model, Task(
        task.name, task.clean, task.corrupted, task.answers, task.wrong,
        positions={"subject_last": task.positions["subject_last"]},
    )).items():  # fmt: skip
        groups[(key[0], key[1])] = members
    spans = [
        last - first for first, last in zip(task.positions["subject_first"], task.positions["subject_last"])
    ]

    def score(item: tuple[tuple[int, int], list[int]]) -> tuple[bool, float, int]:
        _, members = item
        return len(members) >= n, sum(spans[i] for i in members) / len(members), len(members)

    _, members = max(groups.items(), key=score)
    return task.subset(members[:n])


def localise(
    model: HookedModel, run_dir: Path, *, n: int = 8, say: Callable[[str], None] = lambda _m: None
) -> dict[str, Any]:
    """Run the stage for ``model`` and write ``localisation.json`` in ``run_dir``; return its contents."""
    tasks, results = [], []
    say(f"IOI: evaluating and patching ({n} prompts)")
    ioi = prepare(model, make_task("ioi", model, n=n))
    tasks.append(evaluate(model, ioi).as_dict())
    resid = sweep(model, ioi, "resid_pre")
    results.append(
        _save(resid, run_dir, "ioi-resid_pre", "IOI: patching the residual stream (clean → corrupted)")
    )
    heads = sweep(model, ioi, "heads")
    results.append(_save(heads, run_dir, "ioi-heads", "IOI: patching each head's output (clean → corrupted)"))
    t0 = time.perf_counter()
    atp = attribution_patching(model, ioi, "heads")
    atp_seconds = time.perf_counter() - t0
    results.append(_save(atp, run_dir, "ioi-heads-atp", "IOI: attribution patching of each head's output"))
    say("factual recall: causal tracing")
    factual = prepare(model, _tracing_subset(model, n))
    tasks.append(evaluate(model, factual).as_dict())
    trace = sweep(model, factual, "resid_pre")
    results.append(_save(trace, run_dir, "factual-resid_pre", "Factual recall: patching the residual stream"))
    summary = {
        "tasks": tasks,
        "results": results,
        "top_heads": results[1]["top"],
        "atp_vs_exact": {
            "correlation": correlation(heads, atp),
            "exact_seconds": heads.info.get("seconds"),
            "atp_seconds": round(atp_seconds, 3),
        },
    }
    atomic_write_json(run_dir / "localisation.json", summary)
    return summary
