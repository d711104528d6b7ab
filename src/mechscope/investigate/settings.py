"""Each investigation stage's own settings (``[stages.<name>.settings]``), validated by field.

The config parser checks a stage's settings table against its class here: unknown keys
(with the closest name), wrong types and bad values fail before any work, naming
``stages.<name>.settings.<field>``. The validated table, with every default filled in, is what
the stage reads and what its hash covers. Torch-free, like the rest of the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "SETTINGS",
    "ChecksSettings",
    "CircuitSettings",
    "DictionariesSettings",
    "EvaluateSettings",
    "ExplainSettings",
    "FeaturesSettings",
    "LocaliseSettings",
    "ReportSettings",
]


@dataclass(frozen=True)
class EvaluateSettings:
    """``[stages.evaluate.settings]``."""

    top_k: int = 5
    """Top next tokens recorded for each of the first clean prompts (the report shows them)."""
    show: int = 8
    """Clean prompts listed with their top tokens in ``evaluate/prompts.json``."""


@dataclass(frozen=True)
class LocaliseSettings:
    """``[stages.localise.settings]``."""

    n: int = 8
    """Prompt pairs patched (the first ``n`` of the behaviour's); exact patching costs one
    forward pass per site and pair, so this is kept below ``behaviour.n``."""
    sweeps: list[str] = field(default_factory=lambda: ["resid_pre", "heads"])
    """Exact activation-patching sweeps (clean into corrupted): ``resid_pre``, ``heads``,
    ``attn_out``, ``mlp_out`` ... (``mechscope.interventions.SWEEPS``)."""
    attribution: bool = True
    """Also run attribution patching over the heads and report its correlation with exact
    patching (needs ``heads`` among ``sweeps``)."""
    top: int = 8
    """Components listed in the summary for each sweep."""


@dataclass(frozen=True)
class CircuitSettings:
    """``[stages.circuit.settings]``."""

    n: int = 8
    """Prompt pairs the edges are scored on."""
    method: str = "eap-ig"
    """Edge scores: ``eap-ig``, ``eap``, ``exact`` or ``acdc``."""
    steps: int = 5
    """EAP-IG interpolation steps."""
    graph: str = "layer"
    """``layer`` (one attention receiver per layer) or ``qkv`` (each head's q, k, v)."""
    ablation: str = "corrupted"
    """What an ablated edge carries: ``corrupted``, ``mean`` or ``zero``."""
    circuit_edges: int = 150
    """Edges kept in the saved circuit (then pruned to connected edges)."""
    check_top: int = 20
    """Top edges whose scores are checked against exact edge patching."""
    fractions: list[float] = field(default_factory=lambda: [0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1])
    """Edge fractions of the faithfulness curve."""
    batch: int = 16
    """Edge masks per forward pass (exact checks and the curve)."""


@dataclass(frozen=True)
class DictionariesSettings:
    """``[stages.dictionaries.settings]``: where the dictionaries sit and how they are made."""

    layers: list[int] = field(default_factory=list)
    """Blocks whose ``hook_resid_pre`` gets a dictionary; empty: the ``auto_layers`` layers
    whose heads carry most of the behaviour in the localisation (summed |normalised effect|)."""
    auto_layers: int = 1
    """How many layers to pick when ``layers`` is empty."""
    load: str = ""
    """Load instead of training: a dictionary directory, or a directory holding several (e.g.
    another run's ``dictionaries/``), matched to the layers by hook name. Its files' bytes
    enter this stage's hash."""
    expansion: int = 8
    """Latents per residual dimension."""
    k: int = 32
    """Active latents per token (TopK)."""
    batch_size: int = 1024
    """Tokens per training step; ``corpus.n_tokens`` is the training budget."""
    lr: float = 1e-3
    """Adam learning rate."""
    eval_contexts: int = 8
    """Held-out corpus contexts of the evaluation (FVU, L0, CE loss recovered)."""


@dataclass(frozen=True)
class FeaturesSettings:
    """``[stages.features.settings]``."""

    n_contexts: int = 48
    """Corpus contexts of the statistics pass (after the dictionaries' training contexts)."""
    n_features: int = 6
    """Features kept per dictionary: the largest |attribution| to the behaviour's metric."""
    check_top: int = 6
    """Top features whose attribution is checked against exact feature patching."""
    dashboards: int = 20
    """Dashboard pages per dictionary besides the chosen features (most frequent ones)."""


@dataclass(frozen=True)
class ExplainSettings:
    """``[stages.explain.settings]``."""

    explainer: str = "pattern"
    """``pattern`` (offline token patterns and judge) or ``llm`` (an OpenAI-compatible server)."""
    llm_url: str = ""
    """Base URL of the OpenAI-compatible server (``explainer = "llm"``)."""
    llm_model: str = ""
    """Model name at that server."""
    held_out: int = 48
    """Held-out corpus contexts of the report cards."""
    held_out_len: int = 32
    """Tokens per held-out context."""
    steer_prompts: list[str] = field(default_factory=lambda: ["I think that", "My favourite thing is"])
    """Neutral prompts of the report cards' steering checks."""


@dataclass(frozen=True)
class ChecksSettings:
    """``[stages.checks.settings]``: causal checks of what the earlier stages claim."""

    top_heads: int = 3
    """The localisation's top heads patched together (does the sum of their effects hold?)."""
    steer_scale: float = 4.0
    """Steering adds this multiple of a feature's largest corpus activation along its decoder
    direction, at every position of the corrupted prompts."""
    max_new_tokens: int = 8
    """Greedy tokens of the steering example (the top feature clamped on ``explain``'s prompts)."""


@dataclass(frozen=True)
class ReportSettings:
    """``[stages.report.settings]``."""

    title: str = ""
    """Report title (default: the model and the behaviour)."""


SETTINGS: dict[str, type] = {
    "evaluate": EvaluateSettings,
    "localise": LocaliseSettings,
    "circuit": CircuitSettings,
    "dictionaries": DictionariesSettings,
    "features": FeaturesSettings,
    "explain": ExplainSettings,
    "checks": ChecksSettings,
    "report": ReportSettings,
}
"""Each stage's settings class, by stage name."""

CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "circuit": {
        "method": ("eap-ig", "eap", "exact", "acdc"),
        "graph": ("layer", "qkv"),
        "ablation": ("corrupted", "mean", "zero"),
    },
    "explain": {"explainer": ("pattern", "llm")},
}
"""String settings that must be one of a few values."""

NON_NEGATIVE: frozenset[str] = frozenset(
    {"layers", "check_top", "dashboards", "fractions", "top_heads", "show"}
)
"""Numeric settings that may be 0 (every other numeric setting must be positive)."""
