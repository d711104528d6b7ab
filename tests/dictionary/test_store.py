"""Activation store: harvest equals run_with_cache, masks, append, resume, corruption, memory bound."""

from __future__ import annotations

import json

import pytest
import torch

import mechscope
import tiny
from mechscope.data import TokenStream, stdlib_documents
from mechscope.dictionary.store import (
    CorruptShardError,
    DiskStore,
    MaskConfig,
    StoreError,
    StoreMismatchError,
    StreamingSource,
    harvest,
    stop_layer,
)
from mechscope.dictionary.store_mask import outlier_keep

CTX = 16
N_CTX = 24
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return mechscope.load_model(tiny.build("llama-gqa", tmp_path_factory.mktemp("m") / "m"), device="cpu")


@pytest.fixture(scope="module")
def stream(model):
    return TokenStream(stdlib_documents(), model, ctx_len=CTX)


def _run(model, stream, out, **kw):
    kw.setdefault("n_tokens", CTX * N_CTX)
    kw.setdefault("batch_size", 5)
    kw.setdefault("shard_tokens", 40)
    return harvest(model, stream, kw.pop("hooks", HOOKS), out, progress=False, **kw)


def _reference(model, tokens, hooks):
    """Activations straight from run_with_cache, ``{hook: [n_ctx, pos, d]}``."""
    _, cache = model.run_with_cache(tokens, names=hooks)
    return {h: cache[h].reshape(*tokens.shape, -1) for h in hooks}


def test_round_trip_equals_run_with_cache(model, stream, tmp_path):
    store = _run(model, stream, tmp_path / "s", mask=MaskConfig(bos=False))
    tokens = stream.take(N_CTX)
    ref = _reference(model, tokens, HOOKS)
    got = store.tensors(meta=True)
    assert store.n_tokens == N_CTX * CTX and store.n_shards > 3
    for h in HOOKS:
        assert store.d(h) == ref[h].shape[-1]
        assert torch.equal(got[h], ref[h].reshape(-1, store.d(h)))
    assert torch.equal(got["__context__"], torch.arange(N_CTX).repeat_interleave(CTX))
    assert torch.equal(got["__position__"], torch.arange(CTX, dtype=torch.int32).repeat(N_CTX))
    assert torch.equal(got["__token__"], tokens.reshape(-1).to(torch.int32))
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert (
        m["settings"]["hooks"] == HOOKS and m["settings"]["ctx_len"] == CTX and m["settings"]["bos"] == "bos"
    )
    assert m["contexts_done"] == N_CTX and sum(s["n_tokens"] for s in m["shards"]) == m["n_tokens"]
    assert all(len(s["sha256"]) == 64 for s in m["shards"]) and not (tmp_path / "s" / "progress").exists()
    # a shard ends at the first forward-batch boundary past shard_tokens: memory stays bounded
    assert all(s["n_tokens"] <= 40 + 5 * CTX for s in m["shards"])


def test_bf16_storage_and_float32_batches(model, stream, tmp_path):
    store = _run(model, stream, tmp_path / "s", dtype="bfloat16", mask=MaskConfig(bos=False))
    ref = _reference(model, stream.take(N_CTX), HOOKS[:1])[HOOKS[0]].reshape(-1, 64)
    assert store.dtype == torch.bfloat16
    assert torch.equal(store.tensors([HOOKS[0]])[HOOKS[0]], ref.to(torch.bfloat16))
    batch = next(store.batches(8, seed=0))
    assert all(v.dtype == torch.float32 for v in batch.values())


def test_forward_stops_at_the_deepest_hook(model, stream, tmp_path):
    assert stop_layer(model, ["blocks.2.hook_resid_pre"]) == 2
    assert stop_layer(model, ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]) == 2
    assert stop_layer(model, ["hook_embed"]) == 0
    assert stop_layer(model, ["ln_final.hook_normalized"]) == model.cfg.n_layers
    calls = []
    handles = [b.register_forward_hook(lambda *_a, i=i: calls.append(i)) for i, b in enumerate(model.blocks)]
    try:
        _run(model, stream, tmp_path / "s", hooks=["blocks.1.hook_resid_pre", "blocks.0.attn.hook_z"])
    finally:
        for h in handles:
            h.remove()
    assert set(calls) == {0}
    store = DiskStore(tmp_path / "s")
    assert store.d("blocks.0.attn.hook_z") == model.cfg.n_heads * model.cfg.d_head
    with pytest.raises(mechscope.errors.MechscopeError, match="not one vector per token"):
        _run(model, stream, tmp_path / "p", hooks=["blocks.0.attn.hook_pattern"])


