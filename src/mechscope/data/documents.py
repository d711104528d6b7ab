"""Documents: where text comes from, as re-iterable, deterministic sequences of strings.

Every reader returns a :class:`Documents`: iterating it twice gives the same documents in
the same order (files are visited in sorted order, rows in file order), which is what
makes token streams resumable and shardable. Readers stream: a Parquet file or a saved
dataset is read one record batch at a time, never loaded whole.

Sources:

* text: one file (one document) or a directory (every file with a listed suffix, sorted by
  relative path, one document each);
* JSONL: one document per line, the string in field ``field`` (default ``"text"``);
* Parquet: one document per row of column ``column`` (default ``"text"``), via pyarrow;
* a saved Hugging Face dataset (``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
  output): its ``.arrow`` files are read with pyarrow directly, so the ``datasets``
  package is not needed to read one;
* ``"stdlib"``: the offline default corpus (:func:`stdlib_documents`).
"""

from __future__ import annotations

import json
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MechscopeError

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py")
"""Files a text directory contributes by default."""

_STDLIB_SKIP = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}


class DataSourceError(MechscopeError):
    """A document source is missing, unreadable or has no text where asked."""


@dataclass(frozen=True)
class Documents:
    """A named, re-iterable sequence of documents (strings)."""

    name: str
    """What the documents are, e.g. ``"jsonl:/data/web.jsonl[text]"`` (recorded in store manifests)."""
    factory: Callable[[], Iterator[str]]
    """Starts a fresh pass over the documents."""

    def __iter__(self) -> Iterator[str]:
        return self.factory()


def _require(path: Path) -> Path:
    if not path.exists():
        raise DataSourceError(f"{path} does not exist")
    return path


