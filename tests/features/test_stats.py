"""Feature statistics against the compiled features model, whose features are known exactly."""

from __future__ import annotations

import duckdb
import pyarrow.parquet as pq
import pytest
import torch

from known import true_features
from mechscope import load_model
from mechscope.dictionary.base import DictionaryConfig
from mechscope.dictionary.registry import make_dictionary
from mechscope.errors import MechscopeError
from mechscope.features import ArtifactError, FeatureArtifact, StatsConfig, feature_stats


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    model = load_model("toy/compiled_features", device="cpu")
    # a threshold below every real activation (>= 0.5): rounding noise stays 0
    dic, truth = true_features(b_enc=-1e-4)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 32, (16, 8), generator=gen) for _ in range(6)]
    cfg = StatsConfig(top_k=5, window=2, n_quantiles=4, per_quantile=2, reservoir=40, cooccurrence_top=3)
    stats = feature_stats(model, dic, iter(batches), cfg)
    out = stats.save(tmp_path_factory.mktemp("stats") / "features", model)
    tokens = torch.cat(batches).flatten()
    return stats, out, truth.feature_acts[tokens], tokens  # acts [n_tokens, d_sae]


def test_density_histogram_and_cooccurrence_are_exact(run):
    stats, out, acts, _ = run
    active = acts > 0
    assert stats.n_tokens == len(acts)
    torch.testing.assert_close(stats.counts, active.sum(0))
    assert torch.equal(stats.hist.sum(1), stats.counts)
    expected = active.long().T @ active.long()
    assert torch.equal(stats.cooc, expected)
    table = pq.read_table(out / "features.parquet").to_pydict()
    assert table["density"] == pytest.approx((active.double().mean(0)).tolist())
    assert table["max_activation"] == pytest.approx((acts.max(0).values - 1e-4).tolist(), abs=1e-5)


def test_examples_and_logit_effects(run):
    _, out, acts, tokens = run
    rows = pq.read_table(out / "examples.parquet").to_pylist()
    top = [r for r in rows if r["kind"] == "top"]
    assert top
    for r in top:
        flat = r["context"] * 8 + r["position"]
        assert acts[flat, r["feature"]] - 1e-4 == pytest.approx(r["activation"], abs=1e-5)
        assert r["tokens"][r["target"]] == str(int(tokens[flat]))  # the window is centred on the token
    by_feature: dict[int, dict[int, list[float]]] = {}
    for r in rows:
        if r["kind"] == "quantile":
            by_feature.setdefault(r["feature"], {}).setdefault(r["quantile"], []).append(r["activation"])
    for quantiles in by_feature.values():
        means = [sum(v) / len(v) for _, v in sorted(quantiles.items())]
        assert means == sorted(means)  # equal-count quantiles rise
    features = pq.read_table(out / "features.parquet").to_pydict()
    assert [p[0] for p in features["promoted"]] == [str(i) for i in range(16)]  # feature i promotes token i


def test_duckdb_queries_the_tables(run):
    _, out, acts, _ = run
    top = duckdb.sql(f"SELECT feature FROM '{out}/features.parquet' ORDER BY density DESC LIMIT 1").fetchall()
    assert top[0][0] == int((acts > 0).sum(0).argmax())
    n = duckdb.sql(f"SELECT count(*) FROM '{out}/examples.parquet' WHERE kind = 'top'").fetchall()
    assert n[0][0] > 0


def test_bad_input():
    model = load_model("toy/compiled_features", device="cpu")
    dic = make_dictionary(DictionaryConfig("relu", d_in=model.cfg.d_model, d_sae=4))
    with pytest.raises(MechscopeError, match="names no hook"):
        feature_stats(model, dic, iter([torch.zeros(1, 8, dtype=torch.long)]))


def test_example_windows_carry_each_tokens_activation(run):
    _, out, acts, tokens = run
    art = FeatureArtifact(out)
    n = 0
    for feature in range(art.d_sae):
        for ex in art.examples(feature):
            start = ex.context * 8 + ex.position - ex.target  # flat index of the window's first token
            want = acts[start : start + len(ex.tokens), feature] - 1e-4
            assert list(ex.activations) == pytest.approx(want.clamp_min(0).tolist(), abs=1e-5)
            assert list(ex.tokens) == [str(int(t)) for t in tokens[start : start + len(ex.tokens)]]
            assert ex.activations[ex.target] == pytest.approx(ex.activation)
            n += 1
    assert n > 50


def test_random_windows_hold_every_features_activations(run):
    stats, out, acts, _ = run
    art = FeatureArtifact(out)
    assert len(art.random(0)) == stats.config.n_random  # 768 tokens > 100 windows: the reservoir is full
    locs = set()
    for feature in (0, 3, 15):
        for ex in art.random(feature):
            start = ex.context * 8 + ex.position - ex.target
            locs.add(ex.context * 8 + ex.position)
            want = (acts[start : start + len(ex.tokens), feature] - 1e-4).clamp_min(0)
            assert list(ex.activations) == pytest.approx(want.tolist(), abs=1e-5)
    assert len(locs) == stats.config.n_random  # distinct tokens


