"""The serve API against artifacts written by the real writers, checked against DuckDB, pyarrow and
safetensors queries made here (not through the server's code)."""

from __future__ import annotations

import base64
import importlib.util
import json
import math
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from starlette.testclient import TestClient

from browser import running
from mechscope._fs import atomic_write_json
from mechscope.server import app_for

ROOT = Path(__file__).resolve().parents[2]
BASE = "http://127.0.0.1:8765"


def load_bench():  # the synthetic-artifact writer lives with its benchmark
    spec = importlib.util.spec_from_file_location("bench_serve", ROOT / "bench" / "bench_serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def feature_artifact(out: Path) -> Path:
    """A feature-stats artifact of the compiled features model, with explanations, scores and cards."""
    from known import true_features
    from mechscope import load_model
    from mechscope.explain.base import Explanation, Score
    from mechscope.explain.files import save_explanations, save_scores
    from mechscope.features import StatsConfig, feature_stats

    model = load_model("toy/compiled_features", device="cpu")
    dic, _ = true_features(b_enc=-1e-4)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 32, (16, 8), generator=gen) for _ in range(6)]
    cfg = StatsConfig(
        top_k=5, window=2, n_quantiles=4, per_quantile=2, reservoir=40, cooccurrence_top=3, n_random=6
    )
    feature_stats(model, dic, iter(batches), cfg).save(out, model)
    texts = {0: "Fires on Legal words", 1: "the token 1 (100% sure)", 2: "legal_ish", 5: "numbers"}
    save_explanations(out / "explanations.json", [Explanation(f, t, "test") for f, t in texts.items()])
    scores = [Score(f, s, v, {}, 0, [], texts[f]) for f, s, v in
              [(0, "detection", 0.9), (1, "detection", 0.4), (2, "detection", 0.7), (5, "fuzzing", 0.2)]]  # fmt: skip
    save_scores(out / "scores.json", scores)
    atomic_write_json(out / "cards.json", {"0": {"feature": 0, "verdict": "validated"}})
    return out


def patch_artifact(out: Path) -> Path:
    from mechscope.interventions.results import Axis, PatchResult

    values = torch.arange(3 * 5, dtype=torch.float32).reshape(3, 5) / 7
    axes = (Axis("layer", tuple(f"L{i}" for i in range(3))), Axis("pos", tuple(f"p{i}" for i in range(5))))
    PatchResult(values, axes, "activation_patching", "resid_pre", "logit_diff", 1.0, 0.0, "denoise").save(out)
    return out


def circuit_artifact(out: Path) -> Path:
    from mechscope.circuits.circuit import Circuit
    from mechscope.circuits.graph import Graph

    graph = Graph(2, 2, 2)
    scores = torch.linspace(-1, 1, graph.n_edges) ** 3 + torch.arange(graph.n_edges) * 1e-4
    Circuit(graph, scores, "eap", "zero", "logit").top(6).save(out)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    feature_artifact(root / "demo-1" / "features")
    atomic_write_json(root / "demo-1" / "meta.json", {"kind": "demo", "schema_version": 1, "created": "2026-01-01",
                                                      "model": {"id": "toy/compiled_features"}})  # fmt: skip
    patch_artifact(root / "patching" / "resid")
    circuit_artifact(root / "circuit")
    load_bench().write_synthetic(root / "synthetic", n_features=300, n_examples=8, window=2, n_vocab=40)
    (root / "notes").mkdir()
    (root / "notes" / "meta.json").write_text('{"no": "kind"}')  # not an artifact
    return root


@pytest.fixture(scope="module")
def client(runs) -> TestClient:
    return TestClient(app_for([runs]), base_url=BASE)


