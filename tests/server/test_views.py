"""The views of ``mechscope serve`` in headless Chromium, against a real server on 127.0.0.1.

For every view: it loads without console errors; every request goes to 127.0.0.1 (recorded, and
anything else intercepted and aborted); the values in the DOM equal the artifact's, read here with
DuckDB, pyarrow or safetensors (or, for the model views, direct calls on the model); the exports
hold the same values and the Python snippet, run here, rebuilds the same result; a screenshot is
saved; a malformed artifact shows its error panel.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open
from starlette.testclient import TestClient
from test_serve_api import BASE, feature_artifact, load_bench

from browser import running
from mechscope._fs import atomic_write_json
from mechscope.server import app_for
from mechscope.server.api import STATIC_DIR

TEXT = "the quick brown fox jumps"
FAILED_LOAD = "Failed to load resource"  # Chromium's console line for an expected 4xx answer


# ---------------------------------------------------------------- artifacts


def patch_artifacts(root: Path) -> None:
    """``patch/a``: layer x pos with per-example values; ``patch/b``: layer x head, three times larger."""
    from mechscope.interventions.results import Axis, PatchResult

    gen = torch.Generator().manual_seed(1)
    per = torch.randn(3, 5, 4, generator=gen)
    layers = Axis("layer", ("L0", "L1", "L2"))
    a = PatchResult(per.mean(-1), (layers, Axis("pos", tuple(f"{i}: t{i}" for i in range(5)))),
                    "activation_patching", "resid_pre", "logit_diff", 2.0, -0.5, "denoise", per_example=per)  # fmt: skip
    a.save(root / "patch" / "a")
    b = PatchResult(3 * torch.randn(3, 4, generator=gen), (layers, Axis("head", tuple(f"H{i}" for i in range(4)))),
                    "activation_patching", "heads", "logit_diff", 1.5, 0.25, "noise")  # fmt: skip
    b.save(root / "patch" / "b")


def circuit_with_features(out: Path) -> Path:
    """A circuit over 3 layers whose layer-1 MLP is split into dictionary features 0, 1 and 2."""
    from mechscope.circuits.circuit import Circuit
    from mechscope.circuits.graph import Graph

    graph = Graph(3, 2, 2, features=((1, (0, 1, 2)),))
    scores = torch.randn(graph.n_edges, generator=torch.Generator().manual_seed(2))
    Circuit(graph, scores, "eap", "zero", "logit_diff").top(20).save(out)
    return out


def dictionary_features(out: Path) -> Path:
    """A small synthetic feature artifact for the test dictionary's hook (32 features), with decoder
    cosine neighbours recorded."""
    art = load_bench().write_synthetic(out, n_features=32, n_examples=6, window=2, n_vocab=30)
    meta = json.loads((art / "meta.json").read_text())
    atomic_write_json(art / "meta.json", {**meta, "hook": "blocks.1.hook_resid_post", "d_sae": 32})
    table = pq.read_table(art / "features.parquet")
    neighbours = [[(i + 1) % 32, (i + 2) % 32] for i in range(32)]
    table = table.append_column("cosine_neighbours", pa.array(neighbours, pa.list_(pa.int64())))
    table = table.append_column("cosine_values", pa.array([[0.5, 0.25]] * 32, pa.list_(pa.float64())))
    pq.write_table(table, art / "features.parquet")
    return art


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    feature_artifact(root / "feat")
    patch_artifacts(root)
    circuit_with_features(root / "circuit")
    dictionary_features(root / "dict")
    load_bench().write_synthetic(root / "synthetic", n_features=200, n_examples=4, window=2, n_vocab=40)
    return root


@pytest.fixture(scope="module")
def bundle() -> None:
    if not (STATIC_DIR / "mechscope.js").is_file():
        pytest.skip("the component bundle (mechscope/viz/static/mechscope.js) is not built")


@pytest.fixture(scope="module")
def base(runs, backend, bundle):
    app = app_for([runs])
    app.state.model = backend
    with running(app) as url:
        yield url


# ---------------------------------------------------------------- browser helpers


@contextlib.contextmanager
def browser():
    """A page whose requests are recorded, with every request to another host aborted and recorded."""
    from browser import page

    with page() as pg:
        pg.outside = []

        def guard(route):
            if urlparse(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                pg.outside.append(route.request.url)
                route.abort()

        pg.route("**/*", guard)
        yield pg


def visit(pg, url: str, state: str = "ready") -> None:
    """Open ``url`` and wait until the view is drawn (``data-state``) in the expected state."""
    pg.goto(url)
    pg.wait_for_selector("body[data-state=ready], body[data-state=error]")
    got = pg.get_attribute("body", "data-state")
    panel = pg.locator("#error").inner_text() if got == "error" else ""
    assert got == state, f"{url}: {got} {panel}"


def wait_ready(pg) -> None:
    pg.wait_for_selector("body[data-state=ready], body[data-state=error]")  # (the CSP forbids eval)
    panel = pg.locator("#error")
    assert pg.get_attribute("body", "data-state") == "ready", panel.inner_text()


def assert_clean(pg, base: str, allowed_failures: int = 0) -> None:
    """No JavaScript error or console error (beyond ``allowed_failures`` expected 4xx answers), and
    no request left 127.0.0.1."""
    failed = [e for e in pg.errors if e.startswith(FAILED_LOAD)]
    assert [e for e in pg.errors if e not in failed] == [], pg.errors
    assert len(failed) <= allowed_failures, pg.errors
    assert pg.outside == []
    for url in pg.requests:
        parsed = urlparse(url[5:] if url.startswith("blob:") else url)
        assert parsed.scheme == "data" or parsed.hostname == "127.0.0.1", url
    assert any(u.startswith(base) for u in pg.requests)


def shot(pg, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000


def download(pg, selector: str) -> bytes:
    """The file that clicking ``selector`` (an export link or button) downloads."""
    with pg.expect_download() as d:
        pg.click(selector)
    return Path(d.value.path()).read_bytes()


def run_snippet(pg) -> dict:
    """Execute the view's Python snippet (as a user would paste it); returns its namespace."""
    namespace: dict = {}
    exec(pg.locator("pre.snippet").inner_text(), namespace)
    return namespace


