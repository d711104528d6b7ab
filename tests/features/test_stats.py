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
from mechscope.features import StatsConfig, feature_stats


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
