"""``mechscope investigate`` end to end: a tiny random model, the compiled ground truth, exact
resume after a kill, reruns limited to what changed, and configs refused before any work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from investigate_inputs import write_inputs
from mechscope.cli import main
from mechscope.investigate import ConfigError, read_stage_json
from mechscope.investigate.run import investigate, read_config
from mechscope.investigate.session import Session
from mechscope.investigate.stages_features import edit_mask, feature_attribution
from mechscope.tasks import make_metric

STAGES = ["evaluate", "localise", "circuit", "dictionaries", "features", "explain", "checks", "report"]
QUIET = {"progress": lambda *a: None, "say": lambda m: None}


def _sources(obj) -> list[str]:
    """Every ``source`` of a measurement in the summary."""
    if isinstance(obj, dict):
        found = [obj["source"]] if set(obj) == {"value", "source"} else []
        return found + [s for v in obj.values() for s in _sources(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _sources(v)]
    return []


def test_tiny_run_is_complete_and_every_number_has_its_file(tiny_run):
    for name in STAGES:
        meta = read_stage_json(tiny_run / name)
        assert meta is not None and meta["complete"], name
    timings = json.loads((tiny_run / "timings.json").read_text())
    assert [s["name"] for s in timings["stages"]] == STAGES
    assert all(s["status"] == "ran" and s["peak_rss_mb"] > 0 for s in timings["stages"])
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary == json.loads((tiny_run / "report" / "summary.json").read_text())
    assert 5 <= len(summary["headline"]) <= 10
    assert len(summary["headline_sources"]) == len(summary["headline"])
    for line, line_sources in zip(summary["headline"], summary["headline_sources"], strict=True):
        assert line_sources and all((tiny_run / src).exists() for src in line_sources), line
    sources = _sources(summary)
    assert len(sources) > 30
    missing = sorted({s for s in sources if not (tiny_run / s).exists()})
    assert not missing, missing
    assert summary["components"] and summary["circuit"] and summary["features"] and summary["checks"]
    leftovers = [p for p in tiny_run.rglob("*.json") if ".tmp-" in p.read_text()]
    assert not leftovers, leftovers  # no file points into a temporary build directory
    assert summary["environment"]["seed"] == 0 and summary["environment"]["torch"] == torch.__version__
    loaded = read_config(tiny_run / "config.toml")  # the run keeps its validated config
    assert loaded.stages.features.settings["n_features"] == 3


def test_summary_numbers_are_the_numbers_in_their_files(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    b = summary["behaviour"]
    ev = json.loads((tiny_run / b["clean_metric"]["source"]).read_text())
    assert (
        b["clean_metric"]["value"] == ev["clean_metric"]
        and b["corrupted_accuracy"]["value"] == ev["corrupted_accuracy"]
    )
    f = summary["features"][0]
    attr = load_file(tiny_run / f["attribution"]["source"])
    assert f["attribution"]["value"] == pytest.approx(float(attr["attr_patch"][f["feature"]]), rel=1e-6)
    checks = json.loads((tiny_run / "checks" / "checks.json").read_text())["checks"]
    assert [c["measured"]["value"] for c in summary["checks"]] == [c["measured"] for c in checks]


def test_feature_attributions_add_up_to_the_hook_gradient(tiny_run):
    """Σ_i attr_i + error = (x_corrupt − x_clean) · ∂m/∂x at the hook, the dense reference."""
    from mechscope.dictionary.io import load_dictionary

    config = read_config(tiny_run / "config.toml")
    session = Session(config, say=lambda m: None)
    model, data = session.model, session.prepared()
    dsum = read_stage_json(tiny_run / "dictionaries")["summary"]["dictionaries"][0]
    dictionary = load_dictionary(tiny_run / dsum["dictionary"])
    hook = dictionary.config.hook_name
    attr = feature_attribution(model, dictionary, data, config.behaviour.metric)
    _, cc = model.run_with_cache(data.corrupted, names=[hook], return_logits=False)
    m = make_metric(config.behaviour.metric, model, data)
    store = {}

    def keep(t, hook):
        t = t.detach().requires_grad_(True)
        store["x"] = t
        return t

    with torch.enable_grad(), model.hooks([(hook, keep)]):
        per = m(model(data.clean, logits_to_keep=1)[:, -1], data)
        (g,) = torch.autograd.grad(per.sum(), [store["x"]])
    keep_pos = edit_mask(model, data.clean)[..., None]  # BOS left out, as the stage does
    assert keep_pos.sum() < data.clean.attention_mask.sum()  # the tiny task starts with BOS
    dense = float(((cc[hook] - store["x"].detach()) * g * keep_pos).sum() / data.n)
    total = float(attr["attr_patch"].sum() + attr["error_patch"][0])
    assert total == pytest.approx(dense, rel=1e-4, abs=1e-5)
    assert abs(dense) > 0.1  # the hook matters, so the identity is not 0 = 0


GROUND_TRUTH = """
[model]
name = "toy/compiled_induction"
device = "cpu"
[behaviour]
task = "gt.jsonl"
n = 16
[stages.localise.settings]
n = 16
sweeps = ["heads"]
[stages.circuit.settings]
n = 16
graph = "qkv"
steps = 10
circuit_edges = 6
check_top = 8
[stages.dictionaries]
enabled = false
[stages.features]
enabled = false
[stages.explain]
enabled = false
"""


def _ground_truth_inputs(root: Path) -> tuple[Path, object]:
    from mechscope.toys.compiled import COMPILED

    truth = COMPILED["compiled_induction"]()[1]
    gen, rows = torch.Generator().manual_seed(0), []
    while len(rows) < 16:
        clean, corrupt = truth.sample(64, gen), truth.sample(64, gen)
        a, b = truth.algorithm(clean)[:, -1], truth.algorithm(corrupt)[:, -1]
        for i in range(64):  # the last token occurred before (an induction answer); the answers differ
            if len(rows) < 16 and clean[i, -1] in clean[i, :-1] and min(a[i], b[i]) >= 0 and a[i] != b[i]:
                rows.append({"clean": clean[i].tolist(), "corrupted": corrupt[i].tolist(),
                             "answer": int(a[i]), "wrong": int(b[i])})  # fmt: skip
    (root / "gt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "gt.toml").write_text(GROUND_TRUTH)
    return root / "gt.toml", truth


def test_ground_truth_summary_names_the_true_circuit(tmp_path):
    cfg, truth = _ground_truth_inputs(tmp_path)
    result = investigate(read_config(cfg), tmp_path / "run", **QUIET)
    s = result.summary
    assert s["behaviour"]["clean_accuracy"]["value"] == 1.0
    heads = {
        c["component"]: c["normalised_effect"]["value"] for c in s["components"] if c.get("normalised_effect")
    }
    true_heads = {c for c in truth.components if c.startswith("a")}
    assert {h for h, v in heads.items() if v > 0.1} == true_heads
    assert all(abs(heads.get(d, 0.0)) < 0.01 for d in truth.distractors)
    in_circuit = {c["component"] for c in s["components"] if c.get("circuit_score")}
    assert true_heads <= in_circuit <= set(truth.components)
    true_edges = {f"{src}->{dst}" for src, dst in truth.edges}
    kept = [e["edge"] for e in s["circuit"]["top_edges"]][:6]
    assert set(kept) <= true_edges
    assert s["check_counts"]["passed"] >= 1 and s["check_counts"]["failed"] == 0
    assert "a1.h0" in s["headline"][1] and "a0.h0" in s["headline"][1]


_VOLATILE = {"created", "started_at", "path", "output_dir", "build_id", "upstream_builds"}


def _stable(obj):
    """JSON without timings, memory figures, time stamps, build ids and temporary paths."""
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items()
                if k not in _VOLATILE and not k.endswith(("seconds", "_s", "_mb"))}  # fmt: skip
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


def _artifacts(run: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for p in sorted(run.rglob("*")):
        rel = str(p.relative_to(run))
        if not p.is_file() or rel in ("timings.json", "environment.json") or p.suffix == ".html":
            continue
        if p.suffix == ".json":
            out[rel] = _stable(json.loads(p.read_text()))
        elif p.suffix == ".jsonl":
            out[rel] = _stable([json.loads(x) for x in p.read_text().splitlines() if x.strip()])
        else:
            out[rel] = p.read_bytes()
    return out


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from mechscope.investigate.run import investigate, read_config

    def progress(stage, step, total, message):
        if stage == "features" and "attributing" in message:  # in the middle of the stage
            os.kill(os.getpid(), signal.SIGKILL)

    investigate(read_config(sys.argv[1]), sys.argv[2], progress=progress, say=lambda m: None)
    """
)


