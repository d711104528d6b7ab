"""Widgets for the library's result objects (what their ``_repr_html_`` shows in a notebook).

These take the objects by duck typing (attributes, not imports), so :mod:`mechscope.viz` depends
on no model-side package and the result classes import it lazily.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .widgets import Widget, _array, attention, graph, heatmap


def fold_axes(
    values: Any, labels: Sequence[Sequence[str]], metric: str = ""
) -> tuple[Any, list[str], list[str]]:
    """``(grid [rows, cols], rows, cols)``: axes beyond the second folded into the columns
    (``"col·label"``); a single axis becomes one row named ``metric``."""
    a = _array(values)
    if a.ndim == 1:
        return a[None], [metric], list(labels[0])
    cols = [""]
    for ax in labels[1:]:
        cols = [f"{c}·{lab}" if c else lab for c in cols for lab in ax]
    return a.reshape(a.shape[0], -1), list(labels[0]), cols


def patch_result(result: Any, normalized: bool | None = None) -> Widget:
    """A patching/attribution result as a heat map (axes beyond the second are folded into columns).

    ``normalized`` (default: yes, except for direct logit attribution and when clean equals
    corrupted) draws ``result.normalized()``, 0 at the corrupted run and 1 at the clean one, as
    ``PatchResult.plot`` does; raw patched metric values all sit near one baseline, so a map of
    them centred at 0 shows nothing.
    """
    axes = list(result.axes)
    if normalized is None:
        normalized = (
            getattr(result, "method", "") != "direct_logit_attribution"
            and _finite(result.clean) and _finite(result.corrupted) and result.clean != result.corrupted
        )  # fmt: skip
    values = result.normalized() if normalized else result.values
    metric = f"normalized {result.metric}" if normalized else str(result.metric)
    grid, rows, cols = fold_axes(values, [a.labels for a in axes], metric)
    names = " × ".join(a.name for a in axes)
    note = f"clean {result.clean:.4g}, corrupted {result.corrupted:.4g}" if _finite(result.clean) else ""
    title = f"{result.method} · {result.sweep} ({names}) · {metric}"
    return heatmap(grid, rows, cols, title=title, metric=metric, note=note)


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _order(info: dict[str, Any], n_layers: int) -> int:
    """Drawing row: input, then each block's attention then its MLP, then the logits."""
    kind, layer = info["kind"], info.get("layer", 0)
    if kind == "input":
        return 0
    if kind == "logits":
        return 2 * n_layers + 1
    if kind in ("head", "attn_in"):
        return 2 * layer + 1
    return 2 * layer + 2


def circuit_json(
    data: dict[str, Any], max_edges: int = 2000
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Nodes and the ``max_edges`` largest edges of a circuit's JSON (``Circuit.to_json()``), for :func:`graph`."""
    n_layers = int(data.get("n_layers", 0))
    edges = sorted(data.get("edges", []), key=lambda e: -abs(float(e.get("score", 0.0))))[:max_edges]
    used = {e["source"] for e in edges} | {e["target"] for e in edges}
    nodes = []
    for info in data.get("nodes", []):
        if info["name"] not in used:
            continue
        index = info.get("head") if info.get("head") is not None else info.get("feature", 0)
        nodes.append({"id": info["name"], "layer": _order(info, n_layers), "index": int(index or 0),
                      "kind": info["kind"], "label": info["name"]})  # fmt: skip
    links = [{"source": e["source"], "target": e["target"], "weight": float(e["score"])} for e in edges]
    return nodes, links


def circuit(obj: Any, max_edges: int = 2000) -> Widget:
    """A circuit (or its JSON) as an interactive layered graph of its largest edges."""
    data = obj if isinstance(obj, dict) else obj.to_json()
    nodes, links = circuit_json(data, max_edges)
    title = (
        f"{data.get('method', '')} circuit · {data.get('metric', '')} · {data.get('ablation', '')} ablation"
    )
    return graph(nodes, links, title=title)


def cache(obj: Any, max_rows: int = 200) -> str:
    """An activation cache: a table of its entries and, for each cached pattern, an attention widget."""
    rows = []
    for name in list(obj.keys())[:max_rows]:
        t = obj[name]
        rows.append(f"<tr><td><code>{html.escape(name)}</code></td><td>{tuple(t.shape)}</td>"
                    f"<td>{html.escape(str(t.dtype).replace('torch.', ''))}</td></tr>")  # fmt: skip
    more = f"<p>… and {len(obj) - max_rows} more</p>" if len(obj) > max_rows else ""
    table = (f"<table><thead><tr><th>hook</th><th>shape</th><th>dtype</th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>{more}")  # fmt: skip
    widgets = []
    batch = getattr(obj, "batch", None)
    for name in obj:
        if name.endswith("attn.hook_pattern"):
            p = _array(obj[name])[0]  # first prompt: [heads, q, k]
            toks = _token_labels(batch, p.shape[-1])
            layer = int(name.split(".")[1])
            widgets.append(attention(toks, p, layer=layer).fragment())
    return f'<div class="ms-cache">{table}{"".join(widgets)}</div>'


def _token_labels(batch: Any, n: int) -> list[str]:
    labels = getattr(batch, "str_tokens", None)
    if labels:
        first = labels[0] if isinstance(labels[0], (list, tuple)) else labels
        if len(first) == n:
            return [str(t) for t in first]
    return [str(i) for i in range(n)]


def feature_example(example: Any) -> Widget:
    """One stored example window of a feature, its tokens shaded by activation."""
    from .widgets import tokens

    return tokens(list(example.tokens), np.asarray(example.activations, dtype=np.float32), target=example.target,
                  title=f"{example.kind} example, activation {example.activation:.4g}")  # fmt: skip


__all__ = ["cache", "circuit", "circuit_json", "feature_example", "fold_axes", "patch_result"]