def test_runs_lists_every_artifact(client, runs):
    body = client.get("/api/runs").json()
    by_id = {r["id"]: r for r in body["runs"]}
    assert set(by_id) == {"demo-1", "demo-1/features", "patching/resid", "circuit", "synthetic"}
    assert by_id["demo-1/features"]["kind"] == "feature-stats"
    assert by_id["demo-1/features"]["schema_version"] == 2
    assert by_id["demo-1/features"]["model"] == "toy/compiled_features"
    assert by_id["demo-1"]["model"] == "toy/compiled_features" and by_id["demo-1"]["created"] == "2026-01-01"
    assert by_id["patching/resid"]["kind"] == "patch_result" and by_id["circuit"]["kind"] == "circuit"
    assert Path(by_id["circuit"]["path"]) == (runs / "circuit").resolve()
    meta = client.get("/api/artifact/demo-1/features/meta").json()
    assert meta == json.loads((runs / "demo-1" / "features" / "meta.json").read_text())


def test_several_roots_prefix_ids_with_the_root_index(runs):
    c = TestClient(app_for([runs / "patching", runs / "circuit"]), base_url=BASE)
    ids = {r["id"] for r in c.get("/api/runs").json()["runs"]}
    assert ids == {"0/resid", "1"}
    assert c.get("/api/artifact/1/meta").json()["kind"] == "circuit"
    assert c.get("/api/artifact/2/meta").status_code == 404
    single = TestClient(app_for([runs / "circuit"]), base_url=BASE)
    assert [r["id"] for r in single.get("/api/runs").json()["runs"]] == ["~"]
    assert single.get("/api/artifact/~/meta").json()["kind"] == "circuit"
    assert single.get("/files/~/circuit.json").json()["kind"] == "circuit"
    r = single.get("/no/such/route")
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}


def _expected(runs: Path, where: str = "TRUE", order: str = "feature") -> list[int]:
    feats = runs / "demo-1" / "features" / "features.parquet"
    return [
        r[0]
        for r in duckdb.connect()
        .sql(f"SELECT feature FROM '{feats}' WHERE {where} ORDER BY {order}")
        .fetchall()
    ]


def test_index_pages_and_sorts_like_duckdb(client, runs):
    feats = pq.read_table(runs / "demo-1" / "features" / "features.parquet").to_pydict()
    body = client.get("/api/features/demo-1/features/index?limit=5").json()
    assert body["total"] == len(feats["feature"])
    assert [r["feature"] for r in body["rows"]] == feats["feature"][:5]
    for r in body["rows"]:
        assert r["density"] == pytest.approx(feats["density"][r["feature"]])
        assert r["n_active"] == feats["n_active"][r["feature"]]
    body = client.get("/api/features/demo-1/features/index?sort=density&desc=1&limit=7&offset=2").json()
    assert [r["feature"] for r in body["rows"]] == _expected(runs, order="density DESC, feature")[2:9]
    body = client.get("/api/features/demo-1/features/index?sort=max_activation&limit=500").json()
    assert [r["feature"] for r in body["rows"]] == _expected(runs, order="max_activation, feature")


def test_index_joins_explanations_and_scores(client):
    body = client.get("/api/features/demo-1/features/index?sort=detection&desc=1&limit=4").json()
    assert [(r["feature"], r["detection"]) for r in body["rows"]] == [(0, 0.9), (2, 0.7), (1, 0.4), (3, None)]
    assert body["rows"][0]["explanation"] == "Fires on Legal words"
    assert {c["key"] for c in body["columns"]} >= {
        "feature",
        "density",
        "explanation",
        "detection",
        "fuzzing",
    }
    body = client.get("/api/features/demo-1/features/index?sort=fuzzing&desc=1&limit=1").json()
    assert body["rows"][0]["feature"] == 5 and body["rows"][0]["fuzzing"] == pytest.approx(0.2)


def test_index_searches_explanations_case_insensitively(client):
    rows = client.get("/api/features/demo-1/features/index?q=LEGAL").json()["rows"]
    assert [r["feature"] for r in rows] == [0, 2]
    rows = client.get("/api/features/demo-1/features/index?q=100%25").json()["rows"]  # "%" is literal
    assert [r["feature"] for r in rows] == [1]
    rows = client.get("/api/features/demo-1/features/index?q=l_gal").json()["rows"]  # "_" is literal
    assert rows == []
    assert client.get("/api/features/demo-1/features/index?q=1%25s").json()["total"] == 0  # not "1...s"


