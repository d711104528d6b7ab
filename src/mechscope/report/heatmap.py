"""Heat maps of a localisation result: a PNG (matplotlib) and one self-contained HTML page.

Both functions take the same ``spec`` dict (what ``PatchResult._plot_spec`` builds):

- ``values``: float array with 1, 2 or 3 dimensions;
- ``axes``: one ``(name, labels)`` pair per dimension, ``len(labels) == values.shape[d]``;
- ``title`` and ``value_label``: text (``value_label`` names the colour bar);
- ``centered``: a diverging colour map centred on 0 with limits ±max|v|; else a
  sequential one from min to max.

The PNG and the page share one layout and one colour scale:

1. The spec is checked (:class:`ArtifactError` on a bad one) and turned into panels.
   1-D → a bar chart (horizontal, one labelled bar per entry, up to 80 entries; vertical
   lines beyond). 2-D → one grid, rows = axis 0 with index 0 at the TOP, columns = axis 1.
   3-D → one grid per index of the last axis (e.g. one per head), sharing the colour
   scale; when that axis has more than 16 entries, a single grid holding, per cell, the
   signed value with the largest |value| over it (the title says so, and the page's
   tooltip names the index where it sits).
2. Colours: ``RdBu_r`` (centred, red = positive) or ``viridis``. NaN cells are grey;
   ±inf take the colour of the nearer end.
3. The PNG is drawn at 120 dpi, sized by the axes and capped at 22 × 16 inches; tick labels
   are thinned to what fits. A grid with more cells along an axis than it has pixels is
   pooled in blocks by max |value| (signed), which the title says, so no peak is dropped.
4. The page draws the same colours as inline SVG: one ``<rect>`` per cell with a
   ``<title>`` tooltip (works without JavaScript), or one embedded PNG image once a map has
   more than 6,000 cells. It adds a colour legend, a CSS-only toggle to a "top 20 cells by
   |value|" table, the data as JSON, and a small script for a richer tooltip. It loads
   nothing from outside the file.

Every file is written atomically (``mechscope._fs``). Nothing here imports torch.
"""

from __future__ import annotations

from .heatmap_html import heatmap_html
from .heatmap_png import heatmap_png

__all__ = ["heatmap_html", "heatmap_png"]
