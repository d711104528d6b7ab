"""Token streams: every document source, packing under each BOS policy, sharding."""

from __future__ import annotations

import json

import pytest
import torch

import tiny
from mechscope.data import (
    DataSourceError,
    TokenStream,
    hf_dataset_documents,
    jsonl_documents,
    open_documents,
    pack,
    parquet_documents,
    stdlib_documents,
    text_documents,
)
from mechscope.data.documents import stdlib_files
from mechscope.errors import MechscopeError

DOCS = ["alpha beta", "gamma", "", "delta epsilon zeta", "eta theta iota kappa"]


class CharTok:
    """A hand-checkable tokenizer: one id per character (``ord``), specials 1 (BOS) and 2 (EOS)."""

    def __init__(self, bos: int | None = 1, eos: int | None = 2) -> None:
        self.bos_token_id, self.eos_token_id = bos, eos

    def __call__(self, texts, add_special_tokens=False, verbose=False):
        assert not add_special_tokens
        return {"input_ids": [[ord(c) for c in t] for t in texts]}


@pytest.fixture(scope="module")
def tok():
    return tiny.tiny_tokenizer()


def _chunks(stream: list[int], n: int) -> list[list[int]]:
    return [stream[i : i + n] for i in range(0, len(stream) - n + 1, n)]


# ------------------------------------------------------------------ packing


def test_pack_bos_policy_by_hand():
    ids = [[ord(c) for c in d] for d in DOCS if d]
    stream = [t for x in ids for t in (*x, 2)]  # documents separated by EOS
    got = list(pack(DOCS, CharTok(), 8, "bos"))
    assert got == [[1, *c] for c in _chunks(stream, 7)]
    assert all(len(c) == 8 and c[0] == 1 for c in got)


def test_pack_doc_policy_by_hand():
    ids = [[ord(c) for c in d] for d in DOCS if d]
    stream = [t for x in ids for t in (1, *x, 2)]
    assert list(pack(DOCS, CharTok(), 8, "doc")) == _chunks(stream, 8)
    # BOS == EOS: the BOS alone separates documents (no doubled separator)
    stream_same = [t for x in ids for t in (7, *x)]
    assert list(pack(DOCS, CharTok(bos=7, eos=7), 8, "doc")) == _chunks(stream_same, 8)


def test_pack_none_policy_and_no_eos():
    ids = [[ord(c) for c in d] for d in DOCS if d]
    assert list(pack(DOCS, CharTok(), 5, "none")) == _chunks([t for x in ids for t in (*x, 2)], 5)
    no_eos = CharTok(bos=None, eos=None)
    assert list(pack(DOCS, no_eos, 5, "none")) == _chunks([t for x in ids for t in x], 5)
    with pytest.raises(MechscopeError, match="needs a BOS token"):
        list(pack(DOCS, no_eos, 5, "bos"))
    with pytest.raises(MechscopeError, match="BOS policy must be one of"):
        list(pack(DOCS, CharTok(), 5, "always"))


def test_pack_real_tokenizer_by_hand(tok):
    """Against the tokenizer applied document by document (no batching, no packing)."""
    texts = [t for t in (list(stdlib_documents())[:4]) if t]
    stream: list[int] = []
    for t in texts:
        stream += [*tok(t, add_special_tokens=False)["input_ids"], tok.eos_token_id]
    got = list(pack(texts, tok, 32, "bos"))
    assert got == [[tok.bos_token_id, *c] for c in _chunks(stream, 31)]
    doc_stream = [
        t
        for x in texts
        for t in (tok.bos_token_id, *tok(x, add_special_tokens=False)["input_ids"], tok.eos_token_id)
    ]
    assert list(pack(texts, tok, 32, "doc")) == _chunks(doc_stream, 32)


# ------------------------------------------------------------------ sources


