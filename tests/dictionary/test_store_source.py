"""The trainer-facing batch protocol, on TensorSource and on a disk store with small shuffle windows."""

from __future__ import annotations

import itertools

import pytest
import torch

from mechscope.dictionary.store import ActivationSource, DiskStore, TensorSource
from mechscope.dictionary.store_disk import FORMAT, SCHEMA_VERSION, write_manifest, write_shard
from mechscope.errors import MechscopeError

N, B = 96, 8


def _data(n=N):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    x[:, 0] = torch.arange(n)  # column 0 identifies the row
    y = torch.randn(n, 3, generator=g)
    y[:, 0] = torch.arange(n) + 0.5  # aligned with x row by row
    return {"in": x, "out": y}


def _disk(tmp_path, data, sizes):
    """A disk store holding ``data`` split into shards of ``sizes`` rows (written by the store's own writer)."""
    shards, at = [], 0
    for i, n in enumerate(sizes):
        t = {h: v[at : at + n] for h, v in data.items()}
        t["__context__"] = torch.arange(at, at + n)
        t["__position__"] = torch.zeros(n, dtype=torch.int32)
        t["__token__"] = torch.zeros(n, dtype=torch.int32)
        shards.append(write_shard(tmp_path / "shards" / f"x-{i}.safetensors", t, {"format": FORMAT}))
        at += n
    settings = {"hooks": list(data), "d": {h: v.shape[1] for h, v in data.items()}, "dtype": "float32"}
    write_manifest(tmp_path, {"format": FORMAT, "schema_version": SCHEMA_VERSION, "settings": settings,
                              "shards": shards, "segments": [], "contexts_done": 0})  # fmt: skip
    return tmp_path


def _sources(tmp_path):
    data = _data()
    root = _disk(tmp_path, data, [10, 30, 7, 25, 24])
    return data, [TensorSource(data), DiskStore(root, window_tokens=20), DiskStore(root)]


def _ids(batches):
    return torch.cat([b["in"][:, 0] for b in batches]).long()


def test_protocol_shapes_and_metadata(tmp_path):
    _, sources = _sources(tmp_path)
    for src in sources:
        assert isinstance(src, ActivationSource)
        assert src.n_tokens == N and src.d("in") == 5 and src.d("out") == 3 and src.hooks == ("in", "out")
        b = next(src.batches(B, seed=0))
        assert b["in"].shape == (B, 5) and b["out"].shape == (B, 3) and b["in"].dtype == torch.float32
        assert set(next(src.batches(B, seed=0, hooks=["out"]))) == {"out"}


def test_each_epoch_is_a_permutation_and_rows_stay_aligned(tmp_path):
    data, sources = _sources(tmp_path)
    for src in sources:
        batches = list(itertools.islice(src.batches(B, seed=3), 3 * N // B))  # three epochs
        ids = _ids(batches)
        for e in range(3):
            assert sorted(ids[e * N : (e + 1) * N].tolist()) == list(range(N))
        assert not torch.equal(ids[:N], ids[N : 2 * N])  # reshuffled each epoch
        for b in batches:
            rows = b["in"][:, 0].long()
            assert torch.equal(b["in"], data["in"][rows]) and torch.equal(b["out"], data["out"][rows])


def test_wrap_around_mid_batch(tmp_path):
    _, sources = _sources(tmp_path)
    for src in sources:
        ids = _ids(itertools.islice(src.batches(10, seed=1), 20))  # 200 rows: batches straddle epochs
        assert sorted(ids[:N].tolist()) == list(range(N)) and sorted(ids[N : 2 * N].tolist()) == list(
            range(N)
        )


def test_deterministic_seeds_and_start(tmp_path):
    _, sources = _sources(tmp_path)
    for src in sources:
        first = list(itertools.islice(src.batches(B, seed=7), 30))
        again = list(itertools.islice(src.batches(B, seed=7), 30))
        other = list(itertools.islice(src.batches(B, seed=8), 30))
        assert torch.equal(_ids(first), _ids(again)) and not torch.equal(_ids(first), _ids(other))
        for start in (1, 5, 12, 25):  # inside the first window, later windows, later epochs
            resumed = list(itertools.islice(src.batches(B, seed=7, start=start), 30 - start))
            assert torch.equal(_ids(resumed), _ids(first[start:])), start


def test_ranks_split_every_global_batch(tmp_path):
    _, sources = _sources(tmp_path)
    for src in sources:
        glob = list(itertools.islice(src.batches(B, seed=2), 15))
        parts = [list(itertools.islice(src.batches(B, seed=2, rank=r, world=4), 15)) for r in range(4)]
        for i, g in enumerate(glob):
            for r in range(4):
                assert torch.equal(parts[r][i]["in"], g["in"][r::4]) and parts[r][i]["out"].shape == (2, 3)
        with pytest.raises(MechscopeError, match="divisible by the world size"):
            src.batches(10, seed=0, world=4)
        with pytest.raises(MechscopeError, match="not in this source"):
            src.batches(8, seed=0, hooks=["nope"])


def test_disk_window_bounds_memory(tmp_path):
    data = _data()
    store = DiskStore(_disk(tmp_path, data, [10, 30, 7, 25, 24]), window_tokens=20)
    loaded = []
    real = store.shard
    store.shard = lambda i, hooks=None, meta=False: loaded.append(i) or real(i, hooks, meta=meta)  # type: ignore[method-assign]
    list(itertools.islice(store.batches(B, seed=0), N // B))
    assert sorted(loaded) == list(range(5))  # every shard read once per epoch
    loaded.clear()
    list(itertools.islice(store.batches(B, seed=0, start=N // B - 1), 1))  # last batch of epoch 0
    assert len(loaded) < 5  # earlier windows skipped without reading them


def test_tensor_source_errors():
    with pytest.raises(MechscopeError, match="same number of rows"):
        TensorSource({"a": torch.zeros(3, 2), "b": torch.zeros(4, 2)})
    with pytest.raises(MechscopeError, match=r"\[n, d\]"):
        TensorSource({"a": torch.zeros(3)})
