"""The demo run directory: complete, correct, and re-renderable from its files alone.

The ``real`` tests run the demo on SmolLM2-135M once per module. The others build a run
directory by hand (no model), so they also run under ``-m "not real"``.
"""

from __future__ import annotations

import ast
import html
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import mechscope
from mechscope.errors import ArtifactError
from mechscope.pipeline.demo import DemoConfig, FactualPrompt, _new_run_dir, run_demo
from mechscope.pipeline.features_stage import FeaturesStageConfig
from mechscope.pipeline.sae_stage import SAEStageConfig
from mechscope.report.demo_page import PNG_MAGIC, SCHEMA_VERSION, draw_lens_png, load_demo, render_demo

EIFFEL = "The Eiffel Tower is located in the city of"
RUN_FILES = ("meta.json", "lens.safetensors", "results.json", "lens.png", "index.html")
META_KEYS = ("kind", "schema_version", "mechscope_version", "created", "config", "model", "seed")


# ---------------------------------------------------------------- the real demo


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    lines: list[str] = []
    small_sae = SAEStageConfig(train_tokens=4096, batch_size=1024, eval_contexts=2)
    small_features = FeaturesStageConfig(
        n_contexts=8, n_features=3, held_out=16, max_new_tokens=4, dashboards=5
    )
    config = DemoConfig(out=out, localise_n=4, sae_config=small_sae, features_config=small_features)
    run_dir = run_demo(config, progress=lines.append)
    assert run_dir.parent == out and run_dir.name.startswith("demo-")
    assert lines, "run_demo reported no progress"
    return run_dir


@pytest.fixture(scope="module")
def smollm():
    return mechscope.load_model(mechscope.DEFAULT_MODEL, device="cpu")


@pytest.mark.real
def test_run_dir_is_complete(demo_run):
    for name in RUN_FILES:
        assert (demo_run / name).is_file(), name
    assert not [p.name for p in demo_run.iterdir() if p.name.startswith(".")], "temporary files left behind"
    meta = json.loads((demo_run / "meta.json").read_text())
    assert all(k in meta for k in META_KEYS), sorted(meta)
    assert meta["kind"] == "demo" and meta["schema_version"] == SCHEMA_VERSION
    assert meta["mechscope_version"] == mechscope.__version__
    assert meta["model"]["id"] == mechscope.DEFAULT_MODEL and meta["model"]["n_layers"] == 30
    assert meta["config"]["lens_prompt"] == EIFFEL


