"""The feature index and feature pages of a ``feature-stats`` artifact, queried with DuckDB.

Per artifact, built on first use and rebuilt when a file it read changes (modification time
and size):

1. an in-memory DuckDB table ``idx``: the scalar columns of ``features.parquet`` (``feature``,
   ``density``, ``n_active``, ``mean_activation``, ``max_activation``), left-joined with the
   explanation text of ``explanations.json`` and one column per scorer of ``scores.json`` (the
   last score of each feature and scorer). 10⁵ features are a few MB;
2. lazily, on the first ``token=`` filter, a table ``tok(token, feature)``: the target token of
   every ``top`` example in ``examples.parquet``, distinct and sorted by token so that DuckDB's
   zone maps make a lookup a short scan.

A page of the index (:meth:`FeatureTables.index`) filters and sorts ``idx`` in SQL, with every
value from the request bound as a parameter; sort columns come from a fixed list. One feature
(:meth:`FeatureTables.feature`) is read from the Parquet files with ``WHERE feature = ?`` (row
groups are skipped by their statistics), so the whole dictionary is never loaded or sent.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import Artifact, BadRequest, Malformed, NotFound, read_json

SCALARS = ("feature", "density", "n_active", "mean_activation", "max_activation")
"""Columns of ``features.parquet`` in the index."""
MAX_LIMIT = 500
"""Largest page of the index."""
MAX_EXAMPLES = 500
"""Most examples of one feature returned."""
SIDECARS = ("features.parquet", "examples.parquet", "explanations.json", "scores.json", "cards.json")
"""Files whose change rebuilds an artifact's tables."""
_SCORER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,40}$")


