"""End-to-end runs that chain the library's stages and write artifact directories."""

from .demo import DEFAULT_PROMPTS, DemoConfig, FactualPrompt, run_demo

__all__ = ["DEFAULT_PROMPTS", "DemoConfig", "FactualPrompt", "run_demo"]
