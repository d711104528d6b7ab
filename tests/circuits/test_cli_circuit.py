"""`mechscope circuit` on the real SmolLM2 IOI task: scores, exact checks, the curve, every file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mechscope.circuits.circuit import Circuit
from mechscope.cli import main


def test_circuit_command_writes_everything(tmp_path, capsys):
    args = ["circuit", "--method", "eap", "--n", "2", "--check-top", "3", "--circuit-edges", "40"]
    args += ["--fractions", "0", "0.01", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "top 10 edges (eap, corrupted ablation, metric logit_diff)" in out and "CPR" in out
    run = Path(re.search(r"Wrote (\S+) \(open", out).group(1))
    for name in (
        "circuit.json",
        "scores.safetensors",
        "graph.svg",
        "graph.png",
        "graph.html",
        "faithfulness.png",
    ):
        assert (run / name).stat().st_size > 500, name
    summary = json.loads((run / "summary.json").read_text())
    faith = summary["curve"]["faithfulness"]
    assert faith[0] == pytest.approx(0.0, abs=1e-5) and faith[-1] == pytest.approx(1.0, abs=1e-4)
    check = summary["top_check"]
    assert len(check["exact"]) == 3 and check["sign_agreement"] >= 2 / 3
    circuit = Circuit.load(run)
    assert circuit.method == "eap" and 0 < int(circuit.in_circuit.sum()) <= 40
    assert circuit.info["task"] == "ioi"


def test_bad_method_is_a_clean_error(tmp_path, capsys):
    assert main(["circuit", "--method", "magic", "--out", str(tmp_path)]) == 2
    assert "method must be one of" in capsys.readouterr().err
