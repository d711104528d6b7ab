"""Loading models and the hookable model wrapper (``HookedModel``)."""

from .adapters import SUPPORTED_MODEL_TYPES
from .cache import ActivationCache
from .hooked import HookedModel, ModelConfig
from .loading import load_model, wrap
from .names import hook_name
from .runtime import HookPoint
from .tokens import TokenBatch
from .zoo import BUILTIN, DEFAULT_MODEL

__all__ = [
    "BUILTIN",
    "DEFAULT_MODEL",
    "SUPPORTED_MODEL_TYPES",
    "ActivationCache",
    "HookPoint",
    "HookedModel",
    "ModelConfig",
    "TokenBatch",
    "hook_name",
    "load_model",
    "wrap",
]
