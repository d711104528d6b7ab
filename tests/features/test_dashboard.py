"""Static feature dashboards (``mechscope.features.dashboard``) in headless Chromium.

The artifact comes from the compiled features model with its true features as the dictionary,
plus one latent with a zero decoder row, which never fires. Every value the pages show is read
back from the DOM and compared with :class:`FeatureArtifact`.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from browser import page, serve
from known import relu_dictionary, true_features
from mechscope import load_model
from mechscope.errors import MechscopeError
from mechscope.features import FeatureArtifact, StatsConfig, feature_stats
from mechscope.features.dashboard import DashboardConfig, FeatureNotes, build_dashboards

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CFG = StatsConfig(top_k=5, window=2, n_quantiles=4, per_quantile=2, reservoir=40, cooccurrence_top=3)
CARD = {"verdict": "pass", "precision": 0.9, "recall": 0.8,
        "causal": {"passed": True, "promoted_shift": -1.2}, "steering": {"passed": False, "alphas": [0, 2], "generations": [["a <i>b</i>", "c\nd"]]}}  # fmt: skip


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> FeatureArtifact:
    model = load_model("toy/compiled_features", device="cpu")
    _, truth = true_features()
    w_dec = torch.cat([truth.feature_directions, torch.zeros(1, truth.feature_directions.shape[1])])
    dic = relu_dictionary(w_dec, b_enc=-1e-4, hook_name=truth.feature_hook)  # latent 16: never fires
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 32, (16, 8), generator=gen) for _ in range(6)]
    stats = feature_stats(model, dic, iter(batches), CFG)
    return FeatureArtifact(stats.save(tmp_path_factory.mktemp("stats") / "features", model))


@pytest.fixture(scope="module")
def fired(art) -> list[int]:
    """The features that fired, most dense first (the dashboards' default order)."""
    ids = [i for i in range(art.d_sae) if art.summary(i)["n_active"] > 0]
    return sorted(ids, key=lambda i: (-art.summary(i)["density"], i))


@pytest.fixture(scope="module")
def site(art, fired, tmp_path_factory):
    """Dashboards for every feature that fired; the densest carries notes."""
    out = tmp_path_factory.mktemp("dash")
    notes = {fired[0]: FeatureNotes("fires on <b>x</b> tokens", "test-explainer",
                                    {"detection": 0.93, "fuzzing": 0.88}, CARD, {"steering": "../steer.html"})}  # fmt: skip
    index = build_dashboards(art, out, notes=notes)
    assert index == out / "index.html"
    return out


def _guarded(pg, base: str) -> list[str]:
    """Abort and record every request that leaves ``base``."""
    outside: list[str] = []

    def handle(route):
        if route.request.url.startswith(base + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    pg.route("**/*", handle)
    return outside


def _clean(pg, base: str, outside: list[str]) -> None:
    assert not pg.errors, pg.errors
    assert not outside, outside
    assert all(u.startswith(base + "/") for u in pg.requests), pg.requests


def _data(pg, selector: str, key: str) -> list[str]:
    """``data-<key>`` of every element matching ``selector``, in document order."""
    return pg.locator(selector).evaluate_all(f"els => els.map(e => e.dataset.{key})")


def _top_targets(art: FeatureArtifact, i: int) -> set[str]:
    return {ex.tokens[ex.target] for ex in art.examples(i, "top")}


def test_pages_load_cleanly_and_screenshot(art, fired, site, tmp_path):
    with serve(site) as base, page() as pg:
        outside = _guarded(pg, base)
        pg.goto(f"{base}/index.html")
        assert pg.locator("#features tbody tr").count() == len(fired) == 16
        pg.screenshot(path=tmp_path / "index.png", full_page=True)
        pg.locator(f'tr[data-id="{fired[0]}"] a').click()
        pg.wait_for_url(f"**/feature/{fired[0]}.html")
        assert pg.locator("h1").inner_text() == f"Feature {fired[0]}"
        pg.screenshot(path=tmp_path / "feature.png", full_page=True)
        pg.locator("text=← all features").click()  # back to the index
        pg.wait_for_url("**/index.html")
        _clean(pg, base, outside)
    for name in ("index.png", "feature.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, name


def test_feature_page_shows_the_artifact(art, fired, site):
    with serve(site) as base, page() as pg:
        outside = _guarded(pg, base)
        for i in fired[:3]:
            s, top = art.summary(i), art.examples(i, "top")
            pg.goto(f"{base}/feature/{i}.html")
            density = pg.locator("#density")
            assert float(density.get_attribute("data-value")) == s["density"]
            assert density.inner_text() == f"{s['density'] * 100:.3g}%"
            assert pg.locator("#max-act").inner_text() == f"{s['max_activation']:.4g}"
            # the first top example: every token's exact activation, the target outlined, shading = act / max
            spans = pg.locator("#top-examples .ex").first.locator(".tok")
            acts = [float(a) for a in spans.evaluate_all("els => els.map(e => e.dataset.act)")]
            assert acts == list(top[0].activations)
            assert spans.evaluate_all("els => els.map(e => e.dataset.tok)") == list(top[0].tokens)
            targets = spans.evaluate_all("els => els.map(e => e.classList.contains('target'))")
            assert targets.index(True) == top[0].target and targets.count(True) == 1
            bg = spans.nth(top[0].target).evaluate("e => getComputedStyle(e).backgroundColor")
            alpha = float(re.findall(r"[\d.]+", bg)[3]) if bg.startswith("rgba") else 1.0
            assert alpha == pytest.approx(top[0].activations[top[0].target] / s["max_activation"], abs=2e-3)
            assert pg.locator("#top-examples .ex").count() == len(top)
            # logit effects, histogram bars and quantile edges, quantiles highest first
            assert _data(pg, ".promoted .ltok", "tok") == s["promoted"]
            assert _data(pg, ".suppressed .ltok", "tok") == s["suppressed"]
            bars = pg.locator("#histogram rect.bar")
            assert bars.count() == len(art.histogram(i))
            counts = [int(c) for c in bars.evaluate_all("e => e.map(x => x.dataset.count)")]
            assert counts == [c for _, _, c in art.histogram(i)] and sum(counts) == s["n_active"]
            edges = [float(v) for v in _data(pg, "#histogram line.qedge", "value")]
            assert edges == s["quantile_edges"]
            shown = [int(q) for q in _data(pg, "section.quantile", "quantile")]
            assert shown == sorted({ex.quantile for ex in art.examples(i, "quantile")}, reverse=True)
            # co-occurring features, linked to their pages
            others = [int(o) for o in _data(pg, "#cooccurring tr[data-other]", "other")]
            assert others == [j for j, _ in art.cooccurring(i)[:10]]
            assert pg.locator("#cooccurring a").count() == len(others)
        pg.locator("#cooccurring a").first.click()
        pg.wait_for_url(f"**/feature/{others[0]}.html")
        _clean(pg, base, outside)


def test_index_search_and_sort(art, fired, site):
    assert DashboardConfig().index_tokens >= CFG.top_k  # the index keeps every top-example target
    counts = Counter(t for i in fired for t in _top_targets(art, i))
    token = next(t for t, n in sorted(counts.items()) if 1 < n < len(fired) and int(t) not in fired)
    id_token = next(t for t, n in sorted(counts.items()) if 1 < n < len(fired) and int(t) in fired)
    with serve(site) as base, page() as pg:
        outside = _guarded(pg, base)
        pg.goto(f"{base}/index.html")

        def visible_ids() -> set[int]:
            return {int(x) for x in _data(pg, "#features tbody tr:visible", "id")}

        pg.fill("#search", f"tok:{token}")
        want = {i for i in fired if token in _top_targets(art, i)}
        assert visible_ids() == want and 0 < len(want) < len(fired)
        assert pg.locator("#count").inner_text() == f"{len(want)} of {len(fired)} features"
        pg.fill("#search", token)  # plain text: tokens, ids and explanations
        assert visible_ids() == want
        pg.fill("#search", id_token)
        assert visible_ids() == {i for i in fired if id_token in _top_targets(art, i)} | {int(id_token)}
        pg.fill("#search", f"id:{id_token}")
        assert visible_ids() == {int(id_token)}
        pg.fill("#search", "<B>X</b>")  # explanation text, case folded
        assert visible_ids() == {fired[0]}
        pg.fill("#search", "")
        assert visible_ids() == set(fired)

        def column(n: int) -> list[str]:
            return pg.locator(f"#features tbody tr td:nth-child({n})").all_inner_texts()

        assert column(1) == [str(i) for i in fired]  # most dense first
        pg.click("#features th:has-text('max activation')")

        def maxact(i: int) -> float:
            return art.summary(i)["max_activation"]

        by_max = sorted(fired, key=lambda i: -maxact(i))
        assert [maxact(int(i)) for i in column(1)] == [maxact(i) for i in by_max]
        pg.click("#features th:has-text('max activation')")
        assert [maxact(int(i)) for i in column(1)] == [maxact(i) for i in by_max[::-1]]
        pg.click("#features th:has-text('feature')")
        assert column(1) == [str(i) for i in sorted(fired, reverse=True)]
        _clean(pg, base, outside)


def test_notes_render(fired, site):
    with serve(site) as base, page() as pg:
        outside = _guarded(pg, base)
        pg.goto(f"{base}/feature/{fired[0]}.html")
        assert pg.locator("#explanation .explanation").inner_text() == "fires on <b>x</b> tokens"
        assert pg.locator("#explanation .explanation b").count() == 0  # shown as text, never parsed
        assert "test-explainer" in pg.locator("#explanation").inner_text()
        assert pg.locator('[data-score="detection"]').inner_text() == "0.93"
        verdict = pg.locator("#card .verdict")
        assert verdict.inner_text() == "pass" and "good" in verdict.get_attribute("class")
        assert _data(pg, "#card [data-passed]", "passed") == ["true", "false"]
        card = pg.locator("#card").inner_text()
        assert "promoted_shift" in card and "-1.2" in card and "0, 2" in card and "a <i>b</i>" in card
        assert pg.locator("#card i").count() == 0
        assert pg.locator("#links a").get_attribute("href") == "../steer.html"
        pg.goto(f"{base}/feature/{fired[1]}.html")
        assert pg.locator("#no-explanation").inner_text() == "no explanation yet"
        pg.goto(f"{base}/index.html")
        row = pg.locator(f'tr[data-id="{fired[0]}"]')
        assert "fires on <b>x</b> tokens" in row.inner_text() and "0.88" in row.inner_text()
        _clean(pg, base, outside)


def test_token_text_is_escaped_and_whitespace_shown(art, fired, tmp_path):
    i = fired[0]
    bad = [
        "<script>window.pwned=1</script>",
        "<img/src=x/onerror=window.pwned=1>",
        "<i>x</i>\t",
        'a&b "q"',
        " sp\n",
    ]
    src = tmp_path / "art"
    shutil.copytree(art.path, src)
    table = pq.read_table(src / "examples.parquet").to_pydict()
    j = next(r for r, (f, k, rank) in enumerate(zip(table["feature"], table["kind"], table["rank"]))
             if f == i and k == "top" and rank == 0)  # fmt: skip
    assert len(table["tokens"][j]) == len(bad)  # a full window
    table["tokens"][j] = bad
    pq.write_table(pa.table(table, schema=pq.read_schema(src / "examples.parquet")), src / "examples.parquet")
    out = build_dashboards(src, tmp_path / "dash", features=[i]).parent
    with serve(out) as base, page() as pg:
        outside = _guarded(pg, base)
        pg.goto(f"{base}/feature/{i}.html")
        spans = pg.locator("#top-examples .ex").first.locator(".tok")
        assert _data(pg, "#top-examples .ex:first-child .tok", "tok") == bad
        assert spans.all_inner_texts() == [bad[0], bad[1], "<i>x</i>⇥", 'a&b␣"q"', "␣sp↵"]
        assert pg.evaluate("() => window.pwned") is None
        assert pg.locator("main script, main img, main i").count() == 0
        pg.goto(f"{base}/index.html")  # the index lists the target token too, and finds it
        assert pg.locator("main script, main img, main i").count() == 0
        pg.fill("#search", "tok:" + bad[table["target"][j]].strip().upper())
        assert _data(pg, "#features tbody tr:visible", "id") == [str(i)]
        pg.fill("#search", "tok:<u>")
        assert _data(pg, "#features tbody tr:visible", "id") == []
        assert not any(u.endswith("/x") for u in pg.requests)
        _clean(pg, base, outside)


def test_never_fired_feature(art, fired, tmp_path):
    dead = 16
    assert art.summary(dead)["n_active"] == 0 and dead not in fired
    index = build_dashboards(art, tmp_path, features=[dead, fired[0]])
    assert {p.name for p in (tmp_path / "feature").iterdir()} == {f"{dead}.html", f"{fired[0]}.html"}
    with serve(tmp_path) as base, page() as pg:
        outside = _guarded(pg, base)
        pg.goto(f"{base}/feature/{dead}.html")
        assert "Never fired" in pg.locator("#never-fired").inner_text()
        assert pg.locator("#histogram").count() == 0 and pg.locator(".ex").count() == 0
        assert pg.locator(".promoted .ltok").count() == len(art.summary(dead)["promoted"])
        pg.goto(f"{base}/{index.name}")
        assert _data(pg, "#features tbody tr", "id") == [str(dead), str(fired[0])]
        _clean(pg, base, outside)


def test_default_selection_and_pages_are_self_contained(art, fired, tmp_path):
    build_dashboards(art.path, tmp_path, config=DashboardConfig(max_features=3))
    assert sorted(p.name for p in (tmp_path / "feature").iterdir()) == sorted(f"{i}.html" for i in fired[:3])
    for path in [tmp_path / "index.html", *(tmp_path / "feature").iterdir()]:
        text = path.read_text()
        assert '<link rel="icon" href="data:,">' in text
        assert not re.search(r"\b(src|srcset)=", text), path.name
        hrefs = re.findall(r'href="([^"]*)"', text)
        assert all(h == "data:," or not re.match(r"[a-z][a-z0-9+.-]*:|//", h) for h in hrefs), hrefs
        assert "http://" not in text and "https://" not in text


def test_bad_input(art, tmp_path):
    with pytest.raises(MechscopeError, match=r"feature 99 is not in .*0\.\.16"):
        build_dashboards(art, tmp_path, features=[99])
    with pytest.raises(MechscopeError, match="is not in"):
        build_dashboards(art, tmp_path, notes={-1: FeatureNotes("x")})
    with pytest.raises(MechscopeError, match="not relative"):
        build_dashboards(art, tmp_path, notes={0: FeatureNotes("x", links={"s": "https://example.com"})})
    with pytest.raises(MechscopeError, match="max_features"):
        build_dashboards(art, tmp_path, config=DashboardConfig(max_features=-1))
    assert not (tmp_path / "index.html").exists() and not (tmp_path / "feature").exists()
    with pytest.raises(MechscopeError, match="not a feature artifact"):
        build_dashboards(tmp_path, tmp_path / "out")