def test_bos_and_special_masks(model, tmp_path):
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda"]
    stream = TokenStream([" ".join(words[i % 7 : i % 7 + 3]) for i in range(200)], model, ctx_len=CTX)
    tokens = stream.take(N_CTX)
    tok = model.tokenizer
    store = _run(model, stream, tmp_path / "bos")  # default: BOS masked
    keep = tokens != tok.bos_token_id
    assert not keep[:, 0].any() and keep[:, 1:].any()
    ref = _reference(model, tokens, HOOKS)
    got = store.tensors(meta=True)
    for h in HOOKS:
        assert torch.equal(got[h], ref[h][keep])
    assert store.n_tokens == int(keep.sum())
    special = _run(model, stream, tmp_path / "sp", mask=MaskConfig(special=True))
    keep_sp = ~torch.isin(tokens, torch.tensor(tok.all_special_ids))
    assert (tokens == tok.eos_token_id).any()  # documents end inside these contexts
    assert torch.equal(special.tensors()[HOOKS[1]], ref[HOOKS[1]][keep_sp])


def test_outlier_mask_by_hand():
    x = torch.ones(2, 5, 3)  # norms sqrt(3)
    x[0, 2] *= 10
    x[1, 4] *= 2.5
    x[1, 0] *= 100  # masked by the token mask: must not move the median
    keep = torch.ones(2, 5, dtype=torch.bool)
    keep[1, 0] = False
    other = torch.ones(2, 5, 4)
    other[1, 1] *= 4  # an outlier at the second hook only
    got = outlier_keep({"a": x, "b": other}, keep, 3.0)
    want = keep.clone()
    want[0, 2] = False
    want[1, 1] = False
    assert torch.equal(got, want)
    # factor 2 on "a" alone: row 1's median over its 4 kept tokens is sqrt(3) (the lower middle value)
    want2 = keep.clone()
    want2[0, 2] = False
    want2[1, 4] = False
    assert torch.equal(outlier_keep({"a": x}, keep, 2.0), want2)


def test_transcoder_pair_masked_identically(model, stream, tmp_path):
    pair = ["blocks.1.hook_mlp_in", "blocks.1.hook_mlp_out"]
    store = _run(model, stream, tmp_path / "tc", hooks=pair, mask=MaskConfig(outlier_factor=1.3))
    tokens = stream.take(N_CTX)
    ref = _reference(model, tokens, pair)
    base = tokens != model.tokenizer.bos_token_id
    keep = base.clone()
    for h in pair:  # hand computation: per-context median over the token-masked tokens, per hook
        norms = ref[h].norm(dim=-1)
        med = torch.stack([norms[i][base[i]].median() for i in range(N_CTX)])
        keep &= norms <= 1.3 * med[:, None]
    got = store.tensors(meta=True)
    assert 0 < store.n_tokens < int((tokens != model.tokenizer.bos_token_id).sum())
    for h in pair:  # same rows in both hooks: the same tokens, in the same order
        assert torch.allclose(got[h], ref[h][keep], atol=1e-6)
    ctx, pos = keep.nonzero(as_tuple=True)
    assert torch.equal(got["__context__"], ctx) and torch.equal(got["__position__"], pos.to(torch.int32))


def _same_store(a, b):
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    strip = lambda m: {k: v for k, v in m.items() if k not in ("created", "updated")}  # noqa: E731
    assert strip(ma).keys() == strip(mb).keys()
    for k in strip(ma):
        assert ma[k] == mb[k], k
    for s in ma["shards"]:
        assert (a / s["file"]).read_bytes() == (b / s["file"]).read_bytes()


def test_resume_after_interruption_equals_uninterrupted_run(model, stream, tmp_path):
    _run(model, stream, tmp_path / "full")
    written = []

    def crash(entry):
        written.append(entry["file"])
        if len(written) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(model, stream, tmp_path / "cut", on_shard=crash)
    assert (tmp_path / "cut" / "progress" / "rank-000.json").exists()
    assert DiskStore(tmp_path / "cut").n_shards == 0  # an unfinished segment is not visible to readers
    resumed = []
    _run(model, stream, tmp_path / "cut", on_shard=lambda e: resumed.append(e["file"]))
    assert resumed and resumed[0] not in written  # completed shards were kept, not redone
    _same_store(tmp_path / "full", tmp_path / "cut")
    again = []
    _run(model, stream, tmp_path / "cut", on_shard=lambda e: again.append(e))  # complete: nothing to do
    assert again == []


def test_append_extends_the_store(model, stream, tmp_path):
    _run(model, stream, tmp_path / "a", n_tokens=CTX * 10)
    store = _run(model, stream, tmp_path / "a", n_tokens=CTX * N_CTX)
    fresh = _run(model, stream, tmp_path / "b")
    assert store.manifest["contexts_done"] == N_CTX and len(store.manifest["segments"]) == 2
    a, b = store.tensors(meta=True), fresh.tensors(meta=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(hooks=HOOKS[:1]), "hooks"),
        (dict(mask=MaskConfig(special=True)), "masks"),
        (dict(dtype="float16"), "dtype"),
    ],
)
def test_append_with_other_settings_is_refused(model, stream, tmp_path, change, field):
    _run(model, stream, tmp_path / "a", n_tokens=CTX * 4)
    with pytest.raises(StoreMismatchError, match=f"{field}: store has"):
        _run(model, stream, tmp_path / "a", **change)


def test_other_stream_settings_are_refused(model, stream, tmp_path):
    _run(model, stream, tmp_path / "a", n_tokens=CTX * 4)
    other = TokenStream(stdlib_documents(), model, ctx_len=CTX, bos="doc")
    with pytest.raises(StoreMismatchError, match="bos: store has 'bos', asked 'doc'"):
        _run(model, other, tmp_path / "a")


