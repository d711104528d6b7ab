"""The investigate config: every problem named by its dotted field, before any work starts."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from mechscope.investigate import (
    STAGE_NAMES,
    BudgetSection,
    ConfigError,
    InvestigationConfig,
    StageSection,
    from_flags,
    load_config,
    parse_config,
    section_hash,
    to_toml,
)
from mechscope.investigate.settings import DictionariesSettings, ReportSettings

MODELS = ("smollm2-135m", "gemma3-270m")
TASKS = ("ioi", "factual", "induction", "greater_than")

EXAMPLE = """
seed = 3

[model]
name = "smollm2-135m"
device = "cpu"

[behaviour]
task = "ioi"
n = 32
metric = "logit_diff"

[corpus]
source = "stdlib"
ctx_len = 64
n_tokens = 50000

[budgets]
time_s = 600
memory_gb = 8.5

[stages.dictionaries]
enabled = true
[stages.dictionaries.settings]
layers = [3, 6]
expansion = 16
lr = 3e-4

[stages.explain]
enabled = false
"""


def write(tmp_path, text: str, name: str = "investigate.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path, text: str, **kwargs) -> InvestigationConfig:
    kwargs.setdefault("known_models", MODELS)
    return load_config(write(tmp_path, text), **kwargs)


def problems(tmp_path, text: str, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **kwargs)
    for p in info.value.problems:
        assert p in str(info.value)
    return info.value.problems


def test_example_loads(tmp_path):
    cfg = load(tmp_path, EXAMPLE)
    assert cfg.seed == 3 and cfg.model.name == "smollm2-135m" and cfg.model.device == "cpu"
    assert cfg.behaviour.n == 32 and cfg.corpus.ctx_len == 64
    assert cfg.budgets == BudgetSection(tokens=None, time_s=600.0, memory_gb=8.5)
    assert isinstance(cfg.budgets.time_s, float)
    dicts = cfg.stages.dictionaries.settings
    assert (dicts["layers"], dicts["expansion"], dicts["lr"]) == ([3, 6], 16, 3e-4)
    assert dicts["k"] == DictionariesSettings().k  # every default filled in, so the hash covers it
    assert not cfg.stages.explain.enabled
    assert cfg.stages.report == StageSection(settings=dataclasses.asdict(ReportSettings()))


def test_the_documented_example_is_valid(tmp_path):
    page = (Path(__file__).resolve().parents[2] / "docs" / "investigate.md").read_text()
    (block,) = re.findall(r"^```toml\n(.*?)^```", page, re.S | re.M)
    cfg = load(tmp_path, block, known_tasks=TASKS)
    assert cfg.stages.dictionaries.settings["layers"] == [3, 6]
    assert cfg.stages.dictionaries.settings["expansion"] == 16
    defaults = from_flags(model=cfg.model.name, task=cfg.behaviour.task, known_models=MODELS)
    assert (cfg.seed, cfg.model, cfg.behaviour, cfg.corpus) == (
        defaults.seed,
        defaults.model,
        defaults.behaviour,
        defaults.corpus,
    )


def test_minimal_config_takes_defaults(tmp_path):
    cfg = load(tmp_path, '[model]\nname = "toy/induction"\n[behaviour]\ntask = "induction"\n')
    assert cfg.corpus.source == "stdlib" and cfg.seed == 0 and cfg.behaviour.n == 64
    assert all(cfg.stages.get(n).enabled for n in STAGE_NAMES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[behaviour]\nnn = 3", "behaviour.nn: unknown field; did you mean 'n'?"),
        ("[modle]\nname = 'x'", "modle: unknown section; did you mean 'model'?"),
        ("[stages.localize]\nenabled = true", "stages.localize: unknown stage; did you mean 'localise'?"),
        (
            "[stages.circuit]\nenabeld = true",
            "stages.circuit.enabeld: unknown field; did you mean 'enabled'?",
        ),
        ("[corpus]\nctx = 3", "corpus.ctx: unknown field; did you mean 'ctx_len'?"),
    ],
)
def test_unknown_names_are_named_with_a_suggestion(tmp_path, text, expected):
    base = '[model]\nname = "smollm2-135m"\n[behaviour]\ntask = "ioi"\n'
    if text.startswith("[behaviour]"):
        base, text = '[model]\nname = "smollm2-135m"\n', text + '\ntask = "ioi"'
    found = problems(tmp_path, base + text)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('n = "eight"', "behaviour.n: expected int, got str 'eight'"),
        ("n = true", "behaviour.n: expected int, got bool True"),
        ("n = 2.5", "behaviour.n: expected int, got float 2.5"),
        ("metric = 3", "behaviour.metric: expected str, got int 3"),
        ("n = 0", "behaviour.n: must be positive, got 0"),
    ],
)
def test_wrong_types_and_values_name_the_field(tmp_path, line, expected):
    found = problems(tmp_path, f'[model]\nname = "smollm2-135m"\n[behaviour]\ntask = "ioi"\n{line}\n')
    assert found == [expected]


def test_other_type_errors(tmp_path):
    text = (
        'seed = "x"\nmodel = 3\n[behaviour]\ntask = "ioi"\n[budgets]\ntime_s = "soon"\n'
        "[stages.circuit]\nenabled = 1\n[stages.circuit.settings]\nnested = { a = 1 }\nok = [1, 'a']\n"
    )
    found = problems(tmp_path, text, settings_schema=None)  # free settings: stages of your own
    assert found[:2] == ["model: expected a table, got int 3", "model.name: missing required field"]
    assert "budgets.time_s: expected float, got str 'soon'" in found
    assert "stages.circuit.enabled: expected bool, got int 1" in found
    assert "seed: expected int, got str 'x'" in found
    assert any(p.startswith("stages.circuit.settings.nested: expected a scalar or a list") for p in found)
    assert len(found) == 6  # every problem at once; the list of scalars is fine


def test_missing_required_fields(tmp_path):
    assert problems(tmp_path, "seed = 1\n") == [
        "model.name: missing required field",
        "behaviour.task: missing required field",
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("smollm2", "model.name: unknown model 'smollm2'; did you mean 'smollm2-135m'?"),
        ("weights/missing.gguf", "model.name: no such file or directory"),
        ("./local-model", "model.name: no such file or directory"),
        ("org/some-model", "model.name: 'org/some-model' is not a built-in model"),
    ],
)
def test_a_model_that_cannot_be_found(tmp_path, name, expected):
    found = problems(tmp_path, f'[model]\nname = "{name}"\n[behaviour]\ntask = "ioi"\n')
    assert len(found) == 1 and found[0].startswith(expected), found


def test_hub_ids_need_allow_hub_and_local_paths_resolve_against_the_config(tmp_path):
    text = '[model]\nname = "org/some-model"\n[behaviour]\ntask = "ioi"\n'
    assert load(tmp_path, text, allow_hub=True).model.name == "org/some-model"
    (tmp_path / "models" / "mine").mkdir(parents=True)
    (tmp_path / "task.jsonl").write_text('{"clean": "a", "corrupted": "b", "answer": " c"}\n')
    cfg = load(tmp_path, '[model]\nname = "models/mine"\n[behaviour]\ntask = "task.jsonl"\n')
    assert cfg.model.name == str((tmp_path / "models" / "mine").resolve())
    assert cfg.behaviour.task == str((tmp_path / "task.jsonl").resolve())


def test_missing_jsonl_task_and_corpus(tmp_path):
    text = '[model]\nname = "toy/x"\n[behaviour]\ntask = "tasks/mine.jsonl"\n[corpus]\nsource = "text:nope.txt"\n'
    found = problems(tmp_path, text)
    assert found[0].startswith("behaviour.task: JSONL task file") and "tasks/mine.jsonl" in found[0]
    assert found[1].startswith("corpus.source: no such file or directory") and len(found) == 2


def test_unknown_builtin_task_when_the_caller_lists_them(tmp_path):
    text = '[model]\nname = "toy/x"\n[behaviour]\ntask = "iio"\n'
    assert load(tmp_path, text).behaviour.task == "iio"  # nothing to check against
    found = problems(tmp_path, text, known_tasks=TASKS)
    assert found[0].startswith("behaviour.task: unknown task 'iio'") and "did you mean 'ioi'?" in found[0]


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(tmp_path, "[model\nname = 1")
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_toml_round_trip(tmp_path):
    (tmp_path / "task.jsonl").write_text("{}\n")
    cfg = load(tmp_path, EXAMPLE.replace('task = "ioi"', 'task = "task.jsonl"'))
    settings = {"label": 'quote " and \\ and ünïcode\n', "inf": float("inf"), "flags": [True, False], "i": -3}
    stages = dataclasses.replace(cfg.stages, report=StageSection(enabled=False, settings=settings))
    cfg = dataclasses.replace(cfg, stages=stages)
    text = to_toml(cfg)
    other = tmp_path / "elsewhere"
    other.mkdir()
    back = load_config(write(other, text), known_models=MODELS, settings_schema=None)
    assert back == cfg
    assert to_toml(back) == text


def test_from_flags_round_trip(tmp_path):
    cfg = from_flags(model="toy/induction", task="induction", seed=5)
    assert cfg.seed == 5 and cfg.corpus.source == "stdlib"
    assert load_config(write(tmp_path, to_toml(cfg))) == cfg
    with pytest.raises(ConfigError, match=r"model\.name"):
        from_flags(model="org/model", task="ioi")
    assert from_flags(model="org/model", task="ioi", allow_hub=True).model.name == "org/model"


def _edit(cfg: InvestigationConfig, section: str, **changes) -> InvestigationConfig:
    if section == "seed":
        return dataclasses.replace(cfg, seed=changes["seed"])
    if section.startswith("stages."):
        stage = section.split(".")[1]
        new = dataclasses.replace(cfg.stages.get(stage), **changes)
        return dataclasses.replace(cfg, stages=dataclasses.replace(cfg.stages, **{stage: new}))
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **changes)})


@pytest.mark.parametrize(
    ("section", "changes", "affected"),
    [
        ("model", {"device": "cuda"}, set()),
        ("budgets", {"time_s": 1.0}, set()),
        ("stages.circuit", {"enabled": False}, set()),
        ("stages.circuit", {"settings": {"steps": 1}}, {"circuit"}),
        ("corpus", {"ctx_len": 32}, {"dictionaries", "features", "checks"}),
        ("behaviour", {"n": 8}, {"evaluate", "localise", "circuit", "checks"}),
        ("model", {"name": "gemma3-270m"}, set(STAGE_NAMES) - {"report"}),
        ("seed", {"seed": 4}, set(STAGE_NAMES)),
    ],
)
def test_section_hash_changes_only_with_the_stage_inputs(tmp_path, section, changes, affected):
    cfg = load(tmp_path, EXAMPLE)
    edited = _edit(cfg, section, **changes)
    changed = {n for n in STAGE_NAMES if section_hash(cfg, n) != section_hash(edited, n)}
    assert changed == affected
    assert all(section_hash(cfg, n) == section_hash(load(tmp_path, EXAMPLE), n) for n in STAGE_NAMES)


def test_section_hash_follows_the_jsonl_task_contents(tmp_path):
    task = tmp_path / "task.jsonl"
    task.write_text('{"clean": "a"}\n')
    cfg = parse_config({"model": {"name": "toy/x"}, "behaviour": {"task": str(task)}})
    before = {n: section_hash(cfg, n) for n in STAGE_NAMES}
    task.write_text('{"clean": "b"}\n')
    changed = {n for n in STAGE_NAMES if section_hash(cfg, n) != before[n]}
    assert changed == {"evaluate", "localise", "circuit", "checks"}
    with pytest.raises(
        ConfigError, match=re.escape("stages.localize: unknown stage; did you mean 'localise'")
    ):
        section_hash(cfg, "localize")


def test_every_stage_setting_is_documented():
    from mechscope.investigate.settings import SETTINGS

    page = (Path(__file__).resolve().parents[2] / "docs" / "investigate.md").read_text()
    for name, cls in SETTINGS.items():
        section = page.split(f"**`{name}`**", 1)[1].split("**`", 1)[0]
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in section, (name, f.name)


def test_stage_settings_are_checked_by_field(tmp_path):
    text = (
        '[model]\nname = "smollm2-135m"\n[behaviour]\ntask = "ioi"\n'
        "[stages.circuit.settings]\nstepz = 3\nmethod = 'exact-ish'\nfractions = [0.0, 'a']\n"
        "[stages.localise.settings]\nn = 0\n[stages.dictionaries.settings]\nload = 'missing-dir'\n"
    )
    found = problems(tmp_path, text)
    assert found == [
        "stages.localise.settings.n: must be positive, got 0",
        "stages.circuit.settings.stepz: unknown field; did you mean 'steps'? "
        "(known: n, method, steps, graph, ablation, circuit_edges, check_top, fractions, batch)",
        "stages.circuit.settings.fractions[1]: expected float, got str 'a'",
        "stages.circuit.settings.method: unknown value 'exact-ish'; did you mean 'exact'? "
        "(known: eap-ig, eap, exact, acdc)",
        f"stages.dictionaries.settings.load: no such file or directory: {str(tmp_path / 'missing-dir')!r}",
    ]


def test_another_mechscope_release_changes_every_stage_hash(tmp_path, monkeypatch):
    import mechscope.investigate.config as config_module

    cfg = load(tmp_path, EXAMPLE)
    before = {n: section_hash(cfg, n) for n in STAGE_NAMES}
    monkeypatch.setattr(config_module, "__version__", "99.0.0")
    assert all(section_hash(cfg, n) != before[n] for n in STAGE_NAMES)