def tensors(path: Path) -> dict[str, np.ndarray]:
    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safe_open handle, not a dict)


def click_cell(pg, heatmap, r: int, c: int) -> None:
    canvas = heatmap.locator(".ms-hm-canvas")
    box = canvas.bounding_box()
    rows, cols = int(heatmap.get_attribute("data-rows")), int(heatmap.get_attribute("data-cols"))
    canvas.click(position={"x": (c + 0.5) * box["width"] / cols, "y": (r + 0.5) * box["height"] / rows})


# ---------------------------------------------------------------- artifact views


@pytest.mark.slow
def test_patching_view(base, runs, tmp_path):
    a, b = (
        tensors(runs / "patch" / "a" / "values.safetensors"),
        tensors(runs / "patch" / "b" / "values.safetensors"),
    )
    meta = json.loads((runs / "patch" / "a" / "meta.json").read_text())
    norm = (a["values"] - meta["corrupted"]) / (meta["clean"] - meta["corrupted"])
    with browser() as pg:
        visit(pg, f"{base}/view/patching/patch/a")
        hm = pg.locator(".ms-heatmap")
        assert hm.count() == 1
        assert float(hm.get_attribute("data-vmax")) == pytest.approx(np.abs(a["values"]).max(), rel=1e-6)
        assert (hm.get_attribute("data-rows"), hm.get_attribute("data-cols")) == ("3", "5")
        assert pg.locator("dd[data-key=clean]").inner_text() == "2"
        assert pg.locator("dd[data-key=corrupted]").inner_text() == "-0.5"
        assert (
            "(value − corrupted) / (clean − corrupted)"
            in pg.locator("dd[data-key=normalisation]").inner_text()
        )
        click_cell(pg, hm, 2, 3)
        cell = pg.locator(".cell-result").first
        cell.wait_for()
        assert float(cell.get_attribute("data-value")) == pytest.approx(float(a["values"][2, 3]), rel=1e-6)
        pg.wait_for_selector(".per-example")
        per = json.loads(pg.locator(".per-example").get_attribute("data-values"))
        np.testing.assert_allclose(per, a["per_example"][2, 3], rtol=1e-6)
        pg.check("input[value=norm]")
        assert float(pg.get_attribute(".ms-heatmap", "data-vmax")) == pytest.approx(
            np.abs(norm).max(), rel=1e-5
        )
        exported = json.loads(download(pg, "a[data-export=json]"))
        np.testing.assert_allclose(exported[0]["values"], a["values"].ravel(), rtol=1e-6)
        np.testing.assert_allclose(exported[0]["normalised"], norm.ravel(), rtol=1e-5)
        assert download(pg, "button[data-export=svg]").startswith(b"<svg")
        assert download(pg, "button[data-export=png]").startswith(b"\x89PNG")
        r = run_snippet(pg)["r"]
        np.testing.assert_array_equal(r.values.numpy(), a["values"])
        shot(pg, tmp_path, "patching")
        visit(pg, f"{base}/view/patching/patch/a?b=patch/b")  # side by side on one colour scale
        both = max(np.abs(a["values"]).max(), np.abs(b["values"]).max())
        assert [float(v) for v in pg.locator(".ms-heatmap").evaluate_all("els => els.map(e => e.dataset.vmax)")] == (
            pytest.approx([both, both], rel=1e-6))  # fmt: skip
        assert pg.locator(".ms-heatmap").nth(1).get_attribute("data-cols") == "4"
        click_cell(pg, pg.locator(".ms-heatmap").nth(1), 1, 2)
        pg.wait_for_selector(".cell-result[data-id='patch/b']")
        value = pg.locator(".cell-result[data-id='patch/b']").get_attribute("data-value")
        assert float(value) == pytest.approx(float(b["values"][1, 2]), rel=1e-6)
        shot(pg, tmp_path, "patching-two")
    assert_clean(pg, base)


