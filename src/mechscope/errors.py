"""Every error mechscope raises on purpose derives from :class:`MechscopeError`.

Each error says what went wrong, where, and what to do about it. The docs page
``docs/errors.md`` lists them with symptom, cause and fix.
"""

from __future__ import annotations

from collections.abc import Sequence


class MechscopeError(Exception):
    """Base class of every error mechscope raises deliberately."""


class UnknownHookError(MechscopeError, KeyError):
    """A hook name that the model does not have."""

    def __init__(self, name: str, suggestions: Sequence[str] = (), detail: str = "") -> None:
        self.name = name
        self.suggestions = list(suggestions)
        msg = f"unknown hook name {name!r}"
        if detail:
            msg += f": {detail}"
        if self.suggestions:
            msg += "; did you mean " + ", ".join(repr(s) for s in self.suggestions) + "?"
        msg += " (model.hook_names lists every hook point)"
        self.message = msg
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.message


class UnsupportedArchitectureError(MechscopeError):
    """The model's architecture, or a feature of its config, has no verified adapter."""

    def __init__(self, what: str, supported: Sequence[str], hint: str = "") -> None:
        self.supported = list(supported)
        msg = f"{what}. Supported architectures: {', '.join(self.supported)}."
        if hint:
            msg += f" {hint}"
        super().__init__(msg)


class HookError(MechscopeError):
    """A hook function misbehaved (wrong shape, dtype, device or return type)."""


class HookShapeError(HookError):
    """A hook function returned a tensor whose shape differs from the activation's."""

    def __init__(self, name: str, expected: Sequence[int], got: Sequence[int]) -> None:
        self.name = name
        self.expected = tuple(expected)
        self.got = tuple(got)
        super().__init__(
            f"hook {name!r} returned a tensor of shape {self.got}, but the activation has shape "
            f"{self.expected}; a hook must return a tensor of the same shape (or None after editing in place)"
        )


class TokenizationError(MechscopeError):
    """Text could not be turned into tokens the way the caller asked."""


class ModelLoadError(MechscopeError):
    """A model could not be found, converted or loaded."""


class ArtifactError(MechscopeError):
    """An artifact directory or cache entry is missing, partial or corrupt."""


class CheckpointError(ArtifactError):
    """A training checkpoint is missing, partial, corrupt, or does not match the run resuming it.

    One class for every trainer (dictionaries, toy models), so one ``except`` catches both.
    """
