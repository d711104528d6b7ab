"""The public API is curated: this list changes only on purpose."""

import mechscope

PINNED = [
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


def test_public_api_is_pinned():
    assert sorted(mechscope.__all__) == sorted(PINNED)
    for name in mechscope.__all__:
        assert hasattr(mechscope, name), name


def test_every_error_is_a_mechscope_error():
    for name in mechscope.__all__:
        obj = getattr(mechscope, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, mechscope.MechscopeError)
