"""Reading a feature-statistics artifact (the directory :meth:`FeatureStats.save` writes).

:class:`FeatureArtifact` checks the directory first (``meta.json`` present and of the right kind
and version, every table readable) and then answers per-feature questions: the summary row, the
examples (top and by quantile, each with per-token activations), the histogram, the random
windows (held-out contexts, with this feature's activations on them) and co-occurring features.
Tables are read once with pyarrow and indexed by feature; :meth:`FeatureArtifact.sql` runs
DuckDB over the same files.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MechscopeError
from .stats import SCHEMA_VERSION

if TYPE_CHECKING:
    from ..explain import Example

TABLES = ("features", "examples", "histogram", "cooccurrence", "random", "random_activations")
"""The Parquet tables of an artifact (``<name>.parquet``)."""


class ArtifactError(MechscopeError):
    """A feature artifact is missing, partial, corrupt or of another kind."""


@dataclass(frozen=True)
class FeatureExample:
    """One stored example window of one feature."""

    kind: str
    """``top``, ``quantile`` or ``random``."""
    quantile: int
    """Equal-count quantile (0 = lowest) for ``quantile`` examples, else -1."""
    rank: int
    """Rank within its kind (and quantile)."""
    activation: float
    """The feature's activation on the target token."""
    context: int
    """Index of the context in the pass."""
    position: int
    """Position of the target token in its context."""
    target: int
    """Index of the target token in ``tokens``."""
    tokens: tuple[str, ...]
    """The window's tokens."""
    activations: tuple[float, ...]
    """The feature's activation on each token of the window."""

    def _repr_html_(self) -> str:
        """The window's tokens shaded by activation, in Jupyter (see :mod:`mechscope.viz`)."""
        from ..viz.results import feature_example

        return feature_example(self).fragment()

    def example(self) -> Example:
        """As an :class:`mechscope.explain.Example` (tokens and activations)."""
        from ..explain import Example

        return Example(tokens=self.tokens, activations=self.activations)


