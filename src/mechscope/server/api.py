"""Route handlers of the JSON API (all ``GET`` except ``POST /api/labels``).

=====================================================  =============================================
``GET /api/runs``                                       every artifact: id, kind, schema_version,
                                                        created, model, path (error if unreadable)
``GET /api/artifact/{id}/meta``                         its ``meta.json``
``GET /api/features/{id}/index?...``                    a filtered, sorted page of the feature index
``GET /api/features/{id}/feature/{i}``                  one feature: summary, histogram, examples, ...
``GET /api/features/{id}/summary``                      feature counts, density quantiles and histogram
``GET /api/tensor/{id}?file=&name=&slice=``             a slice of a safetensors tensor (base64 f32)
``GET /api/circuit/{id}?max_nodes=&max_edges=``         the circuit pruned to a drawing budget
``GET /api/labels/{id}``, ``POST /api/labels/{id}``     the ``labels.json`` sidecar; POST merges
``GET /files/{id}/{path}``                              an artifact's file, read-only
``GET /static/{name}``                                  the component bundle (``mechscope.js``)
=====================================================  =============================================

Errors are JSON ``{"error": ...}``: 400 bad parameter, 404 unknown artifact / file / feature,
413 too large, 422 malformed or partial artifact (the message names the file).
"""

from __future__ import annotations

import base64
import json
import math
import threading
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from .artifacts import (
    DEFAULT_MAX_EDGES,
    DEFAULT_MAX_NODES,
    Artifact,
    BadRequest,
    JsonCache,
    NotFound,
    Registry,
    ServeError,
    merge_labels,
    prune_circuit,
    read_labels,
    read_tensor,
    tensor_axes,
)
from .feature_tables import FeatureTables, IndexQuery
from .security import resolve_within

STATIC_DIR = Path(__file__).resolve().parents[1] / "viz" / "static"
"""Where the component bundle lives (``mechscope/viz/static``)."""
MAX_BODY = 1 << 20
"""Largest request body (the labels POST), in bytes."""


def _clean(obj: Any) -> Any:
    """``obj`` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def json_response(content: Any, status: int = 200) -> JSONResponse:
    """A JSON response; NaN and infinities become null."""
    return JSONResponse(_clean(content), status_code=status)


def error_response(exc: ServeError) -> JSONResponse:
    """``{"error": message}`` with the error's status."""
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


def _int(request: Request, name: str, default: int | None = None) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {value!r}") from None


def _float(request: Request, name: str) -> float | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise BadRequest(f"{name} must be finite")
    return out


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes", "on")