@pytest.mark.slow
def test_circuit_view_prunes_labels_and_links_features(base, runs, tmp_path):
    doc = TestClient(app_for([runs]), base_url=BASE).get("/api/circuit/circuit").json()
    weights = np.abs([e["weight"] for e in doc["edges"]])
    dict_id = "dict"  # the served feature artifact whose hook reads layer 1
    with browser() as pg:
        visit(pg, f"{base}/view/circuit/circuit")
        g = pg.locator(".ms-graph")
        assert int(g.get_attribute("data-nodes")) == len(doc["nodes"])
        assert int(g.get_attribute("data-kept")) == int(
            (weights >= float(g.get_attribute("data-threshold"))).sum()
        )
        slider = g.locator("input.ms-g-slider")
        slider.fill(str(len(weights) // 2))
        t = float(g.get_attribute("data-threshold"))
        assert t > 0 and int(g.get_attribute("data-kept")) == int((weights >= t).sum()) < len(weights)
        feature = next(n for n in doc["nodes"] if n["kind"] == "feature")
        pg.locator(f"circle[data-id='{feature['id']}']").click()
        link = pg.locator("#node a.feature-link")
        assert link.get_attribute("href") == f"/view/feature/{dict_id}/{feature['feature']}"
        assert pg.locator("#node").get_attribute("data-node") == feature["id"]
        node = doc["nodes"][0]["id"]
        pg.locator(f"circle[data-id='{node}']").dblclick()
        pg.fill(".ms-graph input.ms-g-edit", "my <b>label</b>")
        pg.keyboard.press("Enter")
        pg.wait_for_selector(f"#status[data-saved='{node}']")
        assert json.loads((runs / "circuit" / "labels.json").read_text())[node] == "my <b>label</b>"
        assert pg.locator("#node dd").filter(has_text="my <b>label</b>").count() == 1  # text, not markup
        exported = json.loads(download(pg, "button[data-export=json]"))
        assert {n["id"]: n["label"] for n in exported["nodes"]}[node] == "my <b>label</b>"
        assert "<svg" in download(pg, "button[data-export=svg]").decode()
        kept = download(pg, "button[data-export=csv]").decode().strip().splitlines()
        assert len(kept) - 1 == int(g.get_attribute("data-kept"))
        shot(pg, tmp_path, "circuit")
        visit(pg, f"{base}/view/circuit/circuit")  # the label survives a reload
        pg.locator(f"circle[data-id='{node}']").click()
        assert pg.locator("#node dd").filter(has_text="my <b>label</b>").count() == 1
        c = run_snippet(pg)["c"]
        assert c.scores.shape[0] == doc["n_edges_total"]
    assert_clean(pg, base)


@pytest.mark.slow
def test_feature_page(base, runs, tmp_path):
    art = runs / "feat"
    ex = (
        duckdb.connect()
        .execute(
            f"SELECT tokens, activations, target FROM '{art / 'examples.parquet'}' WHERE feature = 0 AND kind = 'top' "
            "ORDER BY rank"
        )
        .fetchall()
    )
    summary = (
        duckdb.connect()
        .execute(
            f"SELECT promoted, suppressed, cooccurring, quantile_edges FROM '{art / 'features.parquet'}' WHERE feature = 0"
        )
        .fetchone()
    )
    bins = (
        duckdb.connect()
        .execute(f"SELECT bin_low, bin_high FROM '{art / 'histogram.parquet'}' WHERE feature = 0")
        .fetchall()
    )
    with browser() as pg:
        visit(pg, f"{base}/view/feature/feat/0")
        first = pg.locator("[data-kind=top] .ms-tokens").first
        acts = [float(x) for x in first.locator(".ms-tk").evaluate_all("els => els.map(e => e.dataset.act)")]
        assert acts == pytest.approx(ex[0][1], rel=1e-6)
        assert pg.locator("[data-kind=top]").count() == len(ex)
        lo, hi = min(b[0] for b in bins), max(b[1] for b in bins)
        inside = [m for m in summary[3] if lo <= m <= hi]
        assert pg.locator(".ms-histogram line.ms-mark").count() == len(inside) > 0
        assert pg.locator("#logits td.up").all_inner_texts() == summary[0]
        assert pg.locator("#logits td.down").all_inner_texts() == summary[1]
        assert [int(x) for x in pg.locator("#cofiring a").all_inner_texts()] == summary[2]
        cosine = (
            duckdb.connect()
            .execute(f"SELECT cosine_neighbours FROM '{art / 'features.parquet'}' WHERE feature = 0")
            .fetchone()[0]
        )
        assert [int(x) for x in pg.locator("#cosine a").all_inner_texts()] == cosine  # written by the pass
        assert pg.locator("p.explanation").inner_text().startswith("Fires on Legal words")
        assert pg.locator("#scores dd").all_inner_texts() == ["0.9"]
        assert "Validation: validated" in pg.locator("#card").inner_text()
        first.locator(".ms-tk").nth(ex[0][2]).hover()
        assert float(pg.get_attribute("#hover", "data-act")) == pytest.approx(ex[0][1][ex[0][2]], rel=1e-6)
        exported = json.loads(download(pg, "a[data-export=json]"))
        assert exported["examples"]["top"][0]["tokens"] == ex[0][0]
        ns = run_snippet(pg)
        assert ns["art"].summary(0)["promoted"] == summary[0]
        shot(pg, tmp_path, "feature")
        visit(pg, f"{base}/view/feature/synthetic/0")  # a synthetic artifact without the columns
        assert "not recorded" in pg.locator("#cosine").inner_text()
        visit(pg, f"{base}/view/feature/dict/5")  # an artifact that records decoder-cosine neighbours
        assert pg.locator("#cosine a").all_inner_texts() == ["6", "7"]
        assert pg.locator("#cosine a").first.get_attribute("href") == "/view/feature/dict/6"
        assert pg.locator("text=steer it").get_attribute("href") == "/view/steer?feature=5"
    assert_clean(pg, base)


@pytest.mark.slow
def test_feature_index_exports_the_loaded_rows(base, runs, tmp_path):
    order = (
        duckdb.connect()
        .execute(f"SELECT feature, density FROM '{runs / 'synthetic' / 'features.parquet'}' ORDER BY feature")
        .fetchall()
    )
    with browser() as pg:
        visit(pg, f"{base}/view/features/synthetic")
        pg.wait_for_selector(".ms-tr:not(.ms-loading)")
        rows = json.loads(download(pg, "button[data-export=json]"))
        assert [(r["feature"], r["density"]) for r in rows] == [pytest.approx(o) for o in order[: len(rows)]]
        assert len(rows) >= 20
        csv = download(pg, "button[data-export=csv]").decode().splitlines()
        assert csv[0].startswith("feature,density") and len(csv) == len(rows) + 1
        assert len(run_snippet(pg)["art"].sql("SELECT * FROM features").fetchall()) == len(order)
        shot(pg, tmp_path, "features")
    assert_clean(pg, base)


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v:
            out |= _flat(v, key)
        else:
            out[key] = json.dumps(v)
    return out


@pytest.mark.slow
def test_runs_page_and_diff(base, runs, tmp_path):
    a, b = (json.loads((runs / "patch" / x / "meta.json").read_text()) for x in "ab")
    fa, fb = _flat(a), _flat(b)
    differs = sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))
    va, vb = (tensors(runs / "patch" / x / "values.safetensors")["values"] for x in "ab")
    with browser() as pg:
        pg.goto(f"{base}/")
        assert pg.locator("a[href='/view/patching/patch/a']").count() == 1
        assert pg.locator("a[href='/view/circuit/circuit']").count() == 1
        pg.select_option("#diff select[name=a]", "patch/a")
        pg.select_option("#diff select[name=b]", "patch/b")
        pg.click("#diff button")
        wait_ready(pg)
        assert (
            pg.locator("#meta-diff tr.differs").evaluate_all("els => els.map(e => e.dataset.key)") == differs
        )
        assert "method" not in differs and "sweep" in differs
        both = max(np.abs(va).max(), np.abs(vb).max())
        vmax = pg.locator(".ms-heatmap").evaluate_all("els => els.map(e => Number(e.dataset.vmax))")
        assert vmax == pytest.approx([both, both], rel=1e-6)
        shot(pg, tmp_path, "diff-patching")
        visit(pg, f"{base}/view/diff?a=feat&b=synthetic")
        for aid in ("feat", "synthetic"):
            path = runs / aid / "features.parquet"
            n, dead, median = (
                duckdb.connect()
                .execute(
                    f"SELECT count(*), count(*) FILTER (WHERE density = 0), median(density) FROM '{path}'"
                )
                .fetchone()
            )
            box = pg.locator(f".feature-summary[data-id='{aid}']")
            assert box.locator("dd[data-key=features]").inner_text() == str(n)
            assert box.locator("dd[data-key='dead (density 0)']").inner_text() == str(dead)
            assert float(box.locator("dd[data-key='density median']").inner_text()) == pytest.approx(
                median, rel=1e-3
            )
        assert pg.locator(".ms-histogram").count() == 2
        shot(pg, tmp_path, "diff-features")
        ns = run_snippet(pg)
        assert ns["differs"] == {
            k for k in ns["a"].keys() | ns["b"].keys() if ns["a"].get(k) != ns["b"].get(k)
        }
    assert_clean(pg, base)


