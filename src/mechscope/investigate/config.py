"""The ``mechscope investigate`` config: one TOML file, validated before any work starts.

Layout (every section but ``[model]`` and ``[behaviour]`` may be left out; see
``docs/investigate.md`` for a complete example)::

    seed = 0
    [model]        name, device
    [behaviour]    task, n, metric
    [corpus]       source, ctx_len, n_tokens
    [budgets]      tokens, time_s, memory_gb
    [stages.<stage>]           enabled
    [stages.<stage>.settings]  free scalars and lists of scalars, read by the stage

Validation collects every problem, each naming its field by dotted path
(``behaviour.n: expected int, got str 'eight'``), and raises one :class:`ConfigError`:
unknown sections and fields (with the closest known name), wrong types, missing required
fields, out-of-range numbers, a model that cannot be found, a missing JSONL task file and a
missing corpus file. Relative paths are resolved against the config file's directory and
stored absolute, so a config written into a run directory still points at the same files.

:func:`section_hash` gives each stage a content hash of exactly the config it reads
(:data:`STAGE_INPUTS`); the stage runner chains these hashes along the stage graph.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import sys
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import MechscopeError
from .settings import CHOICES, NON_NEGATIVE, SETTINGS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport
    import tomli as tomllib

STAGE_NAMES: tuple[str, ...] = (
    "evaluate",
    "localise",
    "circuit",
    "dictionaries",
    "features",
    "explain",
    "checks",
    "report",
)
"""The investigation's stages, in the order they run."""

STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "evaluate": ("model", "behaviour"),
    "localise": ("model", "behaviour"),
    "circuit": ("model", "behaviour"),
    "dictionaries": ("model", "corpus"),
    "features": ("model", "corpus"),
    "explain": ("model",),
    "checks": ("model", "behaviour", "corpus"),
    "report": (),
}
"""Config sections each stage reads directly, besides its own settings and ``seed`` (which
every stage hash includes). What a stage reads from upstream stages is covered by the runner,
which chains the upstream input hashes; ``model.device`` and ``[budgets]`` are in no hash."""

HASH_VERSION = 1
"""Bumped whenever the hashed payload changes shape, so old runs are recomputed, not reused."""

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_CORPUS_PREFIXES = ("text:", "jsonl:", "parquet:", "hf:")


class ConfigError(MechscopeError):
    """An investigate config that is malformed or names things that do not exist.

    ``problems`` lists every problem found, each starting with the dotted field name.
    """

    def __init__(self, problems: Sequence[str], source: str = "") -> None:
        self.problems = list(problems)
        where = f" {source}" if source else ""
        if len(self.problems) == 1:
            msg = f"invalid investigate config{where}: {self.problems[0]}"
        else:
            msg = f"invalid investigate config{where}:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(msg)


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ModelSection:
    """``[model]``: which model to investigate."""

    name: str
    """A built-in model name (``smollm2-135m``), ``toy/<name>``, a local directory or ``.gguf``
    file, or a hub id ``org/model`` (accepted only when hub downloads are allowed)."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda``, ``cuda:<i>`` or ``mps``; not part of any stage hash."""


@dataclass(frozen=True)
class BehaviourSection:
    """``[behaviour]``: the behaviour to explain."""

    task: str
    """A built-in task name (``ioi``, ``factual``, ``induction``, ``greater_than``) or the path
    of a JSONL task file (its contents, not only its path, enter the stage hashes)."""
    n: int = 64
    """Number of clean/corrupted prompt pairs."""
    metric: str = "logit_diff"
    """The metric that scores the behaviour (``logit_diff``, ``normalized_logit_diff``, ...)."""


@dataclass(frozen=True)
class CorpusSection:
    """``[corpus]``: the text that dictionaries are trained and features are studied on."""

    source: str = "stdlib"
    """``stdlib`` (the offline corpus) or a local text, JSONL or Parquet file or saved dataset,
    optionally prefixed ``text:``, ``jsonl:``, ``parquet:`` or ``hf:``."""
    ctx_len: int = 128
    """Tokens per context."""
    n_tokens: int = 200_000
    """Tokens of corpus to read."""