class Api:
    """The handlers, over one :class:`~mechscope.server.artifacts.Registry`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.json = JsonCache()
        self._tables: dict[Path, FeatureTables] = {}
        self._lock = threading.Lock()

    def _artifact(self, request: Request, kind: str | None = None) -> Artifact:
        art = self.registry.locate(request.path_params["id"]).checked()
        if kind is not None and art.kind != kind:
            raise NotFound(f"artifact {art.id!r} is a {art.kind!r}, not a {kind!r}")
        return art

    def tables(self, art: Artifact) -> FeatureTables:
        """The cached DuckDB tables of a feature artifact."""
        with self._lock:
            if art.path not in self._tables or self._tables[art.path].art != art:
                self._tables[art.path] = FeatureTables(art)
            return self._tables[art.path]

    def runs(self, request: Request) -> Response:
        """``GET /api/runs``."""
        return json_response({"roots": [str(r) for r in self.registry.roots],
                              "runs": [a.summary() for a in self.registry.discover()]})  # fmt: skip

    def meta(self, request: Request) -> Response:
        """``GET /api/artifact/{id}/meta``."""
        return json_response(self._artifact(request).meta)

    def feature_index(self, request: Request) -> Response:
        """``GET /api/features/{id}/index``: see :class:`~mechscope.server.feature_tables.IndexQuery`."""
        art = self._artifact(request, "feature-stats")
        p = request.query_params
        query = IndexQuery(
            offset=_int(request, "offset", 0) or 0,
            limit=_int(request, "limit", 100) or 0,
            sort=p.get("sort") or "feature",
            desc=_flag(request, "desc"),
            q=p.get("q") or None,
            token=p.get("token") if p.get("token") not in (None, "") else None,
            min_density=_float(request, "min_density"),
            max_density=_float(request, "max_density"),
        )
        return json_response(self.tables(art).index(query))

    def feature(self, request: Request) -> Response:
        """``GET /api/features/{id}/feature/{i}``."""
        art = self._artifact(request, "feature-stats")
        try:
            i = int(request.path_params["i"])
        except ValueError:
            raise NotFound(f"no feature {request.path_params['i']!r}") from None
        return json_response(self.tables(art).feature(i))

    def feature_summary(self, request: Request) -> Response:
        """``GET /api/features/{id}/summary``: feature counts, density quantiles and a log-density histogram."""
        tables = self.tables(self._artifact(request, "feature-stats"))
        cur = tables.cursor()
        n, dead, explained, lo, p10, med, p90, hi, mean = cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE coalesce(density, 0) = 0), count(explanation), min(density), "
            "quantile_cont(density, 0.1), median(density), quantile_cont(density, 0.9), max(density), "
            "avg(density) FROM idx"
        ).fetchone()
        scorers = {s: cur.execute(f'SELECT avg("{s}") FROM idx').fetchone()[0] for s in tables.scorers}
        bins = cur.execute(
            "SELECT floor(log10(density) * 4) AS b, count(*) FROM idx WHERE density > 0 GROUP BY b ORDER BY b"
        ).fetchall()
        return json_response({
            "features": int(n), "dead": int(dead), "explained": int(explained), "scorers": scorers,
            "density": {"min": lo, "p10": p10, "median": med, "p90": p90, "max": hi, "mean": mean},
            "density_bins": [[10 ** (b / 4), 10 ** ((b + 1) / 4), int(c)] for b, c in bins],
        })  # fmt: skip

    def tensor(self, request: Request) -> Response:
        """``GET /api/tensor/{id}?file=NAME.safetensors&name=TENSOR&slice=0:4,:,2``."""
        art = self._artifact(request)
        file = request.query_params.get("file", "")
        if not file.endswith(".safetensors"):
            raise BadRequest(
                "file must name a .safetensors file of the artifact, e.g. file=values.safetensors"
            )
        path = art.file(file, required=False)
        if path is None:
            raise NotFound(f"artifact {art.id!r} has no file {file!r}")
        spec = request.query_params.get("slice")
        data, name, dtype, index = read_tensor(path, request.query_params.get("name") or None, spec)
        return json_response({
            "file": file, "name": name, "source_dtype": dtype, "dtype": "float32", "shape": list(data.shape),
            "slice": spec or "", "axes": tensor_axes(art, file, name, index, self.json),
            "data": base64.b64encode(data.astype("<f4").tobytes()).decode("ascii"),
        })  # fmt: skip

    def circuit(self, request: Request) -> Response:
        """``GET /api/circuit/{id}?max_nodes=&max_edges=``."""
        art = self._artifact(request)
        path = art.file("circuit.json", required=False) or art.file("graph.json", required=False)
        if path is None:
            raise NotFound(f"artifact {art.id!r} ({art.kind}) has no circuit.json")
        max_nodes = _int(request, "max_nodes", DEFAULT_MAX_NODES) or 0
        max_edges = _int(request, "max_edges", DEFAULT_MAX_EDGES) or 0
        if not (0 < max_nodes <= DEFAULT_MAX_NODES and 0 < max_edges <= DEFAULT_MAX_EDGES):
            raise BadRequest(f"max_nodes must be 1..{DEFAULT_MAX_NODES} and max_edges 1..{DEFAULT_MAX_EDGES}")
        doc = self.json.get(path, "circuit")
        return json_response(prune_circuit(doc, path, max_nodes, max_edges, read_labels(art)))

    def labels(self, request: Request) -> Response:
        """``GET /api/labels/{id}``: the label sidecar (``{}`` when there is none)."""
        return json_response(read_labels(self._artifact(request)))

    async def post_labels(self, request: Request) -> Response:
        """``POST /api/labels/{id}`` with ``{node_id: label}`` (null removes): merged atomically."""
        body = await request.body()
        if len(body) > MAX_BODY:
            raise BadRequest(f"the body is {len(body)} bytes; at most {MAX_BODY}")
        try:
            updates = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(f"the body is not JSON: {e}") from None
        from starlette.concurrency import run_in_threadpool

        art = await run_in_threadpool(self._artifact, request)
        return json_response(await run_in_threadpool(merge_labels, art, updates))

    def files(self, request: Request) -> Response:
        """``GET /files/{id}/{path}``: an artifact's file, read-only."""
        _, path = self.registry.locate_file(request.path_params["path"])
        return FileResponse(path)

    def static(self, request: Request) -> Response:
        """``GET /static/{name}``: a file of ``mechscope/viz/static`` (404 until the bundle is built)."""
        path = resolve_within(STATIC_DIR, request.path_params["name"]) if STATIC_DIR.is_dir() else None
        if path is None or not path.is_file():
            raise NotFound(f"no static file {request.path_params['name']!r} (is mechscope/viz/static built?)")
        media = "text/javascript" if path.suffix in (".js", ".mjs") else None
        return FileResponse(path, media_type=media)


__all__ = ["MAX_BODY", "STATIC_DIR", "Api", "error_response", "json_response"]
