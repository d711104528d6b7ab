"""Heat maps: the shared spec check, colour scale and panel layout (see ``heatmap.py``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ArtifactError

MAX_PANELS = 16
"""3-D values with a longer last axis are reduced by max |value| over it instead of paneled."""
TOP_CELLS = 20
"""Rows of the page's "top cells" table."""
BAR_LABEL_LIMIT = 80
"""1-D values up to this length are horizontal bars with every label; longer ones vertical lines."""
DPI = 120
MAX_FIG_INCHES = (22.0, 16.0)
"""Largest PNG, in inches (width, height): 2640 × 1920 pixels at :data:`DPI`."""
SVG_RECT_LIMIT = 6000
"""Past this many cells the page draws a map as one embedded image instead of one rect per cell."""
NAN_COLOR = "#c8c8c8"

_CMAPS = {True: "RdBu_r", False: "viridis"}
_PNG_LABEL_CHARS = 28  # longer tick labels are shortened with "…" in the PNG


# ----------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class _Spec:
    """A checked spec."""

    values: np.ndarray  # [*axes] float64
    names: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]
    title: str
    value_label: str
    centered: bool
    scalar: type  # numpy float type of the input, so values print at their own precision

    def fmt(self, v: float) -> str:
        """Shortest text that gives back the value at the input's precision; NaN as ``NaN``."""
        return "NaN" if math.isnan(v) else str(self.scalar(v))


def _check(spec: Any) -> _Spec:
    """Validate ``spec`` and normalise it; raise :class:`ArtifactError` naming what is wrong."""
    if not isinstance(spec, Mapping):
        raise ArtifactError(f"a heat map spec must be a dict, got {type(spec).__name__}")
    missing = [k for k in ("values", "axes") if k not in spec]
    if missing:
        raise ArtifactError(
            f"heat map spec lacks {missing}; it needs 'values' and 'axes' "
            "(and takes 'title', 'value_label', 'centered')"
        )
    try:
        raw = np.asarray(spec["values"])
        values = raw.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"heat map values must be numeric: {e}") from e
    if values.ndim not in (1, 2, 3):
        raise ArtifactError(
            f"heat map values must have 1, 2 or 3 dimensions, got {values.ndim} (shape {values.shape})"
        )
    if values.size == 0:
        raise ArtifactError(f"heat map values are empty (shape {values.shape}); there is nothing to draw")
    axes = spec["axes"]
    if isinstance(axes, (str, bytes)) or not isinstance(axes, Sequence) or len(axes) != values.ndim:
        n = len(axes) if isinstance(axes, Sequence) else type(axes).__name__
        raise ArtifactError(
            f"heat map needs one (name, labels) pair per dimension: values have shape {values.shape}, "
            f"axes has {n}"
        )
    names: list[str] = []
    labels: list[tuple[str, ...]] = []
    for d, axis in enumerate(axes):
        try:
            name, axis_labels = axis
        except (TypeError, ValueError):
            raise ArtifactError(
                f"heat map axis {d} must be a (name, labels) pair, got {axis!r:.80}"
            ) from None
        if isinstance(axis_labels, (str, bytes)) or not hasattr(axis_labels, "__len__"):
            raise ArtifactError(f"heat map axis {d} ({name!r}) labels must be a list of strings")
        if len(axis_labels) != values.shape[d]:
            raise ArtifactError(
                f"heat map axis {d} ({name!r}) has {len(axis_labels)} labels but the values have "
                f"{values.shape[d]} entries along it (shape {values.shape})"
            )
        names.append(str(name))
        labels.append(tuple(str(x) for x in axis_labels))
    scalar = raw.dtype.type if raw.dtype in (np.float16, np.float32, np.float64) else np.float64
    return _Spec(
        values=values,
        names=tuple(names),
        labels=tuple(labels),
        title=str(spec.get("title", "")),
        value_label=str(spec.get("value_label", "value")),
        centered=bool(spec.get("centered", True)),
        scalar=scalar,
    )


# ---------------------------------------------------------------------- colour, view