@pytest.fixture
def small_store(model, stream, tmp_path):
    _run(model, stream, tmp_path / "s")
    return tmp_path / "s"


def _shard_path(root, i=1):
    return root / json.loads((root / "manifest.json").read_text())["shards"][i]["file"]


def test_flipped_bytes_named(small_store):
    path = _shard_path(small_store)
    data = bytearray(path.read_bytes())
    data[-7] ^= 0xFF  # inside the tensor data: header and size still fine
    path.write_bytes(bytes(data))
    store = DiskStore(small_store)
    with pytest.raises(CorruptShardError, match=f"{path.name}: sha256"):
        store.verify()
    with pytest.raises(CorruptShardError, match=path.name):
        for _ in zip(range(100), store.batches(16, seed=0)):
            pass
    assert DiskStore(small_store, verify=False).n_tokens == store.n_tokens


def test_truncated_and_missing_shards_named(small_store):
    trunc = _shard_path(small_store, 0)
    trunc.write_bytes(trunc.read_bytes()[:-100])
    gone = _shard_path(small_store, 2)
    gone.unlink()
    with pytest.raises(CorruptShardError) as err:
        DiskStore(small_store)
    msg = str(err.value)
    assert f"{trunc.name}: " in msg and "bytes on disk" in msg and f"{gone.name}: missing" in msg
    assert len(err.value.problems) == 2


def test_broken_header_named(small_store):
    path = _shard_path(small_store)
    data = bytearray(path.read_bytes())
    data[12] = ord("}")  # same size, unparsable header
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match=f"{path.name}: unreadable safetensors header"):
        DiskStore(small_store)


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match=r"no manifest\.json"):
        DiskStore(tmp_path)


def test_streaming_buffer_is_bounded_and_serves_every_row(model, stream, tmp_path):
    disk = _run(model, stream, tmp_path / "s")
    src = StreamingSource(model, stream, HOOKS, n_tokens=CTX * N_CTX, buffer_tokens=64, batch_size=3)
    batches = list(src.batches(8, seed=0))
    assert src.max_held <= 64 and src.max_staged <= 3 * CTX
    assert all(b[h].shape == (8, disk.d(h)) and b[h].dtype == torch.float32 for b in batches for h in HOOKS)
    served = torch.cat([b[HOOKS[0]] for b in batches])
    rows = disk.tensors()[HOOKS[0]]
    assert len(served) == disk.n_tokens // 8 * 8  # every row once, the last partial batch dropped
    key = lambda x: sorted(map(tuple, x.tolist()))  # noqa: E731
    assert set(key(served)) <= set(key(rows))
    assert key(torch.cat([b[HOOKS[0]] for b in StreamingSource(model, stream, HOOKS, n_tokens=CTX * N_CTX,
               buffer_tokens=64, batch_size=3).batches(8, seed=0)])) == key(served)  # fmt: skip
    again = list(src.batches(8, seed=0, start=3))
    assert all(torch.equal(a[HOOKS[1]], b[HOOKS[1]]) for a, b in zip(again, batches[3:]))
    with pytest.raises(mechscope.errors.MechscopeError, match="at least two batches"):
        src.batches(64, seed=0)


def test_streaming_ranks_are_disjoint(model, stream, tmp_path):
    from collections import Counter

    disk = _run(model, stream, tmp_path / "s")
    count = lambda x: Counter(map(tuple, x.tolist()))  # noqa: E731  (rows as a multiset)
    parts = []
    for r in range(2):
        src = StreamingSource(model, stream, HOOKS[:1], n_tokens=CTX * N_CTX, buffer_tokens=64, batch_size=2)
        parts.append(count(torch.cat([b[HOOKS[0]] for b in src.batches(8, seed=0, rank=r, world=2)])))
    both, total = parts[0] + parts[1], count(disk.tensors()[HOOKS[0]])
    assert sum(both.values()) > 0.8 * disk.n_tokens and not both - total  # disjoint parts of the rows


def test_run_harvest_from_jsonl(tmp_path, model):
    import dataclasses

    from mechscope._config_cli import field_docs
    from mechscope.pipeline.harvest import HarvestConfig, run_harvest

    assert set(field_docs(HarvestConfig)) == {f.name for f in dataclasses.fields(HarvestConfig)}
    src = tmp_path / "d.jsonl"
    src.write_text("\n".join(json.dumps({"body": f"line {i} of the notes, with words"}) for i in range(40)))
    model_dir = model.cfg.name
    said = []
    cfg = HarvestConfig(model=model_dir, hooks=("blocks.0.hook_mlp_out",), source=str(src), text_field="body",
                        ctx_len=8, n_tokens=64, batch_size=3, out=tmp_path / "acts", device="cpu",
                        progress_bar=False)  # fmt: skip
    store = run_harvest(cfg, progress=said.append)
    assert store.n_tokens == 8 * 7 and store.settings["source"] == f"jsonl:{src}[body]" and said