def test_resume_after_a_kill_gives_the_uninterrupted_artifacts(tmp_path):
    cfg = write_inputs(tmp_path / "inputs")
    investigate(read_config(cfg), tmp_path / "whole", **QUIET)
    killed = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(cfg), str(killed)], capture_output=True, text=True
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert read_stage_json(killed / "dictionaries")["complete"]
    assert not (killed / "features").exists() and list(killed.glob(".features*"))  # half a stage, left behind
    result = investigate(read_config(cfg), killed, **QUIET)
    assert result.report.skipped == ["evaluate", "localise", "circuit", "dictionaries"]
    assert result.report.ran == ["features", "explain", "checks", "report"]
    assert not list(killed.glob(".*tmp*"))
    whole, resumed = _artifacts(tmp_path / "whole"), _artifacts(killed)
    assert sorted(whole) == sorted(resumed)
    different = [k for k in whole if whole[k] != resumed[k]]
    assert not different, different


@pytest.mark.parametrize(
    ("stage", "setting", "value", "expected"),
    [
        ("explain", "held_out", 6, ["explain", "checks", "report"]),
        ("circuit", "steps", 3, ["circuit", "report"]),
        ("report", "title", "Another title", ["report"]),
    ],
)
def test_changing_one_stage_reruns_it_and_what_reads_it(tiny_run, tmp_path, stage, setting, value, expected):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    text = (run / "config.toml").read_text()
    header = f"[stages.{stage}.settings]\n"
    assert header in text
    lines = text.split(header, 1)
    body = [ln for ln in lines[1].split("\n") if not ln.startswith(f"{setting} =")]
    new = f"{setting} = {json.dumps(value)}"
    (run / "config.toml").write_text(lines[0] + header + new + "\n" + "\n".join(body))
    cfg = read_config(run / "config.toml")
    result = investigate(cfg, run, **QUIET)
    assert result.report.ran == expected
    assert result.report.skipped == [s for s in STAGES if s not in expected]
    again = investigate(cfg, run, **QUIET)
    assert again.report.ran == [] and again.report.skipped == STAGES