# ---------------------------------------------------------------- model views


@pytest.mark.slow
def test_prompt_view_matches_the_model(base, backend, tmp_path):
    m = backend.model
    probs = m(TEXT)[0, -1].float().softmax(-1)
    direct = backend.prompt(TEXT, top_k=5)
    with browser() as pg:
        visit(pg, f"{base}/view/prompt")
        pg.fill("textarea[name=text]", TEXT)
        pg.fill("input[name=top_k]", "5")
        pg.click("#form button[type=submit]")
        wait_ready(pg)
        first = pg.locator("#next tbody tr").first
        assert first.get_attribute("data-token") == str(m.to_string([int(probs.argmax())]))
        assert float(first.get_attribute("data-prob")) == pytest.approx(float(probs.max()), rel=1e-5)
        assert pg.locator("#next tbody tr").count() == 5
        assert pg.locator(".ms-tokens .ms-tk").count() == len(direct["tokens"])
        links = pg.locator("#features a[data-feature]")
        want = [f["feature"] for fs in direct["features"] for f in fs]
        assert [int(x) for x in links.all_inner_texts()] == want and want
        assert links.first.get_attribute("href") == f"/view/feature/dict/{want[0]}"
        assert "backend.prompt(" in pg.locator("pre.snippet").inner_text()
        shot(pg, tmp_path, "prompt")
        assert "text=the+quick" in pg.url  # the URL holds the view's state
        visit(pg, pg.url)
        assert pg.locator("#next tbody tr").first.get_attribute("data-token") == first.get_attribute(
            "data-token"
        )
    assert_clean(pg, base)


