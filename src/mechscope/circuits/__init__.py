"""Circuit discovery: the edge graph, one edge-intervention engine, exact edge patching, EAP,
EAP-IG, ACDC, circuits with faithfulness curves, and their graphs (see docs/circuits.md)."""

from __future__ import annotations

from . import methods
from .circuit import Circuit, connected
from .engine import ABLATIONS, EdgeEngine, EdgeProblem
from .faithfulness import Curve, baselines, completeness, curve, faithfulness, roc_auc
from .features import FeatureScores, exact_feature_effects, feature_scores
from .graph import Graph, Receiver

__all__ = [
    "ABLATIONS",
    "Circuit",
    "Curve",
    "EdgeEngine",
    "EdgeProblem",
    "FeatureScores",
    "Graph",
    "Receiver",
    "baselines",
    "completeness",
    "connected",
    "curve",
    "exact_feature_effects",
    "faithfulness",
    "feature_scores",
    "methods",
    "roc_auc",
]