def _problems(config_text: str, root: Path) -> list[str]:
    (root / "bad.toml").write_text(config_text)
    with pytest.raises(ConfigError) as info:
        investigate(read_config(root / "bad.toml"), root / "run", **QUIET)
    assert not (root / "run").exists()  # refused before any work: no run directory at all
    return info.value.problems


def test_bad_configs_fail_before_any_work_naming_the_field(tiny_inputs, tmp_path):
    root = tiny_inputs.parent
    base = tiny_inputs.read_text()
    work = tmp_path / "w"
    shutil.copytree(root, work)
    cases = [
        (base.replace("check_top = 3", "check_tops = 3"),
         "stages.features.settings.check_tops: unknown field; did you mean 'check_top'?"),
        (base.replace("expansion = 2", "expansion = \"two\""), "stages.dictionaries.settings.expansion: expected int"),
        (base.replace('name = "tiny-llama"', 'name = "./no-such-model"'), "model.name: no such file or directory"),
        (base.replace("check_top = 5", 'check_top = 5\nmethod = "eap-gi"'),
         "stages.circuit.settings.method: unknown value 'eap-gi'; did you mean 'eap-ig'?"),
        (base + "[stages.dictionaries]\nenabled = false\n", "stages.dictionaries.enabled: stage 'features' needs 'dictionaries'"),
    ]  # fmt: skip
    for text, expected in cases:
        assert text != base
        (work / "bad.toml").write_text(text)
        with pytest.raises(ConfigError) as info:
            investigate(read_config(work / "bad.toml"), work / "run", **QUIET)
        assert any(p.startswith(expected) for p in info.value.problems), (expected, info.value.problems)
        assert not (work / "run").exists()


