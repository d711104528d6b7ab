"""Interventions and read-outs: activation patching, ablation, attribution, logit lens."""

from .lens import LogitLens, logit_lens
from .patching import DIRECTIONS, MODES, PatchRun, patch_variants
from .results import Axis, PatchResult
from .sites import Patch, Variant
from .sweeps import SWEEPS, SweepConfig, position_labels, sweep

__all__ = [
    "DIRECTIONS",
    "MODES",
    "SWEEPS",
    "Axis",
    "LogitLens",
    "Patch",
    "PatchResult",
    "PatchRun",
    "SweepConfig",
    "Variant",
    "logit_lens",
    "patch_variants",
    "position_labels",
    "sweep",
]