@dataclass(frozen=True)
class StageSection:
    """``[stages.<name>]``: whether a stage runs, and its own settings."""

    enabled: bool = True
    """Run this stage (a disabled stage must not be a dependency of an enabled one)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Free stage settings (``[stages.<name>.settings]``): scalars or lists of scalars."""


@dataclass(frozen=True)
class StagesSection:
    """``[stages]``: one table per stage."""

    evaluate: StageSection = field(default_factory=StageSection)
    """Measure the behaviour: clean and corrupted metric."""
    localise: StageSection = field(default_factory=StageSection)
    """Find the components that carry it (patching sweeps)."""
    circuit: StageSection = field(default_factory=StageSection)
    """Find the circuit (edge attribution, pruning)."""
    dictionaries: StageSection = field(default_factory=StageSection)
    """Train or load sparse dictionaries at the sites that matter."""
    features: StageSection = field(default_factory=StageSection)
    """Feature statistics and examples."""
    explain: StageSection = field(default_factory=StageSection)
    """Explain and score features."""
    checks: StageSection = field(default_factory=StageSection)
    """Causal checks of the explanations and the circuit."""
    report: StageSection = field(default_factory=StageSection)
    """Write the HTML report."""

    def get(self, name: str) -> StageSection:
        """The section of the stage called ``name``."""
        if name not in STAGE_NAMES:
            raise ConfigError([_unknown(f"stages.{name}", name, STAGE_NAMES, "stage")])
        section: StageSection = getattr(self, name)
        return section


@dataclass(frozen=True)
class BudgetSection:
    """``[budgets]``: limits the stages should respect; unset means no limit. In no stage hash."""

    tokens: int | None = None
    """Most tokens any one stage may push through the model."""
    time_s: float | None = None
    """Wall-clock budget of the whole investigation, in seconds."""
    memory_gb: float | None = None
    """Memory budget (host or accelerator), in GB."""


@dataclass(frozen=True)
class InvestigationConfig:
    """A whole investigation: what to study, on which data, with which stages and limits."""

    model: ModelSection
    """``[model]``"""
    behaviour: BehaviourSection
    """``[behaviour]``"""
    corpus: CorpusSection = field(default_factory=CorpusSection)
    """``[corpus]``"""
    stages: StagesSection = field(default_factory=StagesSection)
    """``[stages.*]``"""
    budgets: BudgetSection = field(default_factory=BudgetSection)
    """``[budgets]``"""
    seed: int = 0
    """Seed of every random choice the stages make."""


_SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "behaviour": BehaviourSection,
    "corpus": CorpusSection,
    "budgets": BudgetSection,
}
_TOP_KEYS = (*_SECTIONS, "stages", "seed")


# ----------------------------------------------------------------------------- parsing


