"""Token streams: documents from text, JSONL, Parquet, saved HF datasets or the stdlib corpus,
packed into fixed-length contexts with an explicit BOS policy (see ``docs/data.md``)."""

from .documents import (
    DataSourceError,
    Documents,
    hf_dataset_documents,
    jsonl_documents,
    open_documents,
    parquet_documents,
    stdlib_documents,
    text_documents,
)
from .stream import BOS_POLICIES, TokenStream, pack

__all__ = [
    "BOS_POLICIES",
    "DataSourceError",
    "Documents",
    "TokenStream",
    "hf_dataset_documents",
    "jsonl_documents",
    "open_documents",
    "pack",
    "parquet_documents",
    "stdlib_documents",
    "text_documents",
]