class FeatureArtifact:
    """A checked, read-only view of a feature-statistics directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise ArtifactError(
                f"{self.path} is not a feature artifact: no meta.json (it is written last, so the pass "
                "that made this directory did not finish; rerun `mechscope features`)"
            )
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{meta_path} is not valid JSON: {e}") from None
        if self.meta.get("kind") != "feature-stats":
            raise ArtifactError(f"{self.path} holds a {self.meta.get('kind')!r} artifact, not feature-stats")
        if self.meta.get("schema_version") != SCHEMA_VERSION:
            raise ArtifactError(
                f"{self.path} has schema version {self.meta.get('schema_version')}; this mechscope reads "
                f"{SCHEMA_VERSION}: recompute it with `mechscope features`"
            )
        missing = [t for t in TABLES if not (self.path / f"{t}.parquet").is_file()]
        if missing:
            raise ArtifactError(
                f"{self.path} is partial: missing {', '.join(m + '.parquet' for m in missing)}"
            )

    @property
    def d_sae(self) -> int:
        """Number of features (latents)."""
        return int(self.meta["d_sae"])

    @property
    def hook(self) -> str:
        """The hook the dictionary reads."""
        return str(self.meta["hook"])

    def _table(self, name: str) -> dict[str, list[Any]]:
        import pyarrow.parquet as pq

        try:
            return dict(pq.read_table(self.path / f"{name}.parquet").to_pydict())
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise ArtifactError(f"{self.path / (name + '.parquet')} cannot be read: {e}") from None

    @cached_property
    def _features(self) -> dict[str, list[Any]]:
        table = self._table("features")
        if len(table.get("feature", [])) != self.d_sae:
            raise ArtifactError(f"{self.path}/features.parquet has {len(table.get('feature', []))} rows, "
                                f"meta.json says {self.d_sae} features")  # fmt: skip
        return table

    @cached_property
    def _by_feature(self) -> dict[str, dict[int, list[int]]]:
        index: dict[str, dict[int, list[int]]] = {}
        for name in ("examples", "histogram", "cooccurrence", "random_activations"):
            rows: dict[int, list[int]] = defaultdict(list)
            for j, f in enumerate(self._columns(name)["feature"]):
                rows[f].append(j)
            index[name] = rows
        return index

    @cached_property
    def _cache(self) -> dict[str, dict[str, list[Any]]]:
        return {}

    def _columns(self, name: str) -> dict[str, list[Any]]:
        if name not in self._cache:
            self._cache[name] = self._table(name)
        return self._cache[name]

    def check(self, feature: int) -> int:
        """``feature`` as an int, or a clear error when the artifact has no such feature."""
        if not isinstance(feature, int) or not 0 <= feature < self.d_sae:
            raise ArtifactError(
                f"feature {feature!r} is not in {self.path}: it has features 0..{self.d_sae - 1}"
            )
        return feature

    def summary(self, feature: int) -> dict[str, Any]:
        """The feature's row of ``features.parquet`` (density, activations, logit effects, ...)."""
        i = self.check(feature)
        return {k: v[i] for k, v in self._features.items()}

    def column(self, name: str) -> list[Any]:
        """One column of ``features.parquet`` over all features (e.g. ``density``)."""
        if name not in self._features:
            raise ArtifactError(f"features.parquet has no column {name!r}; it has {sorted(self._features)}")
        return list(self._features[name])

    def examples(self, feature: int, kind: str | None = None) -> list[FeatureExample]:
        """The feature's stored examples (``top`` by rank, then ``quantile`` by bin), optionally one kind."""
        cols = self._columns("examples")
        out = []
        for j in self._by_feature["examples"].get(self.check(feature), []):
            if kind is None or cols["kind"][j] == kind:
                out.append(FeatureExample(
                    cols["kind"][j], cols["quantile"][j], cols["rank"][j], cols["activation"][j],
                    cols["context"][j], cols["position"][j], cols["target"][j], tuple(cols["tokens"][j]),
                    tuple(cols["activations"][j]),
                ))  # fmt: skip
        return out

    def random(self, feature: int) -> list[FeatureExample]:
        """The random windows with this feature's activations on them (mostly zero: held-out negatives)."""
        i, rows = self.check(feature), self._columns("random")
        acts = self._columns("random_activations")
        per: dict[int, dict[int, float]] = defaultdict(dict)
        for j in self._by_feature["random_activations"].get(i, []):
            per[acts["example"][j]][acts["index"][j]] = acts["activation"][j]
        out = []
        for e, toks in zip(rows["example"], rows["tokens"]):
            a = tuple(per[e].get(k, 0.0) for k in range(len(toks)))
            t = rows["target"][e]
            out.append(FeatureExample("random", -1, e, a[t], rows["context"][e], rows["position"][e], t,
                                      tuple(toks), a))  # fmt: skip
        return out

    def histogram(self, feature: int) -> list[tuple[float, float, int]]:
        """``(low, high, count)`` of each non-empty activation bin."""
        cols = self._columns("histogram")
        return [(cols["bin_low"][j], cols["bin_high"][j], cols["count"][j])
                for j in self._by_feature["histogram"].get(self.check(feature), [])]  # fmt: skip

    def cooccurring(self, feature: int) -> list[tuple[int, int]]:
        """``(other feature, count)`` of every feature that fired with this one, most frequent first."""
        cols = self._columns("cooccurrence")
        pairs = [
            (cols["other"][j], cols["count"][j])
            for j in self._by_feature["cooccurrence"].get(self.check(feature), [])
        ]
        return sorted(pairs, key=lambda p: -p[1])

    def sql(self, query: str) -> Any:
        """Run DuckDB ``query`` with the tables as views (``features``, ``examples``, ...)."""
        import duckdb

        con = duckdb.connect()
        for t in TABLES:
            path = str(self.path / f"{t}.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{path}')")
        return con.sql(query)


__all__ = ["TABLES", "ArtifactError", "FeatureArtifact", "FeatureExample"]
