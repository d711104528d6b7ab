"""Interventions and read-outs on a hooked model: logit lens (patching and ablation follow)."""

from .lens import LogitLens, logit_lens

__all__ = ["LogitLens", "logit_lens"]