@pytest.mark.slow
def test_attention_and_lens_views(base, backend, tmp_path):
    m = backend.model
    _, cache = m.run_with_cache(TEXT, names=["blocks.1.attn.hook_pattern"])
    pattern = cache["blocks.1.attn.hook_pattern"][0].numpy()  # [heads, q, k]
    lens = backend.lens(TEXT, "logprob")
    values = np.frombuffer(__import__("base64").b64decode(lens["values"]["data"]), "<f4")
    with browser() as pg:
        visit(pg, f"{base}/view/attention?text={TEXT}&layer=1")
        assert pg.locator(".ms-attention .ms-thumb").count() == m.cfg.n_heads
        pg.locator(".ms-attention .ms-thumb").nth(2).click()
        pg.locator(".ms-at-q[data-q='3']").hover()
        weights = pg.locator(".ms-at-strip .ms-tk").evaluate_all(
            "els => els.map(e => Number(e.dataset.weight))"
        )
        np.testing.assert_allclose(weights, pattern[2, 3], rtol=1e-5)
        shot(pg, tmp_path, "attention")
        visit(pg, f"{base}/view/lens?text={TEXT}&statistic=logprob")
        assert float(pg.get_attribute(".ms-heatmap", "data-vmax")) == pytest.approx(
            np.abs(values).max(), rel=1e-5
        )
        assert pg.get_attribute(".ms-heatmap", "data-rows") == str(m.cfg.n_layers + 1)
        shot(pg, tmp_path, "lens")
        pg.errors.clear()
        visit(pg, f"{base}/view/attention?text={TEXT}&layer=99", state="error")  # bad input: a clear panel
        assert "out of range" in pg.locator("#error").inner_text()
        visit(pg, f"{base}/view/lens?text=", state="error")
        assert "empty" in pg.locator("#error").inner_text()
        visit(pg, f"{base}/view/lens?text={TEXT}&answer=%20not%20one%20token", state="error")
        assert "tokens" in pg.locator("#error").inner_text()
    assert_clean(pg, base, allowed_failures=3)


