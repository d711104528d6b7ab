"""What the stages of one investigation share: the model (loaded once, only when a stage runs),
the behaviour's task, and the checks that must pass before any stage starts.

:func:`preflight` turns every problem it can find without running a stage into a
:class:`~mechscope.investigate.config.ConfigError` naming the config field: a model that cannot
be loaded (``model.name``), a task that cannot be built or tokenised, e.g. a multi-token answer
(``behaviour.task``), an unknown metric or sweep, a layer past the model's last, a disabled
stage that an enabled one needs, a text corpus for a model without a tokenizer, and a token
budget the corpus exceeds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import MechscopeError
from ..models import HookedModel, load_model
from ..tasks import PreparedTask, Task, prepare
from ..tasks.metrics import METRICS
from .config import STAGE_NAMES, ConfigError, InvestigationConfig

__all__ = ["DEPENDS", "Session", "build_task", "dependencies", "enabled_stages", "known_tasks", "preflight"]

DEPENDS: dict[str, tuple[str, ...]] = {
    "evaluate": (),
    "localise": ("evaluate",),
    "circuit": ("evaluate",),
    "dictionaries": ("localise",),
    "features": ("evaluate", "dictionaries"),
    "explain": ("features", "dictionaries"),
    "checks": ("localise", "dictionaries", "features", "explain"),
    "report": STAGE_NAMES[:-1],
}
"""Stages each stage reads from (``dictionaries`` reads ``localise`` only when its layers are
picked automatically; ``checks`` and ``report`` read whichever of theirs are enabled)."""

REQUIRED: dict[str, tuple[str, ...]] = {
    "localise": ("evaluate",),
    "circuit": ("evaluate",),
    "features": ("evaluate", "dictionaries"),
    "explain": ("features", "dictionaries"),
}
"""Upstream stages that must be enabled when the stage is."""

CORPUS_STAGES = ("dictionaries", "features", "explain")
"""Stages that read the text corpus (the model needs a tokenizer)."""


def known_tasks() -> tuple[str, ...]:
    """The built-in task names."""
    from ..tasks.builtin import BUILTIN_TASKS

    return tuple(BUILTIN_TASKS)


def enabled_stages(config: InvestigationConfig) -> list[str]:
    """The enabled stages, in order."""
    return [n for n in STAGE_NAMES if config.stages.get(n).enabled]


def dependencies(config: InvestigationConfig, name: str) -> tuple[str, ...]:
    """The enabled stages that stage ``name`` reads."""
    on = set(enabled_stages(config))
    deps = DEPENDS[name]
    if name == "dictionaries" and config.stages.dictionaries.settings.get("layers"):
        deps = ()  # explicit layers: the localisation is not read
    return tuple(d for d in deps if d in on)


def build_task(model: HookedModel, config: InvestigationConfig) -> Task:
    """The behaviour's task: a built-in one with ``n`` examples and the seed, or the first
    ``n`` examples of a JSONL file; its metric is ``behaviour.metric``."""
    from ..tasks.builtin import make_task
    from ..tasks.jsonl import load_jsonl

    b = config.behaviour
    if b.task in known_tasks():
        kwargs: dict[str, Any] = {"n": b.n} if b.task == "factual" else {"n": b.n, "seed": config.seed}
        task = make_task(b.task, model, **kwargs)
    else:
        task = load_jsonl(b.task, metric=b.metric)
    if len(task) > b.n:
        task = task.subset(range(b.n))
    return dataclasses.replace(task, metric=b.metric)


@dataclass
class Session:
    """The model and task shared by the stages of one run; the model loads on first use."""

    config: InvestigationConfig
    """The validated config."""
    say: Any = print
    """Where one-line notes go (loading the model)."""
    _model: HookedModel | None = field(default=None, repr=False)
    _task: Task | None = field(default=None, repr=False)
    _prepared: dict[int, PreparedTask] = field(default_factory=dict, repr=False)

    @property
    def model(self) -> HookedModel:
        """The model, loaded on first use (``model.device``: ``auto`` picks CUDA when present)."""
        if self._model is None:
            device = None if self.config.model.device == "auto" else self.config.model.device
            self.say(f"loading {self.config.model.name}")
            self._model = load_model(self.config.model.name, device=device)
        return self._model

    @property
    def task(self) -> Task:
        """The behaviour's task (built once)."""
        if self._task is None:
            self._task = build_task(self.model, self.config)
        return self._task

    def prepared(self, n: int | None = None) -> PreparedTask:
        """The first ``n`` examples (default: all) tokenised for the model."""
        k = len(self.task) if n is None else min(n, len(self.task))
        if k not in self._prepared:
            self._prepared[k] = prepare(
                self.model, self.task if k == len(self.task) else self.task.subset(range(k))
            )
        return self._prepared[k]

    def settings(self, stage: str) -> dict[str, Any]:
        """A stage's validated settings."""
        return self.config.stages.get(stage).settings


