"""Features you can trust: statistics, the artifact reader, report cards and dashboards (issue 7).

Explanations and their scores live in :mod:`mechscope.explain` (no torch needed there).
"""

from __future__ import annotations

from .artifact import ArtifactError, FeatureArtifact, FeatureExample
from .dashboard import DashboardConfig, FeatureNotes, build_dashboards
from .stats import BINS, SCHEMA_VERSION, FeatureStats, StatsConfig, feature_stats, load_meta
from .validate import ValidationCard, ValidationConfig, validate

__all__ = [
    "BINS",
    "SCHEMA_VERSION",
    "ArtifactError",
    "DashboardConfig",
    "FeatureArtifact",
    "FeatureExample",
    "FeatureNotes",
    "FeatureStats",
    "StatsConfig",
    "ValidationCard",
    "ValidationConfig",
    "build_dashboards",
    "feature_stats",
    "load_meta",
    "validate",
]
