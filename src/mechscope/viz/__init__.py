"""mechscope's UI components as one compiled ES module (``static/mechscope.js``).

The module is built from the TypeScript in ``ui/src`` by esbuild and committed, so installs and
tests never need Node; ``scripts/check_bundle.sh`` checks that a rebuild reproduces it byte for
byte. Hosts (the server, static pages, Jupyter ``_repr_html_``) load it with
``<script type="module">`` or inline it. The components and their JSON data contracts are in
docs/ui-components.md.

:mod:`mechscope.viz.widgets` wraps the components as Python objects that render inline in Jupyter
(``_repr_html_``) and save as standalone pages: ``mechscope.viz.heatmap(values, rows, cols)``,
``attention(tokens, patterns)``, ``tokens(tokens, values)``, ``histogram(bins)``, ``graph(nodes,
edges)``; patching results, circuits, activation caches and feature examples render this way.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "Widget",
    "attention",
    "bundle_path",
    "bundle_text",
    "graph",
    "heatmap",
    "histogram",
    "page",
    "tensor_json",
    "tokens",
]


def bundle_path() -> Path:
    """Path of the compiled bundle; raises if the install lacks it (package data not shipped)."""
    path = Path(__file__).with_name("static") / "mechscope.js"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the UI bundle must ship as package data (mechscope/viz/static/*.js); "
            "in a checkout, rebuild it with `cd ui && npm ci && npm run build`"
        )
    return path


def bundle_text() -> str:
    """The bundle's source text (UTF-8), e.g. to inline into a self-contained page."""
    return bundle_path().read_text(encoding="utf-8")


from .widgets import Widget, attention, graph, heatmap, histogram, page, tensor_json, tokens  # noqa: E402