def load_config(
    path: str | Path,
    *,
    known_models: Collection[str] = (),
    known_tasks: Collection[str] | None = None,
    allow_hub: bool = False,
    settings_schema: Mapping[str, type] | None = SETTINGS,
) -> InvestigationConfig:
    """Read and validate the TOML config at ``path`` (see :func:`parse_config`)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"no such config file: {path}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"not valid TOML: {e}"], source=str(path)) from None
    return parse_config(
        data,
        known_models=known_models,
        known_tasks=known_tasks,
        allow_hub=allow_hub,
        base_dir=path.resolve().parent,
        source=str(path),
        settings_schema=settings_schema,
    )


def from_flags(
    model: str,
    task: str,
    *,
    seed: int = 0,
    known_models: Collection[str] = (),
    known_tasks: Collection[str] | None = None,
    allow_hub: bool = False,
    settings_schema: Mapping[str, type] | None = SETTINGS,
) -> InvestigationConfig:
    """A validated config from command-line flags: defaults for everything else."""
    data = {"model": {"name": model}, "behaviour": {"task": task}, "seed": seed}
    return parse_config(
        data, known_models=known_models, known_tasks=known_tasks, allow_hub=allow_hub, source="(flags)",
        settings_schema=settings_schema,
    )  # fmt: skip


def parse_config(
    data: Mapping[str, Any],
    *,
    known_models: Collection[str] = (),
    known_tasks: Collection[str] | None = None,
    allow_hub: bool = False,
    base_dir: str | Path | None = None,
    source: str = "",
    settings_schema: Mapping[str, type] | None = SETTINGS,
) -> InvestigationConfig:
    """Validate a parsed TOML document and build the config; raise :class:`ConfigError`.

    ``known_models`` are the built-in model names (the caller passes
    ``mechscope.models.zoo.BUILTIN``); ``known_tasks``, when given, the built-in task names.
    A hub id is accepted only with ``allow_hub``. Relative paths resolve against ``base_dir``
    (default: the working directory). Each stage's settings are checked against its class in
    ``settings_schema`` (default :data:`~mechscope.investigate.settings.SETTINGS`; every default
    is filled in); ``None`` accepts free scalar settings (for stages of your own).
    """
    base = Path.cwd() if base_dir is None else Path(base_dir)
    problems: list[str] = []
    _check_keys(data, _TOP_KEYS, "", problems)
    values = {name: _parse_fields(cls, data.get(name, {}), name, problems) for name, cls in _SECTIONS.items()}
    stages = _parse_stages(data.get("stages", {}), problems, settings_schema, base)
    seed = data.get("seed", 0)
    if (msg := _type_problem(seed, int, "seed")) is not None:
        problems.append(msg)
    elif seed < 0:
        problems.append(f"seed: must be >= 0, got {seed}")
    _check_model(values["model"], known_models, allow_hub, base, problems)
    _check_behaviour(values["behaviour"], known_tasks, base, problems)
    _check_corpus(values["corpus"], base, problems)
    _check_positive(values, problems)
    if problems:
        raise ConfigError(problems, source=source)
    return InvestigationConfig(
        model=ModelSection(**values["model"]),
        behaviour=BehaviourSection(**values["behaviour"]),
        corpus=CorpusSection(**values["corpus"]),
        stages=StagesSection(**stages),
        budgets=BudgetSection(**values["budgets"]),
        seed=seed,
    )


def _unknown(dotted: str, name: str, choices: Sequence[str], what: str = "field") -> str:
    msg = f"{dotted}: unknown {what}"
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    if close:
        msg += f"; did you mean {close[0]!r}?"
    return msg + (f" (known: {', '.join(choices)})" if choices else "")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _check_keys(table: Mapping[str, Any], known: Sequence[str], prefix: str, problems: list[str]) -> None:
    for key in table:
        if key not in known:
            problems.append(_unknown(_join(prefix, key), key, known, "section" if not prefix else "field"))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_problem(value: Any, tp: Any, dotted: str) -> str | None:
    """Why ``value`` is not of the field type ``tp`` (``X | None`` means ``X``), or None."""
    base = tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        base = next(a for a in typing.get_args(tp) if a is not type(None))
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif base is str:
        ok = isinstance(value, str)
    elif typing.get_origin(base) is list:
        (item,) = typing.get_args(base)
        if not isinstance(value, list):
            return f"{dotted}: expected a list of {item.__name__}, got {type(value).__name__} {_show(value)}"
        for i, v in enumerate(value):
            if (msg := _type_problem(v, item, f"{dotted}[{i}]")) is not None:
                return msg
        return None
    else:
        ok = isinstance(value, dict)
    if ok:
        return None
    name = "table" if typing.get_origin(base) is dict else base.__name__
    return f"{dotted}: expected {name}, got {type(value).__name__} {_show(value)}"


def _parse_fields(cls: type, table: Any, prefix: str, problems: list[str]) -> dict[str, Any]:
    """The well-typed fields of one table; every problem is appended to ``problems``."""
    if not isinstance(table, dict):
        problems.append(f"{prefix}: expected a table, got {type(table).__name__} {_show(table)}")
        table = {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(table, list(fields), prefix, problems)
    values: dict[str, Any] = {}
    for name, f in fields.items():
        dotted = _join(prefix, name)
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{dotted}: missing required field")
            continue
        msg = _type_problem(table[name], hints[name], dotted)
        if msg is not None:
            problems.append(msg)
        elif hints[name] in (float, float | None):
            values[name] = float(table[name])
        elif hints[name] == list[float]:
            values[name] = [float(v) for v in table[name]]
        else:
            values[name] = table[name]
    return values


def _parse_settings(name: str, settings: dict[str, Any], schema: Mapping[str, type] | None,
                    problems: list[str], base: Path) -> dict[str, Any]:  # fmt: skip
    """A stage's settings checked against its class in ``schema`` (defaults filled in), or
    free scalar settings when ``schema`` is None."""
    prefix = f"stages.{name}.settings"
    if schema is None:
        for key, value in settings.items():
            if not _is_setting(value):
                problems.append(
                    f"{prefix}.{key}: expected a scalar or a list of scalars, got {type(value).__name__} {_show(value)}"
                )
        return dict(settings)
    cls = schema[name]
    before = len(problems)
    values = _parse_fields(cls, settings, prefix, problems)
    for key, choices in CHOICES.get(name, {}).items():
        if key in values and values[key] not in choices:
            problems.append(_unknown(f"{prefix}.{key}", str(values[key]), choices, "value").replace(
                "unknown value", f"unknown value {values[key]!r}"))  # fmt: skip
    for key, value in values.items():
        numbers = value if isinstance(value, list) else [value]
        if key not in NON_NEGATIVE and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in numbers
        ):
            if any(not (v > 0 and math.isfinite(v)) for v in numbers) and numbers:
                problems.append(f"{prefix}.{key}: must be positive, got {value!r}")
        elif key in NON_NEGATIVE and any(v < 0 for v in numbers):
            problems.append(f"{prefix}.{key}: must be >= 0, got {value!r}")
    if values.get("load"):
        path = _resolve(values["load"], base)
        if path.exists():
            values["load"] = str(path.resolve())
        else:
            problems.append(f"{prefix}.load: no such file or directory: {str(path)!r}")
    if len(problems) > before:
        return {}
    return dataclasses.asdict(cls(**values))


def _parse_stages(
    table: Any, problems: list[str], schema: Mapping[str, type] | None = None, base: Path | None = None
) -> dict[str, StageSection]:
    if not isinstance(table, dict):
        problems.append(f"stages: expected a table, got {type(table).__name__} {_show(table)}")
        return {}
    for key in table:
        if key not in STAGE_NAMES:
            problems.append(_unknown(f"stages.{key}", key, STAGE_NAMES, "stage"))
    stages: dict[str, StageSection] = {}
    for name in STAGE_NAMES:
        if name not in table and schema is None:
            continue
        values = _parse_fields(StageSection, table.get(name, {}), f"stages.{name}", problems)
        values["settings"] = _parse_settings(
            name, values.get("settings", {}), schema, problems, base or Path.cwd()
        )
        stages[name] = StageSection(**values)
    return stages


def _is_setting(value: Any) -> bool:
    scalar = (str, int, float, bool)
    return isinstance(value, scalar) or (
        isinstance(value, list) and all(isinstance(v, scalar) for v in value)
    )


# ----------------------------------------------------------------------------- semantic checks


def _resolve(spec: str, base: Path) -> Path:
    path = Path(spec).expanduser()
    return path if path.is_absolute() else base / path


def _check_model(
    values: dict[str, Any], known: Collection[str], allow_hub: bool, base: Path, problems: list[str]
) -> None:
    if "device" in values and not _DEVICE.fullmatch(values["device"]):
        problems.append(f"model.device: expected auto, cpu, cuda, cuda:<i> or mps, got {values['device']!r}")
    name = values.get("name")
    if name is None or name in known or (name.startswith("toy/") and len(name) > 4):
        return
    path = _resolve(name, base)
    if path.exists():
        values["name"] = str(path.resolve())
    elif name.endswith(".gguf") or name.startswith((".", "~")) or Path(name).is_absolute():
        problems.append(f"model.name: no such file or directory: {str(path)!r}")
    elif "/" in name:
        if not allow_hub:
            problems.append(
                f"model.name: {name!r} is not a built-in model, a toy/<name> or an existing local path; "
                "as a hub id it needs hub downloads allowed (allow_hub=True, --allow-hub)"
            )
    else:
        msg = _unknown("model.name", name, sorted(known), "model")
        problems.append(msg.replace("unknown model", f"unknown model {name!r}"))


def _check_behaviour(
    values: dict[str, Any], known_tasks: Collection[str] | None, base: Path, problems: list[str]
) -> None:
    task = values.get("task")
    if task is None:
        return
    if task.endswith(".jsonl") or "/" in task or "\\" in task:
        path = _resolve(task, base)
        if path.is_file():
            values["task"] = str(path.resolve())
        else:
            problems.append(f"behaviour.task: JSONL task file {str(path)!r} does not exist")
    elif known_tasks is not None and task not in known_tasks:
        msg = _unknown("behaviour.task", task, sorted(known_tasks), "task")
        problems.append(msg.replace("unknown task", f"unknown task {task!r} (nor a .jsonl path)"))


def _check_corpus(values: dict[str, Any], base: Path, problems: list[str]) -> None:
    source = values.get("source")
    if source is None or source == "stdlib":
        return
    prefix = next((p for p in _CORPUS_PREFIXES if source.startswith(p)), "")
    path = _resolve(source[len(prefix) :], base)
    if path.exists():
        values["source"] = prefix + str(path.resolve())
    else:
        problems.append(
            f"corpus.source: no such file or directory {str(path)!r} "
            "(use 'stdlib' for the built-in corpus, or a local text/JSONL/Parquet file or saved dataset)"
        )


def _check_positive(values: dict[str, dict[str, Any]], problems: list[str]) -> None:
    checks = [
        ("behaviour", "n"),
        ("corpus", "ctx_len"),
        ("corpus", "n_tokens"),
        ("budgets", "tokens"),
        ("budgets", "time_s"),
        ("budgets", "memory_gb"),
    ]
    for section, key in checks:
        value = values[section].get(key)
        if value is not None and not (value > 0 and math.isfinite(value)):
            problems.append(f"{section}.{key}: must be positive, got {value!r}")


# ----------------------------------------------------------------------------- writing


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__} {value!r}")


def _table(header: str, obj: Any) -> list[str]:
    lines = [f"[{header}]"]
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is not None and not isinstance(value, dict):
            lines.append(f"{_toml_key(f.name)} = {_toml_value(value)}")
    return lines


def to_toml(config: InvestigationConfig) -> str:
    """The config as TOML text that :func:`load_config` reads back to an equal config."""
    lines = [f"# mechscope investigate config (mechscope {__version__})", f"seed = {config.seed}", ""]
    for name in _SECTIONS:
        lines += [*_table(name, getattr(config, name)), ""]
    for name in STAGE_NAMES:
        stage = config.stages.get(name)
        lines += [*_table(f"stages.{name}", stage), ""]
        if stage.settings:
            lines.append(f"[stages.{name}.settings]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in stage.settings.items()]
            lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- hashing


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def section_hash(config: InvestigationConfig, stage_name: str) -> str:
    """sha256 (hex) of the canonical JSON of what ``stage_name`` reads from the config.

    That is: its own ``settings``, ``seed``, and the sections :data:`STAGE_INPUTS` lists for it,
    where ``model`` means ``model.name`` only and ``behaviour`` adds the sha256 of a JSONL
    task file's bytes. ``enabled``, ``model.device`` and ``[budgets]`` never enter a hash.
    """
    stage = config.stages.get(stage_name)
    payload: dict[str, Any] = {
        "hash_version": HASH_VERSION,
        "mechscope_version": __version__,  # another release may compute a stage differently
        "stage": stage_name,
        "settings": stage.settings,
        "seed": config.seed,
    }
    for section in STAGE_INPUTS[stage_name]:
        if section == "model":
            payload["model"] = {"name": config.model.name}
        elif section == "behaviour":
            payload["behaviour"] = dataclasses.asdict(config.behaviour)
            task = Path(config.behaviour.task)
            if task.is_absolute() and task.is_file():
                payload["behaviour"]["task_sha256"] = hashlib.sha256(task.read_bytes()).hexdigest()
        else:
            payload[section] = dataclasses.asdict(getattr(config, section))
    load = stage.settings.get("load")
    if isinstance(load, str) and load and Path(load).exists():
        payload["load_sha256"] = _tree_sha256(Path(load))
    return hashlib.sha256(_canonical(payload).encode("utf-8")).hexdigest()


def _tree_sha256(root: Path) -> str:
    """sha256 over the relative paths and bytes of every file under ``root`` (or of one file)."""
    h = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        h.update(str(path.relative_to(root) if path != root else path.name).encode("utf-8") + b"\0")
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