@pytest.mark.slow
def test_steer_view_identity_and_saved_run(base, backend, runs, tmp_path):
    before = str(backend.model.generate(TEXT, max_new_tokens=6))
    with browser() as pg:
        visit(pg, f"{base}/view/steer?feature=3")
        assert pg.input_value("#feats .feature") == "3"
        pg.fill("textarea[name=text]", TEXT)
        pg.fill("#feats .strength", "0")
        pg.fill("input[name=max_new_tokens]", "6")
        pg.click("#form button[type=submit]")
        wait_ready(pg)
        assert pg.get_attribute("#before", "data-text") == before == pg.get_attribute("#after", "data-text")
        assert pg.get_attribute("#identity", "data-identity") == "true"
        assert "identity holds" in pg.locator("#identity").inner_text()
        saved = pg.locator("#saved a").inner_text()
        assert saved.startswith("steering/")
        meta = json.loads((runs / saved / "meta.json").read_text())
        assert meta["kind"] == "steering-run" and meta["before"] == before and meta["features"] == {"3": 0.0}
        pg.fill("#feats .strength", "60")
        pg.click("#form button[type=submit]")
        wait_ready(pg)
        assert pg.get_attribute("#before", "data-text") == before != pg.get_attribute("#after", "data-text")
        assert "set the strengths to 0" in pg.locator("#identity").inner_text()
        assert pg.locator("#after .ms-tk").evaluate_all("els => els.some(e => e.dataset.act === '1')")
        shot(pg, tmp_path, "steer")
        pg.errors.clear()
        visit(pg, f"{base}/view/steer?text={TEXT}&f=99:1", state="error")
        assert "out of range" in pg.locator("#error").inner_text()
    assert_clean(pg, base, allowed_failures=1)


