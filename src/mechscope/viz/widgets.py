"""Widgets: the component bundle's views as Python objects that render inline in Jupyter.

A :class:`Widget` names a component of the bundle (``heatmap``, ``attention``, ``tokens``,
``histogram``, ``table``, ``graph``) and holds its JSON data. ``_repr_html_`` emits a ``<div>``
with a unique id and one ``<script type="module">`` holding the whole bundle (about 40 KB; the
bundle sets ``globalThis.mechscope`` only if no copy has done so, so widgets on one page share
the first copy and never clash) followed by the call that renders into that div. Nothing is
fetched: no CDN, no kernel port, no network check, so it works offline, in JupyterLab, in
classic notebooks and in VS Code's per-output iframes. ``save(path)`` writes the same widget
as a standalone HTML page.

Tensors travel as ``{"dtype": "float32", "shape": [...], "data": base64}`` (little-endian).
"""

from __future__ import annotations

import base64
import html
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import atomic_write_text
from ..errors import MechscopeError

COMPONENTS = ("heatmap", "attention", "tokens", "histogram", "table", "graph")
"""The bundle's components."""


def inline_bundle() -> str:
    """The component bundle (an ES module), safe to inline in a ``<script>`` element."""
    from . import bundle_text

    return bundle_text().replace("</script", "<\\/script")


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def tensor_json(x: Any) -> dict[str, Any]:
    """``{"dtype": "float32", "shape", "data": base64}`` of an array-like (little-endian float32)."""
    a = np.ascontiguousarray(_array(x), dtype="<f4")
    return {"dtype": "float32", "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def _script_json(obj: Any) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>``, no ``<!--``)."""
    return (
        json.dumps(obj, allow_nan=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


@dataclass(frozen=True)
class Widget:
    """One component with its data; renders inline in Jupyter and saves as a standalone page."""

    component: str
    """Which component of the bundle draws it."""
    data: dict[str, Any]
    """The component's data (see ``docs/ui-components.md``)."""
    opts: dict[str, Any] = field(default_factory=dict)
    """JSON options passed to the component."""
    title: str = ""
    """A caption shown above it."""

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise MechscopeError(f"unknown component {self.component!r}; choose from {', '.join(COMPONENTS)}")

    def fragment(self, bundle: bool = True, uid: str | None = None) -> str:
        """The ``<div>`` and its script; ``bundle=False`` leaves the bundle out (a page that loads it once).

        ``uid``: the div's id (default: random, so the same widget shown twice never clashes; pass
        one, unique in its page, for output that must be reproducible byte for byte)."""
        uid = uid or f"ms-{uuid.uuid4().hex[:12]}"
        call = (f'globalThis.mechscope.{self.component}(document.getElementById("{uid}"), '
                f"{_script_json(self.data)}, {_script_json(self.opts)});")  # fmt: skip
        code = f"{inline_bundle()}\n;{call}" if bundle else call
        caption = (
            f'<div class="ms-caption" style="font: 600 13px system-ui, sans-serif; margin: 4px 0">{html.escape(self.title)}</div>'
            if self.title and "title" not in self.data  # heatmap and graph draw their own title
            else ""
        )
        return f'<div class="ms-widget">{caption}<div id="{uid}"></div><script type="module">{code}</script></div>'

    def _repr_html_(self) -> str:
        return self.fragment()

    def html(self) -> str:
        """A standalone page holding the widget (bundle inlined)."""
        return page([self], self.title or self.component)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`html` to ``path`` atomically."""
        return atomic_write_text(path, self.html())


def page(widgets: Sequence[Widget], title: str = "mechscope") -> str:
    """A self-contained page with several widgets (the bundle inlined once)."""
    first = f'<script type="module">{inline_bundle()}</script>'
    body = "\n".join(w.fragment(bundle=False) for w in widgets)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n{first}\n{body}\n</body></html>\n"
    )


def heatmap(
    values: Any,
    rows: Sequence[str],
    cols: Sequence[str],
    title: str = "",
    metric: str = "",
    hover: Sequence[Sequence[str]] | None = None,
    note: str = "",
) -> Widget:
    """A ``[rows, cols]`` heat map on a diverging scale centred at 0."""
    a = _array(values)
    if a.ndim == 1:
        a = a[None]
    if a.shape != (len(rows), len(cols)):
        raise MechscopeError(f"heatmap values are {a.shape}, the labels say ({len(rows)}, {len(cols)})")
    data: dict[str, Any] = {"values": tensor_json(a), "rows": list(rows), "cols": list(cols), "title": title,
                            "metric": metric, "note": note}  # fmt: skip
    if hover is not None:
        data["hover"] = [list(r) for r in hover]
    return Widget("heatmap", data, title=title)


def attention(
    tokens: Sequence[str], patterns: Any, layer: int | None = None, heads: Sequence[str] | None = None
) -> Widget:
    """Attention patterns ``[heads, q, k]`` of one layer, with token hover."""
    a = _array(patterns)
    if a.ndim != 3 or a.shape[1] != len(tokens) or a.shape[2] != len(tokens):
        raise MechscopeError(
            f"patterns must be [heads, {len(tokens)}, {len(tokens)}] for {len(tokens)} tokens, got {a.shape}"
        )
    data: dict[str, Any] = {"tokens": list(tokens), "patterns": tensor_json(a)}
    if layer is not None:
        data["layer"] = layer
    data["heads"] = list(heads) if heads is not None else [f"L{layer}H{h}" if layer is not None else f"H{h}"
                                                           for h in range(a.shape[0])]  # fmt: skip
    return Widget("attention", data, title=f"layer {layer}" if layer is not None else "")


def tokens(tokens: Sequence[str], values: Any, target: int | None = None, title: str = "") -> Widget:
    """Tokens shaded by a value each (e.g. a feature's activation)."""
    v = _array(values).reshape(-1)
    if len(v) != len(tokens):
        raise MechscopeError(f"{len(tokens)} tokens but {len(v)} values")
    data: dict[str, Any] = {"tokens": list(tokens), "values": [float(x) for x in v]}
    if target is not None:
        data["target"] = target
    return Widget("tokens", data, title=title)


def histogram(bins: Sequence[tuple[float, float, int]], marks: Sequence[float] = (), log: bool = True,
              xlabel: str = "activation") -> Widget:  # fmt: skip
    """Bars ``(low, high, count)`` with vertical marks (e.g. equal-count quantile edges)."""
    return Widget(
        "histogram", {"bins": [list(b) for b in bins], "marks": list(marks), "log": log, "xlabel": xlabel}
    )


def graph(nodes: Sequence[dict[str, Any]], edges: Sequence[dict[str, Any]], title: str = "",
          threshold: float | None = None) -> Widget:  # fmt: skip
    """A layered graph (``nodes``: id, layer, index, kind, label; ``edges``: source, target, weight)."""
    opts = {} if threshold is None else {"threshold": threshold}
    return Widget("graph", {"nodes": list(nodes), "edges": list(edges), "title": title}, opts, title)


__all__ = [
    "COMPONENTS",
    "Widget",
    "attention",
    "graph",
    "heatmap",
    "histogram",
    "inline_bundle",
    "page",
    "tensor_json",
    "tokens",
]
