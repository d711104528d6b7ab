"""`mechscope toy list | train | analyze`: each action works on real toys and fails clearly."""

from __future__ import annotations

import json
from dataclasses import replace

from mechscope.cli import main


def test_list_shows_every_toy_and_its_source(capsys):
    assert main(["toy", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("tms", "induction", "modular_addition", "compiled_induction", "compiled_histogram"):
        assert name in out
    assert "committed checkpoint" in out and "compiled" in out


def test_usage_and_unknown_names(capsys):
    assert main(["toy"]) == 2
    assert main(["toy", "train", "inductoin"]) == 2
    assert "did you mean 'induction'" in capsys.readouterr().err
    assert main(["toy", "train", "compiled_features"]) == 2
    assert "not trained" in capsys.readouterr().err


def test_analyze_compiled_and_induction(tmp_path, capsys):
    assert main(["toy", "analyze", "compiled_histogram", "--out", str(tmp_path / "h")]) == 0
    assert json.loads((tmp_path / "h" / "checks.json").read_text())["circuit_accuracy"] == 1.0
    assert main(["toy", "analyze", "induction", "--out", str(tmp_path / "i")]) == 0
    html = (tmp_path / "i" / "index.html").read_text()
    assert "scores.png" in html and "loss.png" in html
    assert str(tmp_path / "i" / "index.html") in capsys.readouterr().out


def test_analyze_modular_addition(tmp_path):
    assert main(["toy", "analyze", "modular_addition", "--out", str(tmp_path)]) == 0
    for name in ("training.png", "spectrum.png", "embedding.png", "neurons.png", "ablation.png"):
        assert (tmp_path / name).stat().st_size > 5_000, name
        assert name in (tmp_path / "index.html").read_text()
    report = json.loads((tmp_path / "metrics.json").read_text())["report"]
    assert report["test_acc"] >= 0.999


def test_train_tms_and_analyze_uses_the_saved_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    from mechscope.toys.registry import TOYS

    monkeypatch.setitem(TOYS, "tms", replace(TOYS["tms"], train=_tiny_tms))
    assert main(["toy", "train", "tms"]) == 0
    assert (tmp_path / "cache" / "toys" / "tms" / "cfg.json").is_file()
    assert main(["toy", "analyze", "tms", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "index.html").is_file()


def _tiny_tms(base=None):
    """The real TMS trainer with few steps (the default recipe takes about 15 s)."""
    from mechscope.toys import TMSConfig, save_tms, train_superposition
    from mechscope.toys.catalog import _tms_dir

    return save_tms(
        train_superposition(TMSConfig(steps=200, feature_probability=(1.0, 0.1)), progress=False),
        _tms_dir(base),
    )