@pytest.mark.real
def test_factual_table_says_paris(demo_run):
    results = json.loads((demo_run / "results.json").read_text())
    rows = {r["prompt"]: r for r in results["factual"]}
    eiffel = rows[EIFFEL]
    assert eiffel["top"][0]["token"] == " Paris"
    assert eiffel["correct"] is True and eiffel["answer_rank"] == 0
    probs = [t["prob"] for t in eiffel["top"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    for r in results["factual"]:  # "correct" must agree with the recorded top-1
        assert r["correct"] == (r["top"][0]["token"] == r["answer"])


@pytest.mark.real
def test_lens_ends_at_the_model_prediction(demo_run, smollm):
    run = load_demo(demo_run)
    paris = smollm.to_single_token(" Paris")
    with torch.no_grad():
        logits = smollm(EIFFEL)  # [1 pos d_vocab]
    last = logits[0, -1]
    assert int(last.argmax()) == paris
    assert int(run.answer_rank[-1]) == 0 and int(run.top_ids[-1, 0]) == paris
    assert run.answer_prob[-1] == pytest.approx(float(last.softmax(-1)[paris]), abs=1e-5)
    labels = run.results["lens"]["labels"]
    assert len(labels) == 31 == run.answer_rank.shape[0]
    assert labels[0] == "resid_pre 0" and labels[-1] == "resid_post 29"
    assert int(run.answer_rank[0]) > 0, "the embedding alone should not already predict ' Paris'"


@pytest.mark.real
def test_png_and_page(demo_run):
    png = (demo_run / "lens.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 20_000
    page = (demo_run / "index.html").read_text()
    assert html.escape(EIFFEL) in page and '<img src="lens.png"' in page
    assert "smollm2-135m" in page and "Factual recall" in page and "resid_post 29" in page


@pytest.mark.real
def test_sae_stage_trains_saves_and_reports(demo_run, smollm):
    from mechscope.dictionary.io import load_dictionary

    sae = json.loads((demo_run / "sae.json").read_text())
    assert sae["hook"] == "blocks.15.hook_resid_pre" and sae["d_sae"] == 8 * 576 and sae["k"] == 32
    assert sae["train_tokens"] == 4096 and sae["steps"] == 4
    assert not (demo_run / "sae" / "checkpoints").exists(), "the demo keeps no training checkpoints"
    m = sae["metrics"]
    # TopK gives exactly k active latents per counted token; four steps already explain variance
    assert m["l0"] == pytest.approx(32.0)
    assert 0.0 < m["fvu"] < 0.95 and m["cosine_similarity"] > 0.3
    assert m["ce_clean"] < m["ce_sae"] < m["ce_zero"], "splicing the SAE should cost less than zero ablation"
    assert m["ce_recovered_zero"] == pytest.approx(
        (m["ce_zero"] - m["ce_sae"]) / (m["ce_zero"] - m["ce_clean"]), rel=1e-6
    )
    d = load_dictionary(demo_run / sae["dictionary"])
    assert d.config.hook_name == sae["hook"] and d.config.norm_scale == 1.0  # normalisation folded in
    _, cache = smollm.run_with_cache("def f(x):\n    return x + 1\n", names=[sae["hook"]], stop_at_layer=15)
    x = cache[sae["hook"]][0, 1:]  # [pos d_model], BOS left out as in training
    with torch.no_grad():
        fvu = ((x - d(x)) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert float(fvu) < 1.0, "the saved dictionary should reconstruct raw activations"
    png = (demo_run / sae["density_png"]).read_bytes()
    assert png.startswith(PNG_MAGIC)
    page = (demo_run / "index.html").read_text()
    assert "<h2>Dictionary</h2>" in page and f'<img src="{sae["density_png"]}"' in page
    assert f"{m['fvu']:.4f}" in page


@pytest.mark.real
def test_features_stage_finds_explains_and_steers(demo_run, smollm):
    from mechscope.dictionary.io import load_dictionary
    from mechscope.features import FeatureArtifact
    from mechscope.steering import steer_features

    sae = json.loads((demo_run / "sae.json").read_text())
    data = json.loads((demo_run / "features.json").read_text())
    d = load_dictionary(demo_run / sae["dictionary"])
    art = FeatureArtifact(demo_run / "features")
    assert art.meta["n_tokens"] == 8 * 128 and data["d_sae"] == d.config.d_sae
    chosen = [f["feature"] for f in data["features"]]
    assert 1 <= len(chosen) <= 3
    # the chosen features are the ones most active at the prompts' last token (recomputed here)
    total = torch.zeros(d.config.d_sae)
    for prompt in data["prompts"]:
        _, cache = smollm.run_with_cache(prompt, names=[d.config.hook_name], stop_at_layer=15)
        with torch.no_grad():
            total += d.encode(cache[d.config.hook_name][0, -1:])[0]
    fired = torch.tensor(art.column("n_active")) > 0
    expected = torch.where(fired, total, -1.0).topk(len(chosen)).indices.tolist()
    assert chosen == expected
    for f in data["features"]:
        assert f["explanation"] and set(f["scores"]) <= {"detection", "fuzzing", "simulation"}
        assert f["verdict"] in ("pass", "partial", "fail") and (demo_run / f["page"]).is_file()
        assert f["card"]["promoted"] == (d.W_dec[f["feature"]] @ smollm.W_U).topk(10).indices.tolist()
    # the steering example is what clamping gives
    ex = data["steering"]
    hook = steer_features(d, {ex["feature"]: ex["value"]}, "clamp")
    again = smollm.generate(ex["prompts"], max_new_tokens=4, fwd_hooks=[hook])
    assert again == ex["after"] and ex["before"] == smollm.generate(ex["prompts"], max_new_tokens=4)
    page = (demo_run / "index.html").read_text()
    assert "<h2>Features</h2>" in page and f'href="{data["dashboards"]}"' in page
    assert (demo_run / data["dashboards"]).is_file()


@pytest.mark.real
def test_page_rerenders_from_the_files_alone(demo_run, tmp_path):
    copy = shutil.copytree(demo_run, tmp_path / "moved")
    before = (copy / "index.html").read_text()
    (copy / "index.html").unlink()
    assert render_demo(copy) == copy / "index.html"
    assert (copy / "index.html").read_text() == before


@pytest.mark.real
def test_missing_results_is_named(demo_run, tmp_path):
    copy = shutil.copytree(demo_run, tmp_path / "partial")
    (copy / "results.json").unlink()
    with pytest.raises(ArtifactError, match=r"results\.json"):
        render_demo(copy)


# ---------------------------------------------------------------- hand-built runs (no model)

N_POINTS, K = 5, 3
NASTY = 'He said "<b>hi</b>" & <script>alert(1)</script>'


def _fake_run(root: Path) -> Path:
    run = root / "demo-fake"
    run.mkdir()
    meta = {
        "kind": "demo",
        "schema_version": SCHEMA_VERSION,
        "mechscope_version": mechscope.__version__,
        "created": "2026-01-01T00:00:00+0000",
        "config": {"lens_prompt": NASTY},
        "seed": 0,
        "model": {
            "id": "<tiny>",
            "revision": None,
            "family": "llama",
            "n_layers": N_POINTS - 1,
            "d_model": 8,
        },
    }
    top = [
        {"token": t, "id": i, "prob": p} for i, (t, p) in enumerate([(" <x>", 0.5), (" y", 0.2), ("\n", 0.1)])
    ]
    results = {
        "factual": [
            {
                "prompt": NASTY,
                "answer": " <x>",
                "answer_id": 0,
                "answer_rank": 0,
                "answer_prob": 0.5,
                "correct": True,
                "top": top,
            },
            {
                "prompt": "plain",
                "answer": " y",
                "answer_id": 1,
                "answer_rank": 1,
                "answer_prob": 0.2,
                "correct": False,
                "top": top,
            },
        ],
        "lens": {
            "prompt": NASTY,
            "answer": " <x>",
            "answer_id": 0,
            "position": 3,
            "str_tokens": ["He", " said", " <"],
            "labels": [f"resid_pre {i}" for i in range(N_POINTS - 1)] + [f"resid_post {N_POINTS - 2}"],
            "top_tokens": [[" <x>", " y", "\n"]] * N_POINTS,
        },
    }
    (run / "meta.json").write_text(json.dumps(meta))
    (run / "results.json").write_text(json.dumps(results))
    save_file(
        {
            "answer_rank": np.array([900, 40, 3, 1, 0], dtype=np.int64),
            "answer_prob": np.array([1e-6, 1e-4, 0.05, 0.3, 0.5], dtype=np.float32),
            "top_ids": np.tile(np.arange(K, dtype=np.int64), (N_POINTS, 1)),
            "top_probs": np.tile(np.array([0.5, 0.2, 0.1], dtype=np.float32), (N_POINTS, 1)),
        },
        str(run / "lens.safetensors"),
    )
    return run


def test_render_escapes_every_text(tmp_path):
    run = _fake_run(tmp_path)
    draw_lens_png(run)
    page = render_demo(run).read_text()
    assert "<script>" not in page and "<b>" not in page and "<tiny>" not in page
    assert html.escape(NASTY) in page
    assert html.escape('" <x>"') in page  # tokens shown quoted, leading space kept
    assert '<img src="lens.png"' in page
    assert "1.0e-04" in page  # small probabilities are not rounded to 0.000
    assert (run / "lens.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("meta.json", r"meta\.json is missing"),
        ("results.json", r"results\.json is missing"),
        ("lens.safetensors", r"lens\.safetensors is missing"),
        ("lens.png", r"lens\.png is missing"),
        ("corrupt:results.json", r"results\.json is corrupt"),
        ("corrupt:lens.safetensors", r"lens\.safetensors is corrupt"),
        ("corrupt:lens.png", r"lens\.png is corrupt"),
        ("kind", r"kind 'sae', not 'demo'"),
        ("shape", r"lens\.safetensors does not match results\.json"),
    ],
)
def test_incomplete_or_corrupt_runs_are_named(tmp_path, broken, message):
    run = _fake_run(tmp_path)
    draw_lens_png(run)
    if broken.startswith("corrupt:"):
        (run / broken.split(":")[1]).write_bytes(b"\x00garbage{")
    elif broken == "kind":
        meta = json.loads((run / "meta.json").read_text())
        (run / "meta.json").write_text(json.dumps({**meta, "kind": "sae"}))
    elif broken == "shape":
        results = json.loads((run / "results.json").read_text())
        results["lens"]["labels"] = results["lens"]["labels"][:-1]
        (run / "results.json").write_text(json.dumps(results))
    else:
        (run / broken).unlink()
    with pytest.raises(ArtifactError, match=message):
        render_demo(run)
    assert not (run / "index.html").exists()


def test_run_dirs_are_never_reused(tmp_path):
    a, b = _new_run_dir(tmp_path), _new_run_dir(tmp_path)
    assert a != b and a.is_dir() and b.is_dir()
    assert a.name.startswith("demo-") and b.name.startswith(a.name)


def test_demo_config_rejects_nothing_to_do(tmp_path):
    with pytest.raises(mechscope.MechscopeError, match="prompts is empty"):
        run_demo(DemoConfig(out=tmp_path, prompts=()))
    assert not list(tmp_path.iterdir())
    with pytest.raises(mechscope.MechscopeError, match="top_k"):
        run_demo(DemoConfig(out=tmp_path, prompts=(FactualPrompt("a", " b"),), top_k=0))


def test_report_imports_no_model_code():
    """The report package reads artifacts only: no torch, transformers or model packages."""
    banned = ("torch", "transformers", "mechscope.models", "mechscope.interventions", "mechscope.pipeline")
    report = Path(mechscope.__file__).parent / "report"
    for path in report.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = {0: "", 1: "mechscope.report.", 2: "mechscope."}[node.level]
                mods = [base + (node.module or "")]
            else:
                continue
            for m in mods:
                assert not m.startswith(banned), f"{path.name} imports {m}"


@pytest.mark.real
def test_localisation_stage(demo_run):
    from mechscope.interventions import PatchResult

    loc = json.loads((demo_run / "localisation.json").read_text())
    tasks = {t["task"]: t for t in loc["tasks"]}
    assert tasks["ioi"]["clean_top1"] >= 0.75 and tasks["ioi"]["corrupted_top1"] <= 0.25
    assert tasks["factual"]["clean_metric"] > tasks["factual"]["corrupted_metric"]
    for r in loc["results"]:
        result = PatchResult.load(demo_run / "results" / r["name"])
        assert (demo_run / r["png"]).read_bytes().startswith(PNG_MAGIC)
        assert (demo_run / r["html"]).is_file()
        assert result.top(1)[0][1] == pytest.approx(r["top"][0]["value"])
    assert loc["top_heads"] and loc["top_heads"][0]["site"].startswith("layer ")
    assert loc["atp_vs_exact"]["correlation"] > 0.8
    page = (demo_run / "index.html").read_text()
    assert "<h2>Localisation</h2>" in page and 'src="results/ioi-heads/heatmap.png"' in page


@pytest.mark.real
def test_circuit_stage(demo_run):
    from mechscope.circuits.circuit import Circuit

    c = json.loads((demo_run / "circuit.json").read_text())
    faith = c["curve"]["faithfulness"]
    assert c["curve"]["fractions"][0] == 0.0 and faith[0] == pytest.approx(0.0, abs=1e-4)
    assert max(faith) > 0.2  # a few percent of the edges already recover part of the logit difference
    check = c["top_check"]
    assert len(check["edges"]) == 20 and check["pearson"] > 0.5 and check["sign_agreement"] >= 0.7
    circuit = Circuit.load(demo_run / c["dir"])
    assert circuit.method == "eap-ig" and 0 < c["circuit_edges"] <= 150
    for key in ("graph_png", "curve_png"):
        assert (demo_run / c[key]).read_bytes().startswith(PNG_MAGIC)
    assert (demo_run / c["graph_html"]).is_file()
    page = (demo_run / "index.html").read_text()
    assert "<h2>Circuit</h2>" in page and c["graph_html"] in page


@pytest.mark.real
def test_page_draws_the_results_with_the_component_bundle(demo_run):
    """The report is a host of the same components as the server and notebooks, data inlined."""
    from safetensors.numpy import load_file

    from browser import page, serve

    loc = json.loads((demo_run / "localisation.json").read_text())
    want = []
    for r in loc["results"]:
        d = (demo_run / r["png"]).parent
        values = load_file(str(d / "values.safetensors"))["values"]
        meta = json.loads((d / "meta.json").read_text())
        normalised = (values - meta["corrupted"]) / (
            meta["clean"] - meta["corrupted"]
        )  # as the PNG beside it
        want.append(float(abs(normalised).max()))
    with serve(demo_run) as url, page() as pg:
        pg.goto(f"{url}/index.html")
        pg.wait_for_function(f"document.querySelectorAll('[data-component=heatmap]').length == {len(want)}")
        vmax = pg.eval_on_selector_all("[data-component=heatmap]", "els => els.map(e => +e.dataset.vmax)")
        assert vmax == pytest.approx(want, rel=1e-5)
        assert not pg.errors, pg.errors
        assert all(u.startswith(url) or u.startswith(("data:", "blob:")) for u in pg.requests), pg.requests