def test_index_filters_by_id_and_top_token(client, runs):
    body = client.get("/api/features/demo-1/features/index?min_density=0.05&max_density=0.2&limit=500").json()
    assert [r["feature"] for r in body["rows"]] == _expected(runs, "density >= 0.05 AND density <= 0.2")
    assert 0 < body["total"] < 16
    ex = pq.read_table(runs / "demo-1" / "features" / "examples.parquet").to_pylist()
    token = ex[0]["tokens"][ex[0]["target"]]
    want = sorted({r["feature"] for r in ex if r["kind"] == "top" and r["tokens"][r["target"]] == token})
    body = client.get(f"/api/features/demo-1/features/index?token={token}&limit=500").json()
    assert [r["feature"] for r in body["rows"]] == want and body["total"] == len(want)
    assert client.get("/api/features/demo-1/features/index?token=nope").json()["total"] == 0


def test_token_filter_reads_only_top_examples(client, runs):
    path = runs / "synthetic" / "examples.parquet"
    query = f"SELECT DISTINCT feature FROM '{path}' WHERE tokens[target + 1] = ? {{}} ORDER BY feature"
    top = [f for (f,) in duckdb.connect().execute(query.format("AND kind = 'top'"), ["t7"]).fetchall()]
    every = [f for (f,) in duckdb.connect().execute(query.format(""), ["t7"]).fetchall()]
    assert top and top != every  # the check can tell them apart
    body = client.get("/api/features/synthetic/index?token=t7&limit=500").json()
    assert [r["feature"] for r in body["rows"]] == top
    body = client.get("/api/features/synthetic/index?token=t7&sort=density&desc=1&q=e&limit=3").json()
    want = (
        duckdb.connect()
        .execute(
            f"SELECT feature FROM '{runs / 'synthetic' / 'features.parquet'}' WHERE feature IN ({','.join(map(str, top))})"
            " ORDER BY density DESC, feature"
        )
        .fetchall()
    )
    explained = {
        i["feature"]: i["text"]
        for i in json.loads((runs / "synthetic" / "explanations.json").read_text())["items"]
    }
    assert [r["feature"] for r in body["rows"]] == [f for (f,) in want if "e" in explained[f].lower()][:3]


def test_index_rejects_bad_parameters(client):
    url = "/api/features/demo-1/features/index"
    for query in ("limit=501", "limit=0", "offset=-1", "sort=explanation", "sort=x;DROP", "min_density=abc",
                  "offset=1.5", "max_density=nan"):  # fmt: skip
        r = client.get(f"{url}?{query}")
        assert r.status_code == 400, query
        assert r.json()["error"]
    assert client.get("/api/features/circuit/index").status_code == 404  # not a feature artifact


def test_feature_page_matches_the_library_reader(client, runs):
    from mechscope.features import FeatureArtifact

    art = FeatureArtifact(runs / "demo-1" / "features")
    body = client.get("/api/features/demo-1/features/feature/0").json()
    summary = art.summary(0)
    for key in ("density", "n_active", "max_activation", "mean_activation"):
        assert body["summary"][key] == pytest.approx(summary[key]), key
    assert (body["summary"]["promoted"], body["summary"]["suppressed"]) == (
        summary["promoted"],
        summary["suppressed"],
    )
    assert body["histogram"]["bins"] == [list(b) for b in art.histogram(0)]
    assert body["histogram"]["quantile_edges"] == pytest.approx(summary["quantile_edges"])
    for kind in ("top", "quantile"):
        want = art.examples(0, kind)
        got = body["examples"][kind]
        assert [(e["tokens"], e["target"], e["rank"]) for e in got] == [
            (list(w.tokens), w.target, w.rank) for w in want
        ]
        assert [e["activations"] for e in got] == [pytest.approx(list(w.activations)) for w in want]
    assert [e["activations"] for e in body["examples"]["random"]] == [
        list(w.activations) for w in art.random(0)
    ]
    co = [(c["feature"], c["count"]) for c in body["cooccurring"]]
    assert co == list(zip(summary["cooccurring"], summary["cooccurring_counts"]))
    assert body["explanation"]["text"] == "Fires on Legal words"
    assert body["scores"] == [{"scorer": "detection", "value": 0.9, "details": {}, "seed": 0}]
    assert body["card"] == {"feature": 0, "verdict": "validated"}
    r = client.get("/api/features/demo-1/features/feature/16")
    assert r.status_code == 404 and "0..15" in r.json()["error"]
    assert client.get("/api/features/demo-1/features/feature/x").status_code == 404