def test_text_file_and_directory(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.md").write_text("third")
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
    assert list(text_documents(tmp_path)) == ["first", "second", "third"]
    assert list(text_documents(tmp_path / "b.txt")) == ["second"]
    assert list(open_documents(tmp_path)) == ["first", "second", "third"]
    with pytest.raises(DataSourceError, match="does not exist"):
        text_documents(tmp_path / "nope")
    with pytest.raises(DataSourceError, match="no files ending"):
        text_documents(tmp_path, suffixes=(".rst",))


def test_jsonl(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps({"body": d, "id": i}) for i, d in enumerate(DOCS)) + "\n\n")
    assert list(jsonl_documents(p, field="body")) == DOCS
    assert list(open_documents(p, field="body")) == DOCS
    with pytest.raises(DataSourceError, match=r"d.jsonl:1: no field 'text' \(found \['body', 'id'\]\)"):
        list(jsonl_documents(p))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(DataSourceError, match=r"bad\.jsonl:2: not valid JSON"):
        list(jsonl_documents(tmp_path / "bad.jsonl"))


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": DOCS, "n": list(range(len(DOCS)))}), p, row_group_size=2)
    assert list(parquet_documents(p, batch_rows=2)) == DOCS
    assert list(open_documents(p)) == DOCS
    with pytest.raises(DataSourceError, match="no column 'content'"):
        list(parquet_documents(p, column="content"))


def test_saved_hf_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": DOCS, "n": list(range(len(DOCS)))})
    ds.save_to_disk(tmp_path / "ds", num_shards=2)
    assert list(hf_dataset_documents(tmp_path / "ds")) == DOCS
    assert list(open_documents(tmp_path / "ds")) == DOCS
    dd = datasets.DatasetDict({"train": ds, "test": ds.select([3, 1])})
    dd.save_to_disk(tmp_path / "dd")
    assert list(open_documents(tmp_path / "dd", split="test")) == [DOCS[3], DOCS[1]]
    with pytest.raises(DataSourceError, match="choose one with split="):
        hf_dataset_documents(tmp_path / "dd")
    with pytest.raises(DataSourceError, match="no column 'body'"):
        list(hf_dataset_documents(tmp_path / "ds", column="body"))


def test_stdlib_corpus_is_deterministic_and_mixed():
    import pydoc_data.topics as topics

    docs = stdlib_documents()
    first = [d for _, d in zip(range(6), docs)]
    assert first == [d for _, d in zip(range(6), docs)]  # a second pass gives the same documents
    keys = sorted(topics.topics)
    files = stdlib_files()
    assert first[0::2] == [topics.topics[k] for k in keys[:3]]
    assert first[1::2] == [f.read_text(encoding="utf-8", errors="replace") for f in files[:3]]
    rel = [f.as_posix() for f in files]
    assert rel == sorted(rel) and not any("/site-packages/" in r or "/test/" in r for r in rel)
    assert len(files) > 300
    assert open_documents("stdlib").name == "stdlib"


# ------------------------------------------------------------------ the stream


def test_token_stream_shards_are_disjoint_and_complete(tok):
    stream = TokenStream(stdlib_documents(), tok, ctx_len=16)
    whole = stream.take(30)
    parts = {}
    for r in range(3):
        sh = stream.shard(r, 3)
        idx, rows = zip(*[(i, ids) for i, ids in sh.contexts(stop=30)])
        assert all(i % 3 == r for i in idx)
        parts.update(dict(zip(idx, rows)))
    assert sorted(parts) == list(range(30))
    assert torch.equal(torch.tensor([parts[i] for i in range(30)]), whole)
    # a shard of a shard is a shard of the product world
    assert torch.equal(stream.shard(1, 2).shard(1, 2).take(3), whole[[3, 7, 11]])
    # batches with start/stop give the same contexts in index order
    got = list(stream.shard(1, 2).batches(4, start=5, stop=20))
    assert [b[0].tolist() for b in got] == [[5, 7, 9, 11], [13, 15, 17, 19]]
    assert torch.equal(got[1][1], whole[[13, 15, 17, 19]])
    assert torch.equal(next(iter(stream)), whole[0])
    with pytest.raises(MechscopeError, match="outside"):
        stream.shard(2, 2)
    with pytest.raises(MechscopeError, match="re-iterable documents"):
        TokenStream((d for d in DOCS), tok, ctx_len=4)


def test_token_stream_uses_the_model_tokenizer(tmp_path):
    import mechscope

    model = mechscope.load_model(tiny.build("llama-gqa", tmp_path / "m"), device="cpu")
    stream = TokenStream(DOCS, model, ctx_len=4, bos="none")
    assert stream.tokenizer is model.tokenizer
    assert stream.describe()["bos_token_id"] == model.tokenizer.bos_token_id
    with pytest.raises(MechscopeError, match="holds only"):
        stream.take(10_000)
