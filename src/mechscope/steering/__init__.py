"""Steering the model (vectors, CAA, ActAdd, dictionary features, strength sweeps) and reading it
(linear probes, the best single feature, monitors during generation)."""

from __future__ import annotations

from .features import add_feature, clamp_feature, steer_features
from .probes import Flag, Monitored, Probe, auroc, best_feature, collect, monitor, train_probe
from .sweep import SweepRow, ids_logodds, logodds, strength_sweep, token_logodds
from .vectors import SteeringVector, actadd, caa, steer, steering_hooks

__all__ = [
    "Flag",
    "Monitored",
    "Probe",
    "SteeringVector",
    "SweepRow",
    "actadd",
    "add_feature",
    "auroc",
    "best_feature",
    "caa",
    "clamp_feature",
    "collect",
    "ids_logodds",
    "logodds",
    "monitor",
    "steer",
    "steer_features",
    "steering_hooks",
    "strength_sweep",
    "token_logodds",
    "train_probe",
]