def test_index_is_rebuilt_when_explanations_change(tmp_path):
    art = load_bench().write_synthetic(tmp_path / "a", n_features=20, n_examples=4, window=1, n_vocab=10)
    c = TestClient(app_for([tmp_path]), base_url=BASE)
    assert c.get("/api/features/a/index?q=zebra").json()["total"] == 0
    doc = json.loads((art / "explanations.json").read_text())
    doc["items"][3]["text"] = "a zebra feature"
    atomic_write_json(art / "explanations.json", doc)
    assert [r["feature"] for r in c.get("/api/features/a/index?q=zebra").json()["rows"]] == [3]


def _decode(body: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(body["data"]), dtype="<f4").reshape(body["shape"])


def test_tensor_slices_with_axis_labels(client, runs):
    path = runs / "patching" / "resid" / "values.safetensors"
    with safe_open(str(path), framework="numpy") as f:
        values = f.get_tensor("values")
    body = client.get("/api/tensor/patching/resid?file=values.safetensors&name=values&slice=0:2,1:5:2").json()
    assert body["dtype"] == "float32" and body["shape"] == [2, 2]
    np.testing.assert_array_equal(_decode(body), values[0:2, 1:5:2])
    assert body["axes"] == [
        {"name": "layer", "labels": ["L0", "L1"]},
        {"name": "pos", "labels": ["p1", "p3"]},
    ]
    body = client.get("/api/tensor/patching/resid?file=values.safetensors&slice=-1").json()  # the one tensor
    np.testing.assert_array_equal(_decode(body), values[-1])
    assert body["axes"] == [{"name": "pos", "labels": [f"p{i}" for i in range(5)]}]


def test_circuit_scores_are_labelled_by_edge(client, runs):
    doc = json.loads((runs / "circuit" / "circuit.json").read_text())
    body = client.get("/api/tensor/circuit?file=scores.safetensors&name=scores&slice=3:6").json()
    assert body["axes"][0]["labels"] == [e["name"] for e in doc["edges"][3:6]]
    assert _decode(body).tolist() == pytest.approx([e["score"] for e in doc["edges"][3:6]])


