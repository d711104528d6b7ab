"""A small investigation of SmolLM2-135M on IOI, every stage on (the demo's path at test size)."""

from __future__ import annotations

import json

import pytest

from mechscope.investigate.run import investigate, read_config

CONFIG = """
[model]
name = "smollm2-135m"
device = "cpu"
[behaviour]
task = "ioi"
n = 8
[corpus]
ctx_len = 64
n_tokens = 4096
[stages.localise.settings]
n = 4
sweeps = ["heads"]
[stages.circuit.settings]
n = 4
steps = 3
check_top = 10
fractions = [0.0, 0.01, 0.05]
[stages.dictionaries.settings]
expansion = 2
k = 16
batch_size = 512
eval_contexts = 2
[stages.features.settings]
n_contexts = 8
n_features = 3
check_top = 3
dashboards = 2
[stages.explain.settings]
held_out = 8
held_out_len = 16
[stages.checks.settings]
max_new_tokens = 4
"""


@pytest.mark.real
def test_smollm2_ioi_investigation(tmp_path):
    (tmp_path / "ioi.toml").write_text(CONFIG)
    result = investigate(read_config(tmp_path / "ioi.toml"), tmp_path / "run", progress=lambda *a: None)
    s = result.summary
    assert result.report.ran == ["evaluate", "localise", "circuit", "dictionaries", "features", "explain",
                                 "checks", "report"]  # fmt: skip
    assert s["behaviour"]["clean_accuracy"]["value"] >= 0.75
    assert s["behaviour"]["clean_metric"]["value"] > s["behaviour"]["corrupted_metric"]["value"] + 1.0
    top = s["components"][0]
    assert top["component"].startswith("a") and abs(top["normalised_effect"]["value"]) > 0.2
    assert s["attribution_vs_exact"]["value"] > 0.8  # attribution patching tracks exact patching of the heads
    assert s["circuit"]["exact_check"]["sign_agreement"]["value"] >= 0.8
    layer = int(top["component"][1:].split(".")[0])
    scores = json.loads((tmp_path / "run" / "localise" / "localise.json").read_text())["layer_scores"]
    chosen = s["dictionaries"][0]["hook"]
    best = max(scores, key=lambda k: scores[k])
    assert chosen == f"blocks.{best}.hook_resid_pre" and scores[best] >= scores[str(layer)]
    assert len(s["features"]) == 3 and all(f["explanation"] for f in s["features"])
    assert s["check_counts"]["passed"] >= 1
    assert result.report_path.is_file() and len(s["headline"]) <= 10