def text_documents(path: str | Path, suffixes: tuple[str, ...] = TEXT_SUFFIXES) -> Documents:
    """A text file (one document) or a directory of them (sorted; files with ``suffixes``)."""
    path = _require(Path(path))
    if path.is_file():
        files = [path]
    else:
        files = sorted(
            (p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        if not files:
            raise DataSourceError(f"{path} holds no files ending in {', '.join(suffixes)}")

    def gen() -> Iterator[str]:
        for f in files:
            yield f.read_text(encoding="utf-8", errors="replace")

    return Documents(f"text:{path}", gen)


def jsonl_documents(path: str | Path, field: str = "text") -> Documents:
    """One document per line of a JSONL file (or of every ``*.jsonl`` in a directory, sorted)."""
    path = _require(Path(path))
    files = [path] if path.is_file() else sorted(path.rglob("*.jsonl"))
    if not files:
        raise DataSourceError(f"{path} holds no .jsonl files")

    def gen() -> Iterator[str]:
        for f in files:
            with open(f, encoding="utf-8") as fh:
                for i, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataSourceError(f"{f}:{i}: not valid JSON ({e.msg})") from None
                    yield _field(record, field, f"{f}:{i}")

    return Documents(f"jsonl:{path}[{field}]", gen)


def _field(record: Any, field: str, where: str) -> str:
    if not isinstance(record, dict) or field not in record:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise DataSourceError(f"{where}: no field {field!r} (found {keys}); pass the text field's name")
    value = record[field]
    if not isinstance(value, str):
        raise DataSourceError(f"{where}: field {field!r} is {type(value).__name__}, not a string")
    return value


def _arrow_column(batches: Iterator[Any], column: str, where: str) -> Iterator[str]:
    """The strings of ``column`` across pyarrow record batches (nulls skipped)."""
    for batch in batches:
        if column not in batch.schema.names:
            raise DataSourceError(f"{where}: no column {column!r} (columns: {batch.schema.names})")
        for value in batch.column(column).to_pylist():
            if value is None:
                continue
            if not isinstance(value, str):
                raise DataSourceError(f"{where}: column {column!r} holds {type(value).__name__}, not strings")
            yield value


def parquet_documents(path: str | Path, column: str = "text", batch_rows: int = 1024) -> Documents:
    """One document per row of ``column`` in a Parquet file (or every ``*.parquet`` in a directory)."""
    import pyarrow.parquet as pq

    path = _require(Path(path))
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    if not files:
        raise DataSourceError(f"{path} holds no .parquet files")

    def gen() -> Iterator[str]:
        for f in files:
            pf = pq.ParquetFile(f)
            if column not in pf.schema_arrow.names:
                raise DataSourceError(f"{f}: no column {column!r} (columns: {pf.schema_arrow.names})")
            yield from _arrow_column(pf.iter_batches(batch_size=batch_rows, columns=[column]), column, str(f))

    return Documents(f"parquet:{path}[{column}]", gen)


def is_saved_dataset(path: str | Path) -> bool:
    """Whether ``path`` is a ``save_to_disk`` directory (a Dataset or a DatasetDict)."""
    path = Path(path)
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def hf_dataset_documents(path: str | Path, column: str = "text", split: str | None = None) -> Documents:
    """Documents of a saved HF dataset (``save_to_disk`` output), read from its arrow files.

    A ``DatasetDict`` directory needs ``split`` unless it has exactly one split. The files
    are read in the order ``state.json`` lists them (the dataset's own row order).
    """
    path = _require(Path(path))
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        if split is None:
            if len(splits) != 1:
                raise DataSourceError(f"{path} has splits {splits}; choose one with split=")
            split = splits[0]
        if split not in splits:
            raise DataSourceError(f"{path} has no split {split!r} (splits: {splits})")
        path = path / split
    if not (path / "state.json").is_file():
        raise DataSourceError(f"{path} is not a saved dataset (no state.json or dataset_dict.json)")
    state = json.loads((path / "state.json").read_text())
    files = [path / d["filename"] for d in state.get("_data_files", [])]
    for f in files:
        _require(f)

    def gen() -> Iterator[str]:
        import pyarrow as pa

        for f in files:
            with pa.memory_map(str(f)) as source:
                try:
                    reader = pa.ipc.open_stream(source)
                except pa.ArrowInvalid:
                    reader = pa.ipc.open_file(source)  # type: ignore[assignment]
                    batches: Iterator[Any] = (reader.get_batch(i) for i in range(reader.num_record_batches))
                else:
                    batches = iter(reader)
                yield from _arrow_column(batches, column, str(f))

    suffix = f":{split}" if split else ""
    return Documents(f"hf:{path}{suffix}[{column}]", gen)


def stdlib_files() -> list[Path]:
    """The standard library's ``.py`` sources, sorted by relative path (no tests, no site-packages)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(
        (p for p in root.rglob("*.py") if not set(p.relative_to(root).parts[:-1]) & _STDLIB_SKIP),
        key=lambda p: p.relative_to(root).as_posix(),
    )


def stdlib_documents() -> Documents:
    """The offline default corpus: the stdlib's ``.py`` sources and ``pydoc_data.topics`` prose.

    Order (deterministic for a given Python build): the pydoc topics sorted by name are
    interleaved with the source files sorted by path (topic 0, file 0, topic 1, file 1, ...),
    then the remaining files, so any prefix of the stream mixes prose and code. Test
    directories and site-packages are left out. About 12 MB of text (3-4M tokens) on 3.11.
    """
    import pydoc_data.topics as topics_mod

    topics = [topics_mod.topics[k] for k in sorted(topics_mod.topics)]
    files = stdlib_files()

    def gen() -> Iterator[str]:
        for i in range(max(len(topics), len(files))):
            if i < len(topics):
                yield topics[i]
            if i < len(files):
                yield files[i].read_text(encoding="utf-8", errors="replace")

    return Documents("stdlib", gen)


def open_documents(source: str | Path, *, field: str = "text", split: str | None = None) -> Documents:
    """Documents from a source spec: ``"stdlib"``, or a path (kind from its suffix or contents).

    ``field`` names the JSONL field, Parquet column or dataset column holding the text.
    A prefix forces the kind: ``text:``, ``jsonl:``, ``parquet:``, ``hf:`` (e.g. ``text:notes.json``).
    """
    spec = str(source)
    if spec == "stdlib":
        return stdlib_documents()
    kind, _, rest = spec.partition(":")
    if kind in ("text", "jsonl", "parquet", "hf") and rest:
        spec = rest
    else:
        kind = ""
    path = _require(Path(spec))
    if not kind:
        if is_saved_dataset(path):
            kind = "hf"
        elif path.suffix == ".jsonl" or (path.is_dir() and any(path.rglob("*.jsonl"))):
            kind = "jsonl"
        elif path.suffix == ".parquet" or (path.is_dir() and any(path.rglob("*.parquet"))):
            kind = "parquet"
        else:
            kind = "text"
    if kind == "hf":
        return hf_dataset_documents(path, field, split)
    if kind == "jsonl":
        return jsonl_documents(path, field)
    if kind == "parquet":
        return parquet_documents(path, field)
    return text_documents(path)
