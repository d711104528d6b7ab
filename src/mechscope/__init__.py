"""mechscope: mechanistic interpretability in one verified, fast package.

Quick start::

    import mechscope
    model = mechscope.load_model("smollm2-135m")
    logits, cache = model.run_with_cache("The Eiffel Tower is located in the city of")
    cache["blocks.10.hook_resid_post"].shape   # [batch, pos, d_model]
"""

from ._version import __version__
from .errors import (
    ArtifactError,
    HookError,
    HookShapeError,
    MechscopeError,
    ModelLoadError,
    TokenizationError,
    UnknownHookError,
    UnsupportedArchitectureError,
)
from .models import (
    BUILTIN,
    DEFAULT_MODEL,
    SUPPORTED_MODEL_TYPES,
    ActivationCache,
    HookedModel,
    HookPoint,
    ModelConfig,
    TokenBatch,
    hook_name,
    load_model,
    wrap,
)

__all__ = [
    "BUILTIN",
    "DEFAULT_MODEL",
    "SUPPORTED_MODEL_TYPES",
    "ActivationCache",
    "ArtifactError",
    "HookError",
    "HookPoint",
    "HookShapeError",
    "HookedModel",
    "MechscopeError",
    "ModelConfig",
    "ModelLoadError",
    "TokenBatch",
    "TokenizationError",
    "UnknownHookError",
    "UnsupportedArchitectureError",
    "__version__",
    "hook_name",
    "load_model",
    "wrap",
]
