"""The Parquet tables of a feature-statistics artifact (see :mod:`mechscope.features.stats`)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .._fs import atomic_write_bytes
from ..models import HookedModel

EXAMPLES_ROW_GROUP = 8192
"""Rows per Parquet row group of ``examples.parquet``: rows are sorted by feature, so reading one
feature's examples (a dashboard or a served feature page) decodes one small group, not ~1M rows."""


def _write(table: pa.Table, path: Path, row_group_size: int | None = None) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    atomic_write_bytes(path, buf.getvalue())


def write_tables(st: Any, model: HookedModel, path: Path) -> None:
    """``features``, ``examples``, ``histogram`` and ``cooccurrence`` tables."""
    from .stats import BINS

    d = st.counts.shape[0]

    strings: dict[int, str] = {}  # each id decoded once

    def one(i: int) -> str:
        if i not in strings:
            strings[i] = str(i) if model.tokenizer is None else str(model.to_string(torch.tensor([i])))
        return strings[i]

    def decode(ids: list[int]) -> list[str]:  # token strings, or ids for models without a tokenizer
        return [one(int(i)) for i in ids]

    cooc = st.cooc.clone()
    cooc.fill_diagonal_(0)
    k = min(st.config.cooccurrence_top, max(d - 1, 1))
    co_counts, co_ids = cooc.topk(k, dim=1)
    _write(
        pa.table({
            "feature": list(range(d)),
            "density": (st.counts.double() / max(st.n_tokens - st.n_skipped, 1)).tolist(),
            "n_active": st.counts.tolist(),
            "mean_activation": (st.sums / st.counts.clamp_min(1)).tolist(),
            "max_activation": st.top_vals[:, 0].tolist(),
            "promoted": [decode(row) for row in st.logit_top.tolist()],
            "suppressed": [decode(row) for row in st.logit_bottom.tolist()],
            "cooccurring": co_ids.tolist(),
            "cooccurring_counts": co_counts.tolist(),
            "quantile_edges": [_edges(st, i) for i in range(d)],
            "cosine_neighbours": st.cos_ids.tolist(),
            "cosine_values": st.cos_vals.tolist(),
        }),
        path / "features.parquet",
    )  # fmt: skip
    _write(_examples(st, decode), path / "examples.parquet", EXAMPLES_ROW_GROUP)
    f, b = st.hist.nonzero(as_tuple=True)  # columns built as arrays: millions of rows stay cheap
    edges = (10 ** BINS.double()).numpy()
    _write(
        pa.table({
            "feature": f.numpy(), "bin_low": edges[b.numpy()], "bin_high": edges[b.numpy() + 1],
            "count": st.hist[f, b].numpy(),
        }),
        path / "histogram.parquet",
    )  # fmt: skip
    i, j = cooc.nonzero(as_tuple=True)
    _write(pa.table({"feature": i.numpy(), "other": j.numpy(), "count": cooc[i, j].numpy()}),
           path / "cooccurrence.parquet")  # fmt: skip
    _random_tables(st, decode, path)


def _edges(st: Any, i: int) -> list[float]:
    """Activation edges of latent ``i``'s equal-count quantile bins (from its reservoir)."""
    vals = st.res_vals[i][st.res_locs[i] >= 0].sort().values
    if len(vals) == 0:
        return []
    chunks = [c for c in vals.tensor_split(st.config.n_quantiles) if len(c)]
    return [float(c[0]) for c in chunks] + [float(vals[-1])]


def _window(st: Any, loc: int) -> tuple[int, int, int, int]:
    """``(context, position, lo, hi)``: the token window around flat token ``loc``, clipped to its context."""
    ctx, w = st.tokens.shape[1], st.config.window
    c, p = divmod(loc, ctx)
    return c, p, max(0, p - w), min(ctx, p + w + 1)


def _random_tables(st: Any, decode: Any, path: Path) -> None:
    held = (st.rand_locs >= 0).nonzero().flatten().tolist()
    rows: dict[str, list[Any]] = {"example": [], "context": [], "position": [], "tokens": [], "target": []}
    acts: dict[str, list[Any]] = {"example": [], "feature": [], "index": [], "activation": []}
    for e, r in enumerate(held):
        c, p, lo, hi = _window(st, int(st.rand_locs[r]))
        for key, value in zip(rows, (e, c, p, decode(st.tokens[c, lo:hi].tolist()), p - lo)):
            rows[key].append(value)
        win = st.rand_win[r, lo - (p - st.config.window) :][: hi - lo]  # [hi - lo, d]
        for j, f in win.nonzero().tolist():
            for key, value in zip(acts, (e, f, j, float(win[j, f]))):
                acts[key].append(value)
    _write(pa.table(rows), path / "random.parquet")
    schema = pa.schema([("example", pa.int64()), ("feature", pa.int64()), ("index", pa.int64()),
                        ("activation", pa.float64())])  # fmt: skip
    _write(pa.table(acts, schema=schema), path / "random_activations.parquet")


def _examples(st: Any, decode: Any) -> pa.Table:
    cfg = st.config
    rows: dict[str, list[Any]] = {k: [] for k in ("feature", "kind", "quantile", "rank", "activation",
                                                  "context", "position", "tokens", "target", "activations")}  # fmt: skip

    def add(feature: int, kind: str, quantile: int, rank: int, act: float, loc: int, win: Any) -> None:
        c, p, lo, hi = _window(st, loc)
        acts = win[lo - (p - cfg.window) :][: hi - lo].tolist()
        for key, value in zip(
            rows,
            (feature, kind, quantile, rank, act, c, p, decode(st.tokens[c, lo:hi].tolist()), p - lo, acts),
        ):
            rows[key].append(value)

    for i in range(st.counts.shape[0]):
        for r, (v, loc) in enumerate(zip(st.top_vals[i].tolist(), st.top_locs[i].tolist())):
            if loc >= 0 and v > 0:
                add(i, "top", -1, r, v, loc, st.top_win[i, r])
        held = st.res_locs[i] >= 0
        vals, locs, wins = st.res_vals[i][held], st.res_locs[i][held], st.res_win[i][held]
        if len(vals) == 0:
            continue
        order = vals.argsort()
        for q, chunk in enumerate(order.tensor_split(cfg.n_quantiles)):  # equal-count bins
            for r, j in enumerate(
                chunk[:: max(1, len(chunk) // max(cfg.per_quantile, 1))][: cfg.per_quantile].tolist()
            ):
                add(i, "quantile", q, r, float(vals[j]), int(locs[j]), wins[j])
    return pa.table(rows)
