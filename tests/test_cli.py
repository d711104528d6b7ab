"""The ``mechscope`` command line: each subcommand's output and the error convention."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import mechscope
from mechscope.cli import main


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """A random 2-layer Llama (no tokenizer) saved with ``save_pretrained``."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    out = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    return out


def test_models_lists_every_builtin(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, spec in mechscope.BUILTIN.items():
        assert name in out and spec.license in out
    assert f"{mechscope.DEFAULT_MODEL} (default)" in out


def test_hooks_prints_every_hook_with_its_shape(tiny_llama, capsys):
    assert main(["hooks", str(tiny_llama)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if not line.startswith("#")]
    model = mechscope.load_model(tiny_llama, device="cpu")
    assert [r.split()[0] for r in rows] == model.hook_names
    table = {r.split()[0]: r for r in rows}
    assert "[batch pos d_model=32]" in table["blocks.1.hook_resid_post"]
    assert "[batch pos kv_head=2 d_head=8]" in table["blocks.0.attn.hook_k"]
    assert "[batch pos d_mlp=64]" in table["blocks.0.mlp.hook_post"]
    assert table["blocks.0.attn.hook_pattern"].endswith("(on demand)")
    assert not table["blocks.0.hook_resid_pre"].endswith("(on demand)")


def test_unknown_model_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    assert main(["hooks", str(missing)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(missing) in err[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_version_and_usage(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mechscope {mechscope.__version__}"
    assert main([]) == 2
    assert "demo" in capsys.readouterr().err
    assert main(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_demo_help_comes_from_the_config_docstrings(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # no line wrapping inside the help text
    assert main(["demo", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "run directory demo-<YYYYmmdd-HHMMSS> is created" in out
    assert f"(default: {mechscope.DEFAULT_MODEL})" in out


@pytest.mark.real
def test_demo_prints_the_run_path(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--quick"]) == 0
    captured = capsys.readouterr()
    m = re.fullmatch(r"Wrote (\S+) \(open (\S+)\)", captured.out.strip())
    assert m, captured.out
    run_dir = Path(m.group(1))
    assert run_dir.parent == tmp_path and Path(m.group(2)) == run_dir / "index.html"
    assert (run_dir / "index.html").is_file()
    assert "mechscope: loading" in captured.err  # progress goes to stderr


@pytest.mark.real
def test_patch_writes_a_result_and_prints_the_top_sites(tmp_path, capsys):
    from mechscope.interventions import PatchResult

    args = [
        "patch",
        "--task",
        "ioi",
        "--sweep",
        "heads",
        "--n",
        "2",
        "--layers",
        "22",
        "23",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "top 10 sites" in out and "layer 23, head" in out
    m = re.search(r"Wrote (\S+) \(open", out)
    assert m
    result = PatchResult.load(m.group(1))
    assert result.shape == (2, 9) and result.sweep == "heads"
    for name in ("heatmap.png", "heatmap.html", "eval.json"):
        assert (Path(m.group(1)) / name).is_file()
    assert main(["patch", "--task", "no-such-task", "--out", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_harvest_train_eval_chain(tiny_dirs, tmp_path, capsys):
    """The three dictionary commands, chained on a tiny model: store -> dictionary -> metrics."""
    import json

    tiny_llama = tiny_dirs["llama-gqa"]  # saved with a tokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n\n".join(f"Document {i}: the quick brown fox jumps over {i} lazy dogs." for i in range(60))
    )
    store = tmp_path / "store"
    hook = "blocks.1.hook_resid_post"
    argv = ["harvest", "--model", str(tiny_llama), "--hooks", hook, "--source", str(corpus), "--ctx-len", "16",
            "--n-tokens", "600", "--batch-size", "8", "--out", str(store), "--shard-tokens", "256",
            "--no-progress-bar"]  # fmt: skip
    assert main(argv) == 0
    assert f"Wrote {store}" in capsys.readouterr().out
    assert json.loads((store / "manifest.json").read_text())["n_tokens"] >= 512

    runs = tmp_path / "sae"
    argv = ["train-sae", "--store", str(store), "--hook", hook, "--architecture", "topk", "--d-sae", "128",
            "--k", "8", "--batch-size", "64", "--total-tokens", "512", "--output-dir", str(runs),
            "--no-progress", "--name", "tiny-topk"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Wrote" in out and "8 steps" in out
    saved = runs / "dictionaries" / "tiny-topk"
    assert (saved / "config.json").is_file()

    argv = ["eval-sae", "--dictionary", str(saved), "--model", str(tiny_llama), "--source", str(corpus),
            "--ctx-len", "16", "--n-ctx", "8", "--out", str(tmp_path / "eval"), "--no-progress-bar"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert 0.0 <= metrics["fvu"] < 1.5 and metrics["l0"] <= 8.0 + 1e-6
    assert (tmp_path / "eval" / "density.png").stat().st_size > 0


def test_train_sae_help_documents_every_option(capsys):
    import dataclasses

    from mechscope.dictionary.train import TrainConfig
    from mechscope.pipeline.train_sae import TrainSAEConfig

    assert main(["train-sae", "--help"]) == 0
    text = capsys.readouterr().out
    for cls in (TrainSAEConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            if f.name != "train":
                assert "--" + f.name.replace("_", "-") in text, f.name


def test_serve_refuses_what_it_cannot_serve(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--sae", str(tmp_path)]) == 2
    assert "--sae needs --model" in capsys.readouterr().err
