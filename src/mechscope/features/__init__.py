"""Features you can trust: statistics, explanations, validation and dashboards (issue 7)."""

from __future__ import annotations

from .artifact import ArtifactError, FeatureArtifact, FeatureExample
from .stats import BINS, SCHEMA_VERSION, FeatureStats, StatsConfig, feature_stats, load_meta

__all__ = [
    "BINS",
    "SCHEMA_VERSION",
    "ArtifactError",
    "FeatureArtifact",
    "FeatureExample",
    "FeatureStats",
    "StatsConfig",
    "feature_stats",
    "load_meta",
]