@dataclass(frozen=True)
class _Scale:
    """The colour scale shared by every panel, the legend and the page."""

    vmin: float
    vmax: float
    cmap_name: str

    def cmap(self) -> Any:
        import matplotlib

        return matplotlib.colormaps[self.cmap_name].with_extremes(bad=NAN_COLOR)

    def clip(self, values: np.ndarray) -> np.ndarray:
        """Values clipped to the limits (±inf to the ends), NaN masked, ready for ``imshow``."""
        return np.ma.masked_invalid(np.clip(values, self.vmin, self.vmax))

    def rgba(self, values: np.ndarray) -> np.ndarray:
        """``[..., 4]`` RGBA floats in 0..1; NaN grey."""
        t = (self.clip(values) - self.vmin) / (self.vmax - self.vmin)
        return np.asarray(self.cmap()(t))

    def hex(self, values: np.ndarray) -> list[str]:
        """``#rrggbb`` per value, flattened."""
        rgb = np.rint(self.rgba(np.asarray(values, dtype=np.float64)).reshape(-1, 4)[:, :3] * 255)
        return ["#{:02x}{:02x}{:02x}".format(*map(int, c)) for c in rgb]


def _scale(values: np.ndarray, centered: bool) -> _Scale:
    finite = values[np.isfinite(values)]
    if centered:
        m = float(np.abs(finite).max()) if finite.size else 0.0
        m = m if m > 0 else 1.0
        return _Scale(-m, m, _CMAPS[True])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        pad = max(abs(lo) * 0.05, 0.5)
        lo, hi = lo - pad, hi + pad
    return _Scale(lo, hi, _CMAPS[False])


def _signed_absmax(a: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The entry with the largest |value| along ``axis`` (sign kept) and its index; NaN if all NaN."""
    mag = np.where(np.isnan(a), -1.0, np.abs(a))
    idx = mag.argmax(axis=axis)
    out = np.take_along_axis(a, np.expand_dims(idx, axis), axis).squeeze(axis)
    return out, idx


@dataclass(frozen=True)
class _Panel:
    title: str  # "" for a lone grid, else e.g. "head 3"
    values: np.ndarray  # [row col], or [n] for bars


@dataclass(frozen=True)
class _View:
    """What is drawn: panels, the title with any reduction note, the shared scale."""

    spec: _Spec
    title: str
    panels: list[_Panel]
    argmax: np.ndarray | None  # [row col] last-axis index of the kept value, when reduced
    scale: _Scale


def _view(spec: _Spec) -> _View:
    v = spec.values
    argmax = None
    if v.ndim < 3:
        panels = [_Panel("", v)]
        title = spec.title
    elif v.shape[2] <= MAX_PANELS:
        panels = [_Panel(f"{spec.names[2]} {label}", v[:, :, k]) for k, label in enumerate(spec.labels[2])]
        title = spec.title
    else:
        reduced, argmax = _signed_absmax(v, 2)
        argmax = np.where(np.isnan(reduced), -1, argmax)
        panels = [_Panel("", reduced)]
        note = f"max |value| over {spec.names[2]} ({v.shape[2]}), sign kept"
        title = f"{spec.title} [{note}]" if spec.title else note
    scale = _scale(np.concatenate([p.values.ravel() for p in panels]), spec.centered)
    return _View(spec, title, panels, argmax, scale)


def _clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def _short(label: str, n: int = _PNG_LABEL_CHARS) -> str:
    """A label made printable on one line and cut to ``n`` characters."""
    label = label.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return label if len(label) <= n else label[: n - 1] + "…"


def _nice_step(step: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least ``step``."""
    nice = 1
    while nice < step:
        nice = nice * 5 // 2 if str(nice)[0] == "2" else nice * 2  # 1 → 2 → 5 → 10 → 20 ...
    return nice


def _tick_positions(n: int, room: int) -> list[int]:
    """Indices to label along an axis of ``n`` entries with room for ``room`` labels."""
    step = 1 if n <= max(room, 1) else _nice_step(math.ceil(n / max(room, 1)))
    return list(range(0, n, step))