def test_quantile_bins_hold_equal_counts(tmp_path):
    model = load_model("toy/compiled_features", device="cpu")
    dic, truth = true_features(b_enc=-1e-4)
    batches = [torch.randint(0, 32, (16, 8), generator=torch.Generator().manual_seed(i)) for i in range(3)]
    stats = feature_stats(model, dic, iter(batches), StatsConfig(n_quantiles=5, reservoir=400))
    acts = truth.feature_acts[torch.cat(batches).flatten()]
    art, checked = FeatureArtifact(stats.save(tmp_path / "q", model)), 0
    for feature in range(art.d_sae):
        n = int(stats.counts[feature])
        if n < stats.config.n_quantiles:
            continue
        assert n <= stats.config.reservoir  # the reservoir holds every active token: the bins are exact
        edges = art.summary(feature)["quantile_edges"]
        true = (acts[:, feature] - 1e-4)[acts[:, feature] > 0].sort().values
        # the bins split the sorted activations into n_quantiles runs whose sizes differ by at most 1
        sizes = [len(c) for c in true.tensor_split(stats.config.n_quantiles)]
        assert max(sizes) - min(sizes) <= 1
        assert edges[0] == pytest.approx(float(true[0]), abs=1e-5)
        assert edges[-1] == pytest.approx(float(true[-1]), abs=1e-5)
        starts = [float(c[0]) for c in true.tensor_split(stats.config.n_quantiles) if len(c)]
        assert edges[:-1] == pytest.approx(starts, abs=1e-5)
        checked += 1
    assert checked >= 8


def test_reservoir_keeps_the_last_writer_of_a_slot():
    from mechscope.features.stats import _last_per_slot

    key = torch.tensor([3, 1, 3, 3, 0])
    n = torch.tensor([10, 11, 12, 9, 13])
    assert _last_per_slot(key, n).tolist() == [False, True, True, False, True]


def test_artifact_errors(run, tmp_path):
    _, out, _, _ = run
    art = FeatureArtifact(out)
    with pytest.raises(ArtifactError, match="feature 99 is not in"):
        art.examples(99)
    with pytest.raises(ArtifactError, match=r"no meta\.json"):
        FeatureArtifact(tmp_path)
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "examples.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ArtifactError, match="cannot be read"):
        FeatureArtifact(broken).examples(0)
    (broken / "random.parquet").unlink()
    with pytest.raises(ArtifactError, match=r"partial: missing random\.parquet"):
        FeatureArtifact(broken)
    assert art.sql("SELECT count(*) FROM features").fetchall()[0][0] == 16


def test_skip_first_leaves_the_first_positions_out(tmp_path):
    model = load_model("toy/compiled_features", device="cpu")
    dic, truth = true_features(b_enc=-1e-4)
    batches = [torch.randint(0, 32, (16, 8), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    stats = feature_stats(model, dic, iter(batches), StatsConfig(skip_first=2))
    acts = truth.feature_acts[torch.cat(batches)][:, 2:]  # [n, ctx - 2, d]
    assert torch.equal(stats.counts, (acts > 0).sum((0, 1)))
    assert stats.n_skipped == 32 * 2
    art = FeatureArtifact(stats.save(tmp_path / "s", model, extra={"corpus": "x"}))
    assert art.meta["corpus"] == "x" and art.meta["n_skipped"] == 64
    assert art.column("density") == pytest.approx((acts > 0).double().mean((0, 1)).tolist())
    assert all(ex.position >= 2 for f in range(16) for ex in art.examples(f))


def test_decoder_neighbours_are_the_nearest_by_cosine(run):
    from mechscope.features.stats import decoder_neighbours

    w = torch.randn(50, 8, generator=torch.Generator().manual_seed(3))
    ids, vals = decoder_neighbours(w, 4, chunk=16)  # chunks smaller than the dictionary
    unit = torch.nn.functional.normalize(w, dim=1)
    sims = unit @ unit.T
    sims.fill_diagonal_(-2)
    want = sims.topk(4, dim=1)
    assert torch.equal(ids, want.indices) and torch.allclose(vals, want.values)
    _, out, _, _ = run
    table = pq.read_table(out / "features.parquet").to_pydict()
    assert all(i not in row and len(row) == 5 for i, row in enumerate(table["cosine_neighbours"]))


def test_saving_over_an_artifact_invalidates_it_until_the_new_one_is_whole(run, tmp_path, monkeypatch):
    import shutil

    from mechscope.features import _tables

    stats, out, _, _ = run
    copy = shutil.copytree(out, tmp_path / "copy")
    model = load_model("toy/compiled_features", device="cpu")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(_tables, "write_tables", broken)
    with pytest.raises(OSError, match="disk full"):
        stats.save(copy, model)
    with pytest.raises(ArtifactError, match="no meta"):
        FeatureArtifact(copy)  # not mistaken for a whole artifact
