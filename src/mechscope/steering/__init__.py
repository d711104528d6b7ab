"""Steering the model: vectors (CAA, ActAdd), dictionary features (clamp, add), strength sweeps."""

from __future__ import annotations

from .features import add_feature, clamp_feature
from .sweep import SweepRow, strength_sweep, token_logodds
from .vectors import SteeringVector, actadd, caa, steer, steering_hooks

__all__ = [
    "SteeringVector",
    "SweepRow",
    "actadd",
    "add_feature",
    "caa",
    "clamp_feature",
    "steer",
    "steering_hooks",
    "strength_sweep",
    "token_logodds",
]
