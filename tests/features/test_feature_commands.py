"""The feature commands end to end on a tiny Llama: features -> explain (with cards) -> steer, probe."""

from __future__ import annotations

import json

import pytest
import torch

from mechscope.cli import main
from mechscope.dictionary import DictionaryConfig, save_dictionary
from mechscope.dictionary.registry import make_dictionary

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def setup(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("feature-cli")
    corpus = root / "corpus.txt"
    corpus.write_text(
        "\n\n".join(f"Document {i}: the quick brown fox jumps over {i} lazy dogs." for i in range(300))
    )
    torch.manual_seed(0)
    dic = make_dictionary(DictionaryConfig("topk", d_in=64, d_sae=48, k=6, hook_name=HOOK))
    sae = save_dictionary(dic, root / "sae")
    return tiny_dirs["llama-gqa"], corpus, sae, root


def test_features_then_explain_with_cards(setup, capsys):
    model, corpus, sae, root = setup
    argv = ["features", "--model", str(model), "--sae", str(sae), "--corpus", str(corpus), "--n-contexts", "12",
            "--ctx-len", "24", "--batch", "4", "--out", str(root / "runs"), "--dashboards", "10"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "288 tokens," in out  # 12 contexts x 24
    art = next((root / "runs").glob("features-*"))
    assert (art / "meta.json").is_file() and (art / "dashboards" / "index.html").is_file()
    assert len(list((art / "dashboards" / "feature").glob("*.html"))) == 10
    argv = ["explain", "--artifact", str(art), "--n", "3", "--validate", "--sae", str(sae), "--model", str(model),
            "--held-out", "8", "--held-out-len", "12", "--steer-prompts", "the quick"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    explanations = json.loads((art / "explanations.json").read_text())
    cards = json.loads((art / "cards.json").read_text())
    scores = json.loads((art / "scores.json").read_text())
    feats = [e["feature"] for e in explanations["items"]]
    assert len(feats) == 3 and sorted(cards) == sorted(str(f) for f in feats)
    assert {s["scorer"] for s in scores["items"]} <= {"detection", "fuzzing", "simulation"}
    for f in feats:
        assert f"{f:>8}" in out
        page = (art / "dashboards" / "feature" / f"{f}.html").read_text()
        assert cards[str(f)]["verdict"] in page


def test_explain_errors_leave_the_artifact_alone(setup, capsys, monkeypatch):
    model, corpus, sae, root = setup
    art = root / "err"
    argv = ["features", "--model", str(model), "--sae", str(sae), "--corpus", str(corpus), "--n-contexts", "4",
            "--ctx-len", "24", "--out", str(art), "--dashboards", "0"]  # fmt: skip
    assert main(argv) == 0
    art = next(art.glob("features-*"))
    before = sorted(p.name for p in art.iterdir())
    assert main(["explain", "--artifact", str(art), "--scorers", "intruder"]) == 2
    assert "unknown scorer 'intruder'" in capsys.readouterr().err
    assert main(["explain", "--artifact", str(art), "--features", "999"]) == 2
    assert "feature 999 is not in" in capsys.readouterr().err
    monkeypatch.setenv("MECHSCOPE_LLM_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("MECHSCOPE_LLM_MODEL", "stub")
    assert (
        main(["explain", "--artifact", str(art), "--n", "1", "--explainer", "llm", "--llm-retries", "0"]) == 2
    )
    assert "127.0.0.1:9" in capsys.readouterr().err
    assert sorted(p.name for p in art.iterdir()) == before  # nothing half-written
    assert main(["explain", "--artifact", str(root / "nope")]) == 2
    assert "no meta.json" in capsys.readouterr().err


def test_steer_features_and_vectors(setup, capsys):
    model, _, sae, root = setup
    argv = ["steer", "--model", str(model), "--sae", str(sae), "--feature", "3", "5", "--mode", "add",
            "--alphas", "0", "6", "--prompts", "the quick brown", "--max-new-tokens", "4", "--out", str(root)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "strength +0: metric shift +0.000" in out
    rows = json.loads(next(root.glob("steer-*/steer.json")).read_text())["rows"]
    assert (
        rows[0]["shift"] == 0.0 and rows[1]["shift"] > 0
    )  # adding the features raises the tokens they promote
    pos, neg = root / "pos.txt", root / "neg.txt"
    pos.write_text("the quick brown fox\nthe quick dog\n")
    neg.write_text("lazy dogs sleep\nlazy cats nap\n")
    argv = ["steer", "--model", str(model), "--positive", str(pos), "--negative", str(neg), "--hook",
            "blocks.1.hook_resid_pre", "--alphas", "0", "4", "--prompts", "Document", "--max-new-tokens", "3",
            "--out", str(root / "caa")]  # fmt: skip
    assert main(argv) == 0
    assert "caa vector" in capsys.readouterr().err
    argv = ["steer", "--model", str(model), "--positive", str(pos), "--negative", str(neg), "--hook",
            "blocks.1.hook_resid_pro", "--out", str(root / "caa")]  # fmt: skip
    assert main(argv) == 2
    assert "hook_resid_pre" in capsys.readouterr().err  # the closest hook name is suggested


def test_probe(setup, capsys):
    model, _, sae, root = setup
    pos, neg = root / "p.txt", root / "n.txt"
    pos.write_text("\n".join(f"the quick brown fox {i}" for i in range(12)))
    neg.write_text("\n".join(f"{i} lazy dogs" for i in range(12)))
    argv = ["probe", "--model", str(model), "--positive", str(pos), "--negative", str(neg), "--hook", HOOK,
            "--sae", str(sae), "--out", str(root / "probe")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    summary = json.loads(next((root / "probe").glob("probe-*/summary.json")).read_text())
    assert summary["val_auroc"] >= 0.95  # the two sets differ in their last tokens
    assert f"best single feature: {summary['best_feature']}" in out
    assert (
        main(
            ["probe", "--model", str(model), "--positive", str(root / "missing.txt"), "--negative", str(neg)]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