@dataclass(frozen=True)
class IndexQuery:
    """One page of the feature index: filters, order and window."""

    offset: int = 0
    """First row of the page, after filtering and sorting."""
    limit: int = 100
    """Rows in the page (1 to ``MAX_LIMIT``)."""
    sort: str = "feature"
    """Sort column: ``feature`` (or ``id``), ``density``, ``n_active``, ``mean_activation``,
    ``max_activation`` or a scorer's name (e.g. ``detection``); ties by feature id."""
    desc: bool = False
    """Sort descending (missing values last either way)."""
    q: str | None = None
    """Case-insensitive substring of the explanation (``ILIKE``; ``%`` and ``_`` match themselves)."""
    token: str | None = None
    """Only features with a top example whose target token is exactly this string."""
    min_density: float | None = None
    """Only features with at least this density."""
    max_density: float | None = None
    """Only features with at most this density."""


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn any reader error on ``path`` into :class:`Malformed` naming it."""
    import duckdb
    import pyarrow as pa

    try:
        yield
    except (duckdb.Error, pa.ArrowException, OSError, ValueError, KeyError, TypeError) as e:
        raise Malformed(f"{path} cannot be read: {str(e).splitlines()[0]}") from None


def _rows(cursor: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _fields(item: dict[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """``item`` cut to ``keys`` (the prompts stored with explanations and scores stay on disk)."""
    return None if item is None else {k: item.get(k) for k in keys}


class FeatureTables:
    """Cached DuckDB tables of one feature artifact (see the module docstring)."""

    def __init__(self, art: Artifact) -> None:
        self.art = art
        self._lock = threading.Lock()
        self._con: Any = None
        self._stamp: tuple[Any, ...] | None = None
        self._tokens = False
        self.scorers: list[str] = []
        self.explanations: dict[int, dict[str, Any]] = {}
        self.scores: dict[int, list[dict[str, Any]]] = {}
        self.cards: dict[str, Any] = {}

    def _current(self) -> tuple[Any, ...]:
        stamp: list[tuple[int, int] | None] = []
        for name in SIDECARS:
            try:
                st = (self.art.path / name).stat()
                stamp.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamp.append(None)
        return tuple(stamp)

    def cursor(self, tokens: bool = False) -> Any:
        """A DuckDB cursor over the current tables (built or rebuilt first when needed)."""
        stamp = self._current()
        with self._lock:
            if self._con is None or stamp != self._stamp:
                self._build()
                self._stamp, self._tokens = stamp, False
            if tokens and not self._tokens:
                self._build_tokens()
                self._tokens = True
            return self._con.cursor()

    def _items(self, name: str, kind: str) -> list[tuple[int, dict[str, Any]]]:
        path = self.art.file(name, required=False)
        if path is None:
            return []
        doc = read_json(path, kind)
        if not isinstance(doc, dict) or doc.get("kind") != kind or not isinstance(doc.get("items"), list):
            raise Malformed(f"{path} is not a {kind!r} file with an 'items' list")
        out = []
        for j, item in enumerate(doc["items"]):
            if not isinstance(item, dict) or not isinstance(item.get("feature"), int):
                raise Malformed(f"{path}: item {j} has no integer 'feature'")
            out.append((int(item["feature"]), item))
        return out

    def _read_sidecars(self) -> None:
        self.explanations, self.scores = {}, {}
        for f, item in self._items("explanations.json", "mechscope-explanations"):
            if not isinstance(item.get("text"), str):
                raise Malformed(
                    f"{self.art.path / 'explanations.json'}: feature {f}'s item has no string 'text'"
                )
            self.explanations[f] = item
        for f, item in self._items("scores.json", "mechscope-scores"):
            if not isinstance(item.get("scorer"), str) or not isinstance(item.get("value"), int | float):
                raise Malformed(
                    f"{self.art.path / 'scores.json'}: feature {f}'s item needs 'scorer' and 'value'"
                )
            self.scores.setdefault(f, []).append(item)
        cards_path = self.art.file("cards.json", required=False)
        cards = read_json(cards_path, "cards") if cards_path else {}
        if not isinstance(cards, dict):
            raise Malformed(f"{cards_path} must be one JSON object {{feature: card}}")
        self.cards = cards

    def _sidecar_tables(self) -> tuple[Any, Any]:
        import pyarrow as pa

        ex = pa.table({"feature": pa.array(list(self.explanations), pa.int64()),
                       "explanation": pa.array([e["text"] for e in self.explanations.values()], pa.string())})  # fmt: skip
        per: dict[str, dict[int, float]] = {}
        for f, items in self.scores.items():
            for item in items:
                if _SCORER.match(item["scorer"]) and item["scorer"] not in (*SCALARS, "explanation", "id"):
                    per.setdefault(item["scorer"], {})[f] = float(item["value"])
        self.scorers = sorted(per)
        ids = sorted({f for values in per.values() for f in values})
        cols = {"feature": pa.array(ids, pa.int64())}
        cols |= {s: pa.array([per[s].get(f) for f in ids], pa.float64()) for s in self.scorers}
        return ex, pa.table(cols)

    def _build(self) -> None:
        import duckdb

        features = self.art.file("features.parquet")
        assert features is not None
        self._read_sidecars()
        ex, sc = self._sidecar_tables()
        con = duckdb.connect(":memory:")
        con.register("ex_arrow", ex)
        con.register("sc_arrow", sc)
        extra = "".join(f', sc."{s}"' for s in self.scorers)
        with _reading(features):
            con.execute(
                f"CREATE TABLE idx AS SELECT {', '.join(f'f.{c}' for c in SCALARS)}, ex.explanation{extra} "
                "FROM read_parquet(?) f LEFT JOIN ex_arrow ex USING (feature) "
                "LEFT JOIN sc_arrow sc USING (feature) ORDER BY f.feature",
                [str(features)],
            )
        con.unregister("ex_arrow")
        con.unregister("sc_arrow")
        self._con = con

    def _build_tokens(self) -> None:
        examples = self.art.file("examples.parquet")
        with _reading(examples):  # type: ignore[arg-type]
            self._con.execute(
                "CREATE OR REPLACE TABLE tok AS SELECT DISTINCT tokens[target + 1] AS token, feature "
                "FROM read_parquet(?) WHERE kind = 'top' ORDER BY token, feature",
                [str(examples)],
            )

    def columns(self) -> list[dict[str, Any]]:
        """The index's columns: ``{key, label, numeric}``."""
        cols = [{"key": c, "label": c.replace("_", " "), "numeric": True} for c in SCALARS]
        cols.append({"key": "explanation", "label": "explanation", "numeric": False})
        return cols + [{"key": s, "label": f"score: {s}", "numeric": True} for s in self.scorers]

    def index(self, q: IndexQuery) -> dict[str, Any]:
        """One page: ``{total, rows, columns}``; filters and sort run in DuckDB."""
        cur = self.cursor(tokens=q.token is not None)
        where, params = self._where(q)
        sort = "feature" if q.sort == "id" else q.sort
        if sort not in (*SCALARS, *self.scorers):
            raise BadRequest(f"cannot sort by {q.sort!r}; sort by id, {', '.join(SCALARS[1:])}"
                             + "".join(f", {s}" for s in self.scorers))  # fmt: skip
        if not (0 < q.limit <= MAX_LIMIT) or q.offset < 0:
            raise BadRequest(f"limit must be 1..{MAX_LIMIT} and offset >= 0")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = cur.execute(f"SELECT count(*) FROM idx{clause}", params).fetchone()[0]
        order = f'"{sort}" {"DESC" if q.desc else "ASC"} NULLS LAST, feature ASC'
        cur.execute(
            f"SELECT * FROM idx{clause} ORDER BY {order} LIMIT ? OFFSET ?", [*params, q.limit, q.offset]
        )
        return {"total": int(total), "offset": q.offset, "rows": _rows(cur), "columns": self.columns()}

    @staticmethod
    def _where(q: IndexQuery) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if q.q:
            escaped = q.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("explanation ILIKE ? ESCAPE '\\'")
            params.append(f"%{escaped}%")
        if q.min_density is not None:
            where.append("density >= ?")
            params.append(q.min_density)
        if q.max_density is not None:
            where.append("density <= ?")
            params.append(q.max_density)
        if q.token is not None:
            where.append("feature IN (SELECT feature FROM tok WHERE token = ?)")
            params.append(q.token)
        return where, params

    def feature(self, i: int) -> dict[str, Any]:
        """Everything about feature ``i`` (summary, histogram, examples, co-occurrence, notes)."""
        cur = self.cursor()
        features = self.art.file("features.parquet")
        with _reading(features):  # type: ignore[arg-type]
            rows = _rows(cur.execute("SELECT * FROM read_parquet(?) WHERE feature = ?", [str(features), i]))
        if not rows:
            n = cur.execute("SELECT count(*) FROM idx").fetchone()[0]
            raise NotFound(
                f"feature {i} is not in artifact {self.art.id!r} (it has {n} features, 0..{n - 1})"
            )
        summary = rows[0]
        co = zip(summary.pop("cooccurring", None) or [], summary.pop("cooccurring_counts", None) or [])
        return {
            "feature": i,
            "summary": summary,
            "histogram": {
                "bins": self._histogram(cur, i),
                "quantile_edges": summary.pop("quantile_edges", None),
            },
            "examples": self._examples(cur, i),
            "cooccurring": [{"feature": int(f), "count": int(c)} for f, c in co],
            "explanation": _fields(self.explanations.get(i), ("text", "explainer", "settings")),
            "scores": [_fields(s, ("scorer", "value", "details", "seed")) for s in self.scores.get(i, [])],
            "card": self.cards.get(str(i)),
        }

    def _histogram(self, cur: Any, i: int) -> list[list[float]]:
        path = self.art.file("histogram.parquet")
        with _reading(path):  # type: ignore[arg-type]
            cur.execute("SELECT bin_low, bin_high, count FROM read_parquet(?) WHERE feature = ? ORDER BY bin_low",
                        [str(path), i])  # fmt: skip
            return [[lo, hi, int(c)] for lo, hi, c in cur.fetchall()]

    def _examples(self, cur: Any, i: int) -> dict[str, list[dict[str, Any]]]:
        path = self.art.file("examples.parquet")
        with _reading(path):  # type: ignore[arg-type]
            cur.execute(
                "SELECT kind, quantile, rank, activation, context, position, target, tokens, activations "
                "FROM read_parquet(?) WHERE feature = ? ORDER BY kind = 'quantile', kind, quantile, rank LIMIT ?",
                [str(path), i, MAX_EXAMPLES],
            )
            out: dict[str, list[dict[str, Any]]] = {"top": [], "quantile": []}
            for row in _rows(cur):
                out.setdefault(row["kind"], []).append(row)
        out["random"] = self._random(cur, i)
        return out

    def _random(self, cur: Any, i: int) -> list[dict[str, Any]]:
        """The random (held-out) windows with this feature's activations on them, when stored."""
        windows = self.art.file("random.parquet", required=False)
        acts = self.art.file("random_activations.parquet", required=False)
        if windows is None or acts is None:
            return []
        with _reading(acts):
            cur.execute(
                'SELECT example, "index", activation FROM read_parquet(?) WHERE feature = ?', [str(acts), i]
            )
            per: dict[int, dict[int, float]] = {}
            for e, j, a in cur.fetchall():
                per.setdefault(int(e), {})[int(j)] = float(a)
        with _reading(windows):
            cur.execute("SELECT example, context, position, target, tokens FROM read_parquet(?) ORDER BY example "
                        "LIMIT ?", [str(windows), MAX_EXAMPLES])  # fmt: skip
            out = []
            for row in _rows(cur):
                a = [per.get(int(row["example"]), {}).get(k, 0.0) for k in range(len(row["tokens"]))]
                t = int(row["target"])
                out.append({"kind": "random", "quantile": -1, "rank": int(row["example"]),
                            "activation": a[t] if 0 <= t < len(a) else 0.0, **row, "activations": a})  # fmt: skip
        return out


__all__ = ["MAX_EXAMPLES", "MAX_LIMIT", "SCALARS", "FeatureTables", "IndexQuery"]
