"""Features you can trust: statistics, explanations, validation and dashboards (issue 7)."""

from __future__ import annotations

from .stats import BINS, FeatureStats, StatsConfig, feature_stats, load_meta

__all__ = ["BINS", "FeatureStats", "StatsConfig", "feature_stats", "load_meta"]