def test_a_multi_token_answer_is_refused_before_any_work(tiny_inputs, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(tiny_inputs.parent, work)
    # same-length id prompts, so the only problem is the answer
    row = {"clean": [1, 50, 60, 70], "corrupted": [1, 51, 61, 71], "answer": " foxes jumping", "wrong": 9}
    (work / "ids.jsonl").write_text(json.dumps(row) + "\n")
    problems = _problems((work / "tiny.toml").read_text(), work)
    assert len(problems) == 1, problems
    assert problems[0].startswith(
        "behaviour.task: task 'ids', example 0: answer ' foxes jumping' is 10 tokens"
    )
    assert "answers must be single tokens" in problems[0]


def test_a_model_without_tokenizer_cannot_read_a_text_corpus(tmp_path, capsys):
    _ground_truth_inputs(tmp_path)
    argv = ["investigate", "--model", "toy/compiled_induction", "--task", str(tmp_path / "gt.jsonl"),
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "stages.dictionaries.enabled" in err and "no tokenizer" in err
    assert not (tmp_path / "run").exists()


def test_cli_prints_the_headline_and_the_report(tiny_inputs, tmp_path, capsys):
    work = tmp_path / "w"
    shutil.copytree(tiny_inputs.parent, work)
    assert main(["investigate", str(work / "tiny.toml"), "--out", str(work / "run")]) == 0
    out = capsys.readouterr().out
    summary = json.loads((work / "run" / "summary.json").read_text())
    for line in summary["headline"]:
        assert line in out
    assert f"report: {work / 'run' / 'report.html'}" in out


def test_a_run_can_load_another_runs_dictionaries(tiny_run, tiny_inputs, tmp_path):
    """What the demo's second investigation does: the same latents, evaluated held out, same features."""
    from mechscope.investigate.demo import _reuse_dictionaries

    config = _reuse_dictionaries(read_config(tiny_inputs), tiny_run)
    assert config.stages.dictionaries.settings["load"] == str((tiny_run / "dictionaries").resolve())
    result = investigate(config, tmp_path / "run", **QUIET)
    loaded = read_stage_json(tmp_path / "run" / "dictionaries")["summary"]["dictionaries"][0]
    trained = read_stage_json(tiny_run / "dictionaries")["summary"]["dictionaries"][0]
    assert (
        loaded["source"] == "loaded"
        and loaded["held_out"]
        and loaded["eval_start"] == trained["train_contexts"] + 1
    )
    weights = "weights.safetensors"
    assert (tmp_path / "run" / loaded["dictionary"] / weights).read_bytes() == (
        tiny_run / trained["dictionary"] / weights
    ).read_bytes()
    assert loaded["metrics"]["fvu"] == pytest.approx(
        trained["metrics"]["fvu"], rel=1e-6
    )  # the same held-out contexts
    ours = [(f["feature"], f["attribution"]["value"]) for f in result.summary["features"]]
    theirs = [
        (f["feature"], f["attribution"]["value"])
        for f in json.loads((tiny_run / "summary.json").read_text())["features"]
    ]
    assert ours == theirs  # same task, same latents, same corpus windows


def test_the_packaged_configs_are_valid():
    from mechscope.investigate.demo import CONFIGS

    names = sorted(p.stem for p in CONFIGS.glob("*.toml"))
    assert names == ["demo-factual", "demo-ioi", "full-gpu"]
    for name in names:
        config = read_config(CONFIGS / f"{name}.toml")
        assert config.model.name == "smollm2-135m"
    assert read_config(CONFIGS / "full-gpu.toml").model.device == "cuda"


def test_a_memory_budget_under_the_peak_is_reported(tiny_inputs, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(tiny_inputs.parent, work)
    text = (
        (work / "tiny.toml").read_text().replace("seed = 0\n", "seed = 0\n[budgets]\nmemory_gb = 0.01\n", 1)
    )
    (work / "tiny.toml").write_text(text)
    notes: list[str] = []
    investigate(read_config(work / "tiny.toml"), work / "run", progress=lambda *a: None, say=notes.append)
    warned = [n for n in notes if n.startswith("warning: stage")]
    assert len(warned) == 8 and "over budgets.memory_gb = 0.01" in warned[0]
    assert "memory_warning" in read_stage_json(work / "run" / "report")["summary"]


def test_mechscope_serve_finds_the_runs_artifacts(tiny_run):
    from mechscope.server.artifacts import Registry

    found = {a.id: a.kind for a in Registry([tiny_run]).discover()}
    assert {i for i, k in found.items() if k == "patch_result"} >= {"localise/heads", "localise/resid_pre"}
    assert found.get("circuit/circuit") == "circuit"
    assert any(i == "features/L0" for i in found)
    assert all(a.error is None for a in Registry([tiny_run]).discover())


def test_check_verdicts():
    from mechscope.investigate.stages_checks import _verdict

    span = 2.0
    assert _verdict(0.01, 5.0, span) == "inconclusive"  # under 1 % of the gap: no sign to test
    assert _verdict(-0.5, 0.2, span) == "failed"
    assert _verdict(-0.5, -0.2, span) == "passed" and _verdict(-0.5, -1.4, span) == "passed"
    assert (
        _verdict(-0.5, -0.1, span) == "weak" and _verdict(0.3, 1.2, span) == "weak"
    )  # right sign, size off > 3x


def test_two_dictionaries_give_feature_circuit_edges_that_add_up(tiny_inputs, tmp_path):
    """Edges into a downstream feature, summed over every upstream latent plus the error term,
    equal the dense gradient of its metric contribution times the residual's patch."""
    from mechscope.dictionary.io import load_dictionary
    from mechscope.investigate.feature_edges import feature_edges

    work = tmp_path / "w"
    shutil.copytree(tiny_inputs.parent, work)
    text = (work / "tiny.toml").read_text().replace("expansion = 2", "layers = [0, 2]\nexpansion = 2")
    (work / "tiny.toml").write_text(text)
    result = investigate(read_config(work / "tiny.toml"), work / "run", **QUIET)
    run = work / "run"
    s = result.summary
    assert [d["name"] for d in s["dictionaries"]] == ["L0", "L2"]
    assert len(s["feature_edges"]) == 9 and all(
        (run / e["weight"]["source"]).is_file() for e in s["feature_edges"]
    )
    assert "feature-edges" in (run / "report.html").read_text()
    dsum = read_stage_json(run / "dictionaries")["summary"]["dictionaries"]
    up, down = (load_dictionary(run / d["dictionary"]) for d in dsum)
    session = Session(read_config(work / "tiny.toml"), say=lambda m: None)
    model, data, metric = session.model, session.prepared(), "logit_diff"
    mask = edit_mask(model, data.clean)
    targets = [f["feature"] for f in s["features"] if f["dictionary"] == "L2"]
    got = feature_edges(model, up, down, data, metric, [0, 1], targets, mask)
    a, b = up.config.hook_name, down.config.hook_name
    _, cc = model.run_with_cache(data.corrupted, names=[a], return_logits=False)
    m = make_metric(metric, model, data)
    store: dict[str, torch.Tensor] = {}
    for k, d in enumerate(targets):
        store.clear()

        def keep(x, hook):
            store["x"] = x.detach().requires_grad_(True)
            return store["x"]

        def splice(x, hook):
            f = down.encode(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)
            err = (x - down.decode(f.reshape(-1, f.shape[-1])).view_as(x)).detach().requires_grad_(True)
            store["f"] = f
            return down.decode(f.reshape(-1, f.shape[-1])).view_as(x) + err

        with torch.enable_grad(), model.hooks([(a, keep), (b, splice)]):
            per = m(model(data.clean, logits_to_keep=1)[:, -1], data)
            (g,) = torch.autograd.grad(per.sum(), [store["f"]], retain_graph=True)
            s_d = (g[..., d].detach() * store["f"][..., d] * mask).sum()
            (gx,) = torch.autograd.grad(s_d, [store["x"]])
        dense = float(((cc[a] - store["x"].detach()) * gx * mask[..., None]).sum() / data.n)
        total = float(got["all_sources"][k] + got["error"][k])
        assert total == pytest.approx(dense, rel=1e-4, abs=1e-6)
    assert float(got["all_sources"].abs().sum() + got["error"].abs().sum()) > 1e-3  # not 0 = 0