def test_tensor_limits_and_errors(tmp_path):
    art = tmp_path / "t"
    art.mkdir()
    (art / "meta.json").write_text('{"kind": "tensors", "schema_version": 1}')
    save_file(
        {"big": torch.zeros(2049, 2049), "half": torch.randn(3, 4).bfloat16()}, str(art / "x.safetensors")
    )
    (art / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    c = TestClient(app_for([tmp_path]), base_url=BASE)
    r = c.get("/api/tensor/t?file=x.safetensors&name=big")
    assert r.status_code == 413 and "4,198,401 values" in r.json()["error"]
    assert c.get("/api/tensor/t?file=x.safetensors&name=big&slice=0:8").json()["shape"] == [8, 2049]
    half = c.get("/api/tensor/t?file=x.safetensors&name=half").json()
    with safe_open(str(art / "x.safetensors"), framework="pt") as f:
        np.testing.assert_array_equal(_decode(half), f.get_tensor("half").float().numpy())
    assert half["source_dtype"] == "BF16"
    for query, status in (("file=x.safetensors&name=nope", 404), ("file=x.safetensors&name=big&slice=0:2,0:2,0", 400),
                          ("file=x.safetensors&name=big&slice=a:b", 400), ("file=x.safetensors&name=big&slice=::-1", 400),
                          ("file=x.safetensors&name=big&slice=5000", 400), ("file=meta.json", 400),
                          ("file=missing.safetensors", 404), ("file=bad.safetensors", 422)):  # fmt: skip
        r = c.get(f"/api/tensor/t?{query}")
        assert r.status_code == status, (query, r.text)
    assert "bad.safetensors" in c.get("/api/tensor/t?file=bad.safetensors").json()["error"]


def test_circuit_is_pruned_to_the_budget_with_labels(tmp_path):
    circuit_artifact(tmp_path / "c")
    c = TestClient(app_for([tmp_path]), base_url=BASE)
    doc = json.loads((tmp_path / "c" / "circuit.json").read_text())
    top = sorted(doc["edges"], key=lambda e: -abs(e["score"]))
    body = c.get("/api/circuit/c?max_edges=5").json()
    assert [e["name"] for e in body["edges"]] == [e["name"] for e in top[:5]]
    assert {n["id"] for n in body["nodes"]} == {x for e in top[:5] for x in (e["source"], e["target"])}
    assert body["n_edges_total"] == len(doc["edges"]) and body["method"] == "eap"
    small = c.get("/api/circuit/c?max_nodes=3").json()
    ids = {n["id"] for n in small["nodes"]}
    assert (
        len(ids) <= 3
        and small["edges"]
        and all(e["source"] in ids and e["target"] in ids for e in small["edges"])
    )
    assert abs(small["edges"][0]["score"]) == pytest.approx(abs(top[0]["score"]))
    node = body["nodes"][0]["id"]
    r = c.post("/api/labels/c", json={node: "my label", "other": "x"})
    assert r.status_code == 200 and r.json() == {node: "my label", "other": "x"}
    assert json.loads((tmp_path / "c" / "labels.json").read_text()) == {node: "my label", "other": "x"}
    labelled = {n["id"]: n.get("label") for n in c.get("/api/circuit/c?max_edges=5").json()["nodes"]}
    assert labelled[node] == "my label"
    assert c.post("/api/labels/c", json={"other": None}).json() == {node: "my label"}
    assert c.get("/api/labels/c").json() == {node: "my label"}
    for bad in ([1, 2], {"k": 3}, {"": "x"}, {"k": "x" * 2001}):
        assert c.post("/api/labels/c", json=bad).status_code == 400
    assert c.get("/api/circuit/c?max_edges=0").status_code == 400
    assert c.get("/api/circuit/c?max_nodes=100000").status_code == 400


def test_malformed_artifacts_get_422_naming_the_file(tmp_path):
    bench = load_bench()
    for name in ("trunc", "noexamples", "badexpl", "badmeta"):
        bench.write_synthetic(tmp_path / name, n_features=10, n_examples=2, window=1, n_vocab=5)
    (tmp_path / "trunc" / "features.parquet").write_bytes(b"PAR1garbage")
    (tmp_path / "noexamples" / "examples.parquet").unlink()
    (tmp_path / "badexpl" / "explanations.json").write_text(
        '{"kind": "mechscope-explanations", "items": [{"feat'
    )
    (tmp_path / "badmeta" / "meta.json").write_text('{"kind": "feature-stats", ')
    circuit_artifact(tmp_path / "circ")
    (tmp_path / "circ" / "circuit.json").write_text('{"kind": "circuit", "nodes": []}')
    c = TestClient(app_for([tmp_path]), base_url=BASE)
    cases = {"/api/features/trunc/index": "features.parquet", "/api/features/noexamples/feature/1": "examples.parquet",
             "/api/features/noexamples/index?token=x": "examples.parquet",
             "/api/features/badexpl/index": "explanations.json", "/api/artifact/badmeta/meta": "meta.json",
             "/api/circuit/circ": "circuit.json"}  # fmt: skip
    for url, file in cases.items():
        r = c.get(url)
        assert r.status_code == 422, (url, r.text)
        assert file in r.json()["error"], url
    runs = {r["id"]: r for r in c.get("/api/runs").json()["runs"]}
    assert "not valid JSON" in runs["badmeta"]["error"]
    assert c.get("/api/artifact/nothing/meta").status_code == 404


def test_files_views_and_static(client, runs, monkeypatch, tmp_path):
    from mechscope.server import api

    (runs / "patching" / "resid" / "page.html").write_text("<p>hi</p>")
    r = client.get("/files/patching/resid/page.html")
    assert r.text == "<p>hi</p>" and r.headers["content-type"].startswith("text/html")
    assert client.get("/files/patching/resid/values.safetensors").content == (
        runs / "patching" / "resid" / "values.safetensors").read_bytes()  # fmt: skip
    assert client.get("/files/patching/resid/nope.html").status_code == 404
    page = client.get("/").text
    assert "demo-1/features" in page and 'href="/view/features/demo-1/features"' in page
    assert 'href="/files/patching/resid/page.html"' not in page  # only known page names are linked
    shell = client.get("/view/features/demo-1/features").text
    assert "/static/mechscope.js" in shell and "/api/features/" in shell
    assert "mechscope.histogram" in client.get("/view/feature/demo-1/features/3").text
    assert client.get("/view/features/circuit").status_code == 404
    monkeypatch.setattr(api, "STATIC_DIR", tmp_path / "static")
    r = client.get("/static/mechscope.js")
    assert r.status_code == 404 and "mechscope.js" in r.json()["error"]
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "mechscope.js").write_text("export const x = 1;")
    r = client.get("/static/mechscope.js")
    assert r.text == "export const x = 1;" and r.headers["content-type"].startswith("text/javascript")


