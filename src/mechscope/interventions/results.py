"""Results as self-describing artifacts: a tensor, its axis labels, and how it was made.

A :class:`PatchResult` is what every localisation method returns (activation patching,
ablation, attribution patching, path patching, direct logit attribution). On disk it is a
directory (DESIGN.md section 4)::

    meta.json            kind, schema_version, mechscope_version, created, method, sweep,
                         metric, direction, ablation, baselines, axes with labels, model,
                         task, config
    values.safetensors   "values" [*axes] and, when kept, "per_example" [*axes, n]

``PatchResult.load(dir)`` rebuilds it from those files alone, so every plot can be redrawn
without the model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from .._fs import atomic_dir, atomic_write_bytes, atomic_write_json
from .._version import __version__
from ..errors import ArtifactError

KIND = "patch_result"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Axis:
    """One axis of a result: its name and a label per index."""

    name: str
    """``layer``, ``pos``, ``head``, ``kv_head``, ``neuron``, ``component`` ..."""
    labels: tuple[str, ...]
    """One label per index, e.g. ``"7: ' John'"`` for a position."""

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class PatchResult:
    """A localisation result: ``values`` indexed by ``axes``, plus provenance."""

    values: torch.Tensor
    """Mean metric (or effect) per site, shaped like the axes."""
    axes: tuple[Axis, ...]
    """Axis names and labels, in the order of ``values``' dimensions."""
    method: str
    """``activation_patching``, ``ablation``, ``attribution_patching``, ``path_patching`` or ``direct_logit_attribution``."""
    sweep: str
    """Which sites, e.g. ``resid_pre`` or ``heads``."""
    metric: str
    """Metric name."""
    clean: float
    """Metric of the clean run (mean over examples)."""
    corrupted: float
    """Metric of the corrupted run (mean over examples)."""
    direction: str | None = None
    """``denoise`` or ``noise`` for patching; None otherwise."""
    ablation: str | None = None
    """``zero``, ``mean`` or ``resample`` for ablations; None otherwise."""
    per_example: torch.Tensor | None = None
    """Values per site and example ``[*axes, n]``, when kept."""
    info: dict[str, Any] = field(default_factory=dict)
    """Provenance: model, task, config, timings, anything else worth keeping."""

    def __post_init__(self) -> None:
        shape = tuple(len(a) for a in self.axes)
        if tuple(self.values.shape) != shape:
            raise ArtifactError(f"values have shape {tuple(self.values.shape)} but the axes say {shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        """Sizes of the axes."""
        return tuple(self.values.shape)

    def normalized(self) -> torch.Tensor:
        """Values rescaled so the corrupted run is 0 and the clean run 1 (patching results)."""
        return (self.values - self.corrupted) / (self.clean - self.corrupted)

    def top(self, k: int = 10, *, by: str = "abs_effect") -> list[tuple[tuple[str, ...], float]]:
        """The ``k`` most important sites as ``(labels, value)``.

        ``by``: ``abs_effect`` ranks by |value − baseline| (the baseline is the run the
        sites were patched into: corrupted for denoising, clean for noising and ablation,
        0 for direct logit attribution), ``value`` by value.
        """
        base = self.baseline
        score = (self.values - base).abs() if by == "abs_effect" else self.values
        flat = score.flatten()
        idx = flat.topk(min(k, flat.numel())).indices
        out = []
        for i in idx.tolist():
            coords = torch.unravel_index(torch.tensor(i), self.shape)
            labels = tuple(a.labels[int(c)] for a, c in zip(self.axes, coords))
            out.append((labels, float(self.values.flatten()[i])))
        return out

    @property
    def baseline(self) -> float:
        """The metric with nothing changed, in the run the sites were changed in (0 for attributions)."""
        if self.method == "direct_logit_attribution":
            return 0.0
        return self.corrupted if self.direction == "denoise" else self.clean

    # ------------------------------------------------------------------ artifacts

    def meta(self) -> dict[str, Any]:
        """The JSON-able description written to ``meta.json``."""
        return {
            "kind": KIND,
            "schema_version": SCHEMA_VERSION,
            "mechscope_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "method": self.method,
            "sweep": self.sweep,
            "metric": self.metric,
            "direction": self.direction,
            "ablation": self.ablation,
            "clean": self.clean,
            "corrupted": self.corrupted,
            "axes": [{"name": a.name, "labels": list(a.labels)} for a in self.axes],
            "info": self.info,
        }

    def save(self, directory: str | Path) -> Path:
        """Write the result to ``directory`` (created atomically; an existing one is replaced)."""
        directory = Path(directory)
        tensors = {"values": self.values.detach().float().cpu().contiguous()}
        if self.per_example is not None:
            tensors["per_example"] = self.per_example.detach().float().cpu().contiguous()
        if directory.exists():
            import shutil

            shutil.rmtree(directory)
        with atomic_dir(directory) as tmp:
            atomic_write_bytes(tmp / "values.safetensors", save(tensors))
            atomic_write_json(tmp / "meta.json", self.meta())
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> PatchResult:
        """Rebuild a result from the files :meth:`save` wrote; a partial or corrupt directory is an error."""
        directory = Path(directory)
        meta_path, tensor_path = directory / "meta.json", directory / "values.safetensors"
        for p in (meta_path, tensor_path):
            if not p.exists():
                raise ArtifactError(f"{directory} is not a complete result: {p.name} is missing")
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as e:
            raise ArtifactError(f"{meta_path} is not valid JSON: {e}") from e
        if meta.get("kind") != KIND:
            raise ArtifactError(f"{meta_path} describes a {meta.get('kind')!r}, not a {KIND!r}")
        try:
            tensors = load_file(str(tensor_path))
        except Exception as e:
            raise ArtifactError(f"{tensor_path} is corrupt: {e}") from e
        try:
            axes = tuple(Axis(a["name"], tuple(a["labels"])) for a in meta["axes"])
            return cls(
                values=tensors["values"],
                axes=axes,
                method=meta["method"],
                sweep=meta["sweep"],
                metric=meta["metric"],
                clean=float(meta["clean"]),
                corrupted=float(meta["corrupted"]),
                direction=meta.get("direction"),
                ablation=meta.get("ablation"),
                per_example=tensors.get("per_example"),
                info=meta.get("info", {}),
            )
        except (KeyError, TypeError) as e:
            raise ArtifactError(f"{meta_path} is missing field {e}") from e

    # ------------------------------------------------------------------ plots

    def _repr_html_(self) -> str:
        """An interactive heat map in Jupyter (see :mod:`mechscope.viz`)."""
        from ..viz.results import patch_result

        return patch_result(self).fragment()

    def plot(self, path: str | Path, *, title: str | None = None, normalized: bool | None = None) -> Path:
        """Save a PNG heat map (2-D results; 1-D as a bar chart; 3-D one panel per last-axis index)."""
        from ..report.heatmap import heatmap_png

        return heatmap_png(self._plot_spec(title, normalized), path)

    def to_html(self, path: str | Path, *, title: str | None = None, normalized: bool | None = None) -> Path:
        """Save a self-contained interactive HTML heat map (hover shows labels and values)."""
        from ..report.heatmap import heatmap_html

        return heatmap_html(self._plot_spec(title, normalized), path)

    def _plot_spec(self, title: str | None, normalized: bool | None) -> dict[str, Any]:
        norm = self.method != "direct_logit_attribution" if normalized is None else normalized
        values = self.normalized() if norm else self.values
        return {
            "values": values.detach().float().cpu().numpy(),
            "axes": [(a.name, list(a.labels)) for a in self.axes],
            "title": title or f"{self.method.replace('_', ' ')}: {self.sweep} ({self.info.get('task', '')})",
            "value_label": f"normalized {self.metric}" if norm else self.metric,
            "centered": True,
        }