def preflight(config: InvestigationConfig, session: Session) -> None:
    """Every check that needs the model but no stage; raises :class:`ConfigError` naming fields."""
    problems = _stage_problems(config)
    if problems:
        raise ConfigError(problems)
    try:
        model = session.model
    except MechscopeError as e:
        raise ConfigError([f"model.name: cannot load {config.model.name!r}: {e}"]) from None
    try:
        session.prepared()
    except MechscopeError as e:
        raise ConfigError([f"behaviour.task: {e}"]) from None
    problems = _model_problems(config, model)
    if problems:
        raise ConfigError(problems)


def _stage_problems(config: InvestigationConfig) -> list[str]:
    on = set(enabled_stages(config))
    problems = []
    if config.behaviour.metric not in METRICS:
        problems.append(
            f"behaviour.metric: unknown metric {config.behaviour.metric!r} (known: {', '.join(METRICS)})"
        )
    for name, needs in REQUIRED.items():
        for dep in needs:
            if name in on and dep not in on:
                problems.append(
                    f"stages.{dep}.enabled: stage {name!r} needs {dep!r}; enable it or disable {name!r}"
                )
    dicts = config.stages.dictionaries.settings
    if "dictionaries" in on and not dicts.get("layers") and "localise" not in on:
        problems.append(
            "stages.dictionaries.settings.layers: empty (pick from the localisation) but stage 'localise' is disabled"
        )
    if "checks" in on and not ({"localise", "features"} & on):
        problems.append("stages.checks.enabled: checks need 'localise' or 'features' to check")
    from ..interventions import SWEEPS

    for i, kind in enumerate(config.stages.localise.settings.get("sweeps", [])):
        if kind not in SWEEPS:
            problems.append(
                f"stages.localise.settings.sweeps[{i}]: unknown sweep {kind!r} (known: {', '.join(SWEEPS)})"
            )
    budget = config.budgets.tokens
    if budget is not None and "dictionaries" in on and config.corpus.n_tokens > budget:
        problems.append(f"corpus.n_tokens: {config.corpus.n_tokens} exceeds budgets.tokens = {budget}")
    return problems


def _model_problems(config: InvestigationConfig, model: HookedModel) -> list[str]:
    on = set(enabled_stages(config))
    problems = []
    for i, layer in enumerate(config.stages.dictionaries.settings.get("layers", [])):
        if layer >= model.cfg.n_layers:
            problems.append(
                f"stages.dictionaries.settings.layers[{i}]: layer {layer} but the model has {model.cfg.n_layers} blocks"
            )
    if model.tokenizer is None:
        for name in CORPUS_STAGES:
            if name in on:
                problems.append(
                    f"stages.{name}.enabled: {config.model.name!r} has no tokenizer, so the text corpus "
                    f"cannot be read; set enabled = false for {', '.join(CORPUS_STAGES)}"
                )
    return problems