def test_nan_values_become_null(tmp_path):
    art = load_bench().write_synthetic(tmp_path / "a", n_features=5, n_examples=2, window=1, n_vocab=5)
    feats = pq.read_table(art / "features.parquet")
    dens = feats["density"].to_numpy().copy()
    dens[2] = math.nan
    pq.write_table(feats.set_column(1, "density", [dens]), art / "features.parquet")
    c = TestClient(app_for([tmp_path]), base_url=BASE)
    rows = c.get("/api/features/a/index").json()["rows"]
    assert rows[2]["density"] is None and rows[1]["density"] == pytest.approx(dens[1])


@pytest.mark.slow
def test_views_render_in_chromium(runs):
    from playwright.sync_api import expect

    from browser import page
    from mechscope.server.api import STATIC_DIR

    if not (STATIC_DIR / "mechscope.js").is_file():
        pytest.skip("the component bundle (mechscope/viz/static/mechscope.js) is not built")
    by_id = _expected(runs)
    with running(app_for([runs])) as base, page() as pg:
        pg.goto(f"{base}/view/features/demo-1/features")
        pg.wait_for_selector(".ms-tr:not(.ms-loading)")
        first = pg.locator(".ms-tr:not(.ms-loading)").first
        assert first.locator(".ms-td").first.inner_text() == str(by_id[0])
        assert first.locator("a").first.get_attribute("href") == f"/view/feature/demo-1/features/{by_id[0]}"
        assert pg.locator(".ms-table").get_attribute("data-total") == str(len(by_id))
        pg.fill(".ms-filter", "legal")  # the table's filter box searches explanations on the server
        expect(pg.locator(".ms-tr:not(.ms-loading)")).to_have_count(2)  # (the page's CSP forbids eval)
        assert pg.locator(".ms-tr .ms-td a").all_inner_texts() == ["0", "2"]
        pg.fill("input[name=min_density]", "0.05")
        pg.locator("input[name=min_density]").dispatch_event("change")
        n_dense = len(_expected(runs, "density >= 0.05"))
        assert 0 < n_dense < len(by_id)
        expect(pg.locator(".ms-table")).to_have_attribute("data-total", str(n_dense))
        pg.goto(f"{base}/view/feature/demo-1/features/0")
        pg.wait_for_selector(".ms-histogram svg")
        body = (
            TestClient(app_for([runs]), base_url=BASE).get("/api/features/demo-1/features/feature/0").json()
        )
        assert pg.locator(".ms-histogram").get_attribute("data-bins") == str(len(body["histogram"]["bins"]))
        n_examples = sum(len(v) for v in body["examples"].values())
        assert pg.locator(".ms-tokens").count() == n_examples
        pg.goto(f"{base}/")
        assert pg.locator("tbody tr").count() == 5
    assert pg.errors == []
    assert all(u.startswith(base) for u in pg.requests), pg.requests
