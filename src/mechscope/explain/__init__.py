"""Automated interpretation of dictionary features: explain a feature, then score the explanation.

Explainers (``explain(feature, examples) -> Explanation``):

* :class:`TokenPatternExplainer`: offline and deterministic; the tokens the feature fires on and
  their left context, as a sentence and a machine-readable pattern;
* :class:`LLMExplainer`: any OpenAI-compatible chat endpoint (:class:`LLMConfig`, ``from_env()``).

Scorers (:func:`detection`, :func:`fuzzing`, :func:`simulation`) ask a :class:`Simulator`:
:class:`PatternSimulator` offline, :class:`LLMSimulator` through an LLM. Records save and load as
JSON (:func:`save_explanations`, :func:`save_scores`). See ``docs/explain.md``.

This package needs neither torch nor a model: examples are token strings and activations.
"""

from .base import Example, Explainer, ExplainError, Explanation, Judged, Score, Simulator, mark
from .client import ChatClient, LLMConfig, LLMError
from .files import load_explanations, load_scores, save_explanations, save_scores
from .llm import LLMExplainer, LLMSimulator
from .pattern import PatternConfig, PatternSimulator, TokenPatternExplainer
from .scoring import binary_metrics, detection, fuzzing, simulation

__all__ = [
    "ChatClient",
    "Example",
    "ExplainError",
    "Explainer",
    "Explanation",
    "Judged",
    "LLMConfig",
    "LLMError",
    "LLMExplainer",
    "LLMSimulator",
    "PatternConfig",
    "PatternSimulator",
    "Score",
    "Simulator",
    "TokenPatternExplainer",
    "binary_metrics",
    "detection",
    "fuzzing",
    "load_explanations",
    "load_scores",
    "mark",
    "save_explanations",
    "save_scores",
    "simulation",
]
