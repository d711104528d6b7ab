"""Toy models that are fully understood, used as mechscope's ground truth (issue 5)."""

from __future__ import annotations

from .superposition import (
    TMSConfig,
    TMSError,
    TMSModel,
    TMSResult,
    dimensions_per_feature,
    feature_dimensionality,
    feature_norms,
    generate_sparse_features,
    interference,
    load_tms,
    save_tms,
    train_superposition,
)
from .tms_plots import analyze_superposition, plot_dimensionality, plot_features_2d, plot_wtw

__all__ = [
    "TMSConfig",
    "TMSError",
    "TMSModel",
    "TMSResult",
    "analyze_superposition",
    "dimensions_per_feature",
    "feature_dimensionality",
    "feature_norms",
    "generate_sparse_features",
    "interference",
    "load_tms",
    "plot_dimensionality",
    "plot_features_2d",
    "plot_wtw",
    "save_tms",
    "train_superposition",
]

# The toy transformer, its trainer and the "toy/<name>" names of load_model (importing the
# registry registers that source with mechscope.models.loading; importing induction registers
# the toy "induction").
from . import catalog as _catalog  # noqa: F401  (registers the named toys)
from .compiled import COMPILED, GroundTruth, build_compiled, ground_truth
from .edges import all_edges, edge_forward, node_names
from .induction import InductionRecipe, InductionReport, analyze_induction, train_induction
from .modular import ModularRecipe, last_logits, train_modular_addition
from .modular_analysis import ModularReport, analyze_modular
from .registry import TOYS, ToyEntry, register_toy, save_toy, toy_dir
from .train import TrainConfig, TrainResult, next_token_loss, plot_losses, step_generator, train
from .transformer import ToyConfig, ToyForCausalLM, TransformerSpec, build

__all__ += [
    "COMPILED",
    "TOYS",
    "GroundTruth",
    "InductionRecipe",
    "InductionReport",
    "ModularRecipe",
    "ModularReport",
    "ToyConfig",
    "ToyEntry",
    "ToyForCausalLM",
    "TrainConfig",
    "TrainResult",
    "TransformerSpec",
    "all_edges",
    "analyze_induction",
    "analyze_modular",
    "build",
    "build_compiled",
    "edge_forward",
    "ground_truth",
    "last_logits",
    "next_token_loss",
    "node_names",
    "plot_losses",
    "register_toy",
    "save_toy",
    "step_generator",
    "toy_dir",
    "train",
    "train_induction",
    "train_modular_addition",
]