# ---------------------------------------------------------------- without a model, and broken artifacts


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("broken")
    patch_artifacts(root)
    (root / "patch" / "a" / "values.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (root / "patch" / "b" / "meta.json").write_text('{"kind": "patch_result", ')
    circuit_with_features(root / "circuit")
    (root / "circuit" / "circuit.json").write_text('{"kind": "circuit", "nodes": []}')
    art = load_bench().write_synthetic(root / "feat", n_features=10, n_examples=2, window=1, n_vocab=5)
    (art / "features.parquet").write_bytes(b"PAR1garbage")
    return root


@pytest.mark.slow
def test_broken_artifacts_and_missing_model_show_panels(broken, bundle, tmp_path):
    cases = {"/view/patching/patch/a": "values.safetensors", "/view/patching/patch/b": "meta.json",
             "/view/circuit/circuit": "circuit.json", "/view/feature/feat/1": "features.parquet",
             "/view/features/feat": "features.parquet", "/view/patching/nothing": "no artifact",
             "/view/diff?a=feat": "two runs"}  # fmt: skip
    with running(app_for([broken])) as url, browser() as pg:
        for path, needle in cases.items():
            visit(pg, url + path, state="error")
            assert pg.locator("#error").is_visible()
            assert needle in pg.locator("#error").inner_text(), path
        shot(pg, tmp_path, "broken")
        n_failed = len([e for e in pg.errors if e.startswith(FAILED_LOAD)])
        for view in ("prompt", "attention", "lens", "steer"):
            visit(pg, f"{url}/view/{view}?text=hello")
            assert "--model" in pg.locator("#nomodel").inner_text()
        shot(pg, tmp_path, "no-model")
        assert_clean(pg, url, allowed_failures=n_failed)
        assert n_failed <= len(cases)
    r = TestClient(app_for([broken]), base_url=BASE).post("/api/model/prompt", json={"text": "hi"})
    assert r.status_code == 400 and "--model" in r.json()["error"]


class SlowBackend:
    """A duck-typed backend that records how many calls overlap."""

    name = "slow"
    dictionary = None

    def __init__(self) -> None:
        self.active = self.most = 0
        self.lock = threading.Lock()

    def prompt(self, text: str, top_k: int = 10, n_features: int = 5) -> dict:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.15)
        with self.lock:
            self.active -= 1
        return {"tokens": [text], "next": [], "top_k": top_k}


def test_model_routes_check_bodies_and_serialise_calls(tmp_path):
    import httpx

    (tmp_path / "r").mkdir()
    app = app_for([tmp_path / "r"])
    fake = app.state.model = SlowBackend()
    c = TestClient(app, base_url=BASE)
    bad = {"/api/model/prompt": [{"text": ""}, {"text": 3}, {"text": "x", "top_k": 0}, {"text": "x", "top_k": True}],
           "/api/model/attention": [{"text": "x", "layer": -1}, {"text": "x"}],
           "/api/model/lens": [{"text": "x", "statistic": "entropy"}],
           "/api/model/steer": [{"text": "x", "features": {"1": 1.0}}]}  # fmt: skip
    for url, bodies in bad.items():
        for body in bodies:
            r = c.post(url, json=body)
            assert r.status_code == 400 and r.json()["error"], (url, body, r.text)
    r = c.post("/api/model/steer", json={"text": "x", "features": {}})
    assert "steering needs a dictionary" in r.json()["error"]
    json_type = {"content-type": "application/json"}
    assert c.post("/api/model/prompt", content=b"[1", headers=json_type).status_code == 400
    assert (
        c.post("/api/model/prompt", content=b"{}", headers={"content-type": "text/plain"}).status_code == 403
    )
    r = c.post("/api/model/prompt", json={"text": "hi", "top_k": 3})
    assert r.json() == {"tokens": ["hi"], "next": [], "top_k": 3}
    with running(app) as url:
        threads = [threading.Thread(target=httpx.post, args=(f"{url}/api/model/prompt",), kwargs={"json": {"text": "a"}})
                   for _ in range(4)]  # fmt: skip
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert time.perf_counter() - t0 >= 4 * 0.15 * 0.9
    assert fake.most == 1
