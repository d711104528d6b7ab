"""``mechscope serve``: feature-index search and filters over a synthetic 10⁵-feature artifact.

What is measured
----------------
A synthetic feature-statistics artifact with the tables and column types that
``FeatureStats.save`` writes (``features``, ``examples``, ``histogram``, ``cooccurrence``,
``random``, ``random_activations``), plus ``explanations.json`` and ``scores.json`` for every
feature: ``--features`` features (10⁵) × ``--examples`` examples (100: half ``top``, half
``quantile``), windows of 17 tokens drawn from a 5,000-token vocabulary. It is built with
vectorised numpy/pyarrow, one row group per chunk of features.

The server app is driven in-process through Starlette's ``TestClient`` (Host
``127.0.0.1:8765``); each time is a whole request measured around ``client.get``, so it includes
the in-process HTTP plumbing and JSON encoding but no network. Each query runs ``--reps`` times
after a first call and the median is reported; the first (cold) call is reported separately: the
first query against the artifact builds its DuckDB index table (``features`` joined with the
explanations and scores), and the first ``token=`` query the top examples' target-token table.

Target: every warm query ≤ 200 ms.

Run: ``.venv/bin/python bench/bench_serve.py [--features 100000] [--examples 100]``; results go to
stdout and ``bench/results/serve.json``. The artifact is built under ``--dir`` (a temporary
directory by default) and reused when it is already there.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mechscope.features._tables import EXAMPLES_ROW_GROUP

WORDS = ("legal", "french", "number", "python", "quote", "bracket", "capital", "verb", "plural", "date",
         "name", "city", "code", "negation", "past", "tense", "email", "url", "chemistry", "music")  # fmt: skip


def vocabulary(n: int) -> list[str]:
    """``n`` distinct token strings (a few with leading spaces, like real BPE tokens)."""
    return [(" " if i % 3 == 0 else "") + f"t{i}" for i in range(n)]


def _lists(values: np.ndarray, width: int, item: pa.Array | None = None) -> pa.Array:
    """``[rows, width]`` values as a list array (``item``: the flat values, already an Arrow array)."""
    offsets = pa.array(np.arange(0, values.size + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, item if item is not None else pa.array(values.ravel()))


def _strings(ids: np.ndarray, vocab: pa.Array) -> pa.Array:
    """Token ids as a plain string array (what the writer produces), via a dictionary cast."""
    return pa.DictionaryArray.from_arrays(pa.array(ids.ravel().astype(np.int32)), vocab).cast(pa.string())


def _examples_chunk(lo: int, hi: int, n_examples: int, window: int, vocab: pa.Array,
                    rng: np.random.Generator) -> pa.Table:  # fmt: skip
    width, n_top = 2 * window + 1, n_examples // 2
    n = (hi - lo) * n_examples
    feature = np.repeat(np.arange(lo, hi, dtype=np.int64), n_examples)
    j = np.tile(np.arange(n_examples, dtype=np.int64), hi - lo)
    top = j < n_top
    ids = rng.integers(0, len(vocab), size=(n, width))
    acts = rng.random((n, width))
    peak = rng.random(n) * 10 + np.where(top, 5.0, 0.0)
    acts[:, window] = peak
    return pa.table({
        "feature": feature,
        "kind": pa.DictionaryArray.from_arrays(pa.array((~top).astype(np.int8)),
                                               pa.array(["top", "quantile"])).cast(pa.string()),
        "quantile": np.where(top, -1, (j - n_top) % 5),
        "rank": np.where(top, j, (j - n_top) // 5),
        "activation": peak,
        "context": rng.integers(0, 10_000, n),
        "position": rng.integers(0, 128, n),
        "tokens": _lists(ids, width, _strings(ids, vocab)),
        "target": np.full(n, window, dtype=np.int64),
        "activations": _lists(acts, width),
    })  # fmt: skip


def _features_table(n: int, vocab: pa.Array, rng: np.random.Generator) -> pa.Table:
    n_active = rng.integers(0, 50_000, n)
    edges = np.sort(rng.random((n, 6)) * 10, axis=1)
    return pa.table({
        "feature": np.arange(n, dtype=np.int64),
        "density": n_active / 1e6,
        "n_active": n_active,
        "mean_activation": rng.random(n) * 3,
        "max_activation": rng.random(n) * 15,
        "promoted": _lists(np.zeros((n, 10)), 10, _strings(rng.integers(0, len(vocab), (n, 10)), vocab)),
        "suppressed": _lists(np.zeros((n, 10)), 10, _strings(rng.integers(0, len(vocab), (n, 10)), vocab)),
        "cooccurring": _lists(rng.integers(0, n, (n, 5)), 5),
        "cooccurring_counts": _lists(rng.integers(0, 1000, (n, 5)), 5),
        "quantile_edges": _lists(edges, 6),
    })  # fmt: skip


def _small_tables(path: Path, n: int, window: int, vocab: pa.Array, rng: np.random.Generator) -> None:
    bins = np.logspace(-4, 2, 31)
    f, b = np.repeat(np.arange(n), 10), np.tile(np.arange(10, 20), n)
    pq.write_table(pa.table({"feature": f, "bin_low": bins[b], "bin_high": bins[b + 1],
                             "count": rng.integers(1, 100, f.size)}), path / "histogram.parquet")  # fmt: skip
    pq.write_table(pa.table({"feature": np.repeat(np.arange(n), 5), "other": rng.integers(0, n, n * 5),
                             "count": rng.integers(1, 100, n * 5)}), path / "cooccurrence.parquet")  # fmt: skip
    width, n_random = 2 * window + 1, 100
    ids = rng.integers(0, len(vocab), (n_random, width))
    pq.write_table(pa.table({"example": np.arange(n_random), "context": np.arange(n_random),
                             "position": np.full(n_random, window), "tokens": _lists(ids, width, _strings(ids, vocab)),
                             "target": np.full(n_random, window)}), path / "random.parquet")  # fmt: skip
    m = n_random * width * 20  # 20 active features per token
    pq.write_table(pa.table({"example": np.repeat(np.arange(n_random), width * 20),
                             "feature": rng.integers(0, n, m), "index": np.tile(np.repeat(np.arange(width), 20), n_random),
                             "activation": rng.random(m)}), path / "random_activations.parquet")  # fmt: skip


def _sidecars(path: Path, n: int, rng: np.random.Generator) -> None:
    words = rng.integers(0, len(WORDS), (n, 3))
    items = [{"feature": i, "text": " ".join(WORDS[w] for w in words[i]), "explainer": "synthetic",
              "settings": {}, "prompt": None, "pattern": None} for i in range(n)]  # fmt: skip
    head = {"schema_version": 1, "mechscope_version": "synthetic"}
    (path / "explanations.json").write_text(
        json.dumps({"kind": "mechscope-explanations", **head, "items": items})
    )
    values = rng.random((n, 2))
    scores = [{"feature": i, "scorer": s, "value": float(values[i, k]), "details": {}, "seed": 0, "prompts": [],
               "explanation_text": items[i]["text"]} for i in range(n) for k, s in enumerate(("detection", "fuzzing"))]  # fmt: skip
    (path / "scores.json").write_text(json.dumps({"kind": "mechscope-scores", **head, "items": scores}))


def write_synthetic(path: str | Path, n_features: int = 100_000, n_examples: int = 100, window: int = 8,
                    n_vocab: int = 5_000, seed: int = 0, sidecars: bool = True) -> Path:  # fmt: skip
    """Write a synthetic ``feature-stats`` artifact (see the module docstring) into ``path``; return it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = pa.array(vocabulary(n_vocab))
    pq.write_table(_features_table(n_features, vocab, rng), path / "features.parquet")
    # row groups as mechscope's own writer makes them (features/_tables.py: EXAMPLES_ROW_GROUP rows)
    chunk = max(1, EXAMPLES_ROW_GROUP // max(n_examples, 1))
    writer = None
    for lo in range(0, n_features, chunk):
        table = _examples_chunk(lo, min(n_features, lo + chunk), n_examples, window, vocab, rng)
        writer = writer or pq.ParquetWriter(path / "examples.parquet", table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()
    _small_tables(path, n_features, window, vocab, rng)
    if sidecars:
        _sidecars(path, n_features, rng)
    meta = {"kind": "feature-stats", "schema_version": 2, "mechscope_version": "synthetic",
            "model": "synthetic", "hook": "blocks.0.hook_resid_pre", "d_sae": n_features,
            "n_tokens": 1_000_000, "ctx": 128, "config": {"window": window, "top_k": n_examples // 2}}  # fmt: skip
    (path / "meta.json").write_text(json.dumps(meta))
    return path


QUERIES: dict[str, str] = {
    "first page, by id": "offset=0&limit=100",
    "sort by density desc": "sort=density&desc=1&limit=100",
    "sort by max_activation, page 500": "sort=max_activation&desc=1&offset=50000&limit=100",
    "sort by a score (detection)": "sort=detection&desc=1&limit=100",
    "explanation search (ILIKE)": "q=legal%20fr&limit=100",
    "density range": "min_density=0.01&max_density=0.02&sort=density&limit=100",
    "top-example token": "token=%20t42&limit=100",
    "token + search + density, sorted": "token=t43&q=code&min_density=0.005&sort=n_active&desc=1&limit=100",
}


def _time(client: Any, url: str, reps: int) -> tuple[float, list[float], dict[str, Any]]:
    t0 = time.perf_counter()
    r = client.get(url)
    cold = time.perf_counter() - t0
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        r = client.get(url)
        times.append(time.perf_counter() - t0)
    return cold, times, r.json()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--features", type=int, default=100_000)
    p.add_argument("--examples", type=int, default=100)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--dir", type=Path, default=None, help="where to build (and reuse) the artifact")
    a = p.parse_args()
    from starlette.testclient import TestClient

    from mechscope.server import app_for

    root = a.dir or Path(tempfile.mkdtemp(prefix="mechscope-bench-serve-"))
    art = root / f"synthetic-{a.features}x{a.examples}"
    t0 = time.perf_counter()
    if not (art / "meta.json").exists():
        write_synthetic(art, a.features, a.examples)
    build_s = time.perf_counter() - t0
    size_mib = sum(f.stat().st_size for f in art.iterdir()) / 2**20
    print(f"artifact {art}: {a.features} features x {a.examples} examples, {size_mib:.0f} MiB, "
          f"built in {build_s:.1f} s")  # fmt: skip
    client = TestClient(app_for([root]), base_url="http://127.0.0.1:8765")
    aid = art.name
    rows: dict[str, Any] = {}
    for name, query in QUERIES.items():
        cold, times, body = _time(client, f"/api/features/{aid}/index?{query}", a.reps)
        rows[name] = {"query": query, "cold_ms": cold * 1e3, "median_ms": statistics.median(times) * 1e3,
                      "max_ms": max(times) * 1e3, "total": body["total"]}  # fmt: skip
        print(f"{name:40s} cold {cold * 1e3:8.1f} ms   warm median {rows[name]['median_ms']:7.1f} ms"
              f"   max {rows[name]['max_ms']:7.1f} ms   ({body['total']} rows)")  # fmt: skip
    for name, url in {"feature page": f"/api/features/{aid}/feature/54321",
                      "feature page (another)": f"/api/features/{aid}/feature/99"}.items():  # fmt: skip
        cold, times, _ = _time(client, url, a.reps)
        rows[name] = {"query": url, "cold_ms": cold * 1e3, "median_ms": statistics.median(times) * 1e3,
                      "max_ms": max(times) * 1e3}  # fmt: skip
        print(f"{name:40s} cold {cold * 1e3:8.1f} ms   warm median {rows[name]['median_ms']:7.1f} ms")
    out = {"rows": rows, "features": a.features, "examples": a.examples, "artifact_mib": size_mib,
           "machine": platform.platform(), "command": " ".join(["bench/bench_serve.py", *sys.argv[1:]])}  # fmt: skip
    dest = Path(__file__).parent / "results" / "serve.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
