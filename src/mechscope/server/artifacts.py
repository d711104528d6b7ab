"""Finding artifacts under the served roots, and reading the small per-kind files.

1. **Discovery**: every directory under a root (walked without following symlinks, hidden
   directories skipped) that holds a ``meta.json`` with a ``kind`` is an artifact. Its id is
   its path relative to the root, prefixed by the root's index when several roots are served
   (``0/runs/demo-x/features``); a root that is itself an artifact has id ``~`` (one root) or
   its index (several).
2. **Lookup** goes the other way, from an id in a request to a directory, through
   :func:`~mechscope.server.security.safe_parts` and
   :func:`~mechscope.server.security.contained`: the id must name, after resolving symlinks, a
   directory inside its root whose path relative to the root *is* the id (no aliases), holding
   a ``meta.json`` inside the root. Anything else is :class:`NotFound`.
3. **Readers** turn malformed files into :class:`Malformed` (HTTP 422) naming the file, never a
   traceback: the ``labels.json`` sidecar, circuits (pruned to a drawing budget) and tensors
   (read by slice). Feature tables have their own module, :mod:`mechscope.server.feature_tables`.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._fs import atomic_write_json
from ..errors import MechscopeError
from .security import contained, safe_parts

ROOT_ID = "~"
"""Id of a single served root that is itself an artifact."""
MAX_DEPTH = 16
"""Directories deeper than this under a root are not searched for artifacts."""
MAX_ARTIFACTS = 10_000
"""Discovery stops after this many artifacts."""
MAX_LABELS = 100_000
"""Entries a ``labels.json`` sidecar may hold."""


class ServeError(MechscopeError):
    """An error the server answers with a JSON ``{"error": ...}`` and the class's HTTP status."""

    status = 500


class NotFound(ServeError):
    """No such artifact, file, feature or tensor (or one outside the served roots)."""

    status = 404


class BadRequest(ServeError):
    """A malformed query parameter or request body."""

    status = 400


class TooLarge(ServeError):
    """A request for more data than one response may carry."""

    status = 413


class Malformed(ServeError):
    """An artifact's file is missing, partial or corrupt; the message names the file."""

    status = 422


@dataclass(frozen=True)
class Artifact:
    """One artifact directory found under a served root."""

    id: str
    """Its id in URLs (see the module docstring)."""
    root: Path
    """The served root it lies under (resolved)."""
    path: Path
    """The directory (resolved)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Contents of ``meta.json`` (empty when it cannot be read)."""
    error: str | None = None
    """Why ``meta.json`` cannot be read, if it cannot."""

    @property
    def kind(self) -> str | None:
        """``meta["kind"]``."""
        kind = self.meta.get("kind")
        return kind if isinstance(kind, str) else None

    def checked(self) -> Artifact:
        """Itself, or :class:`Malformed` when its ``meta.json`` is unreadable."""
        if self.error:
            raise Malformed(self.error)
        return self

    def file(self, name: str, required: bool = True) -> Path | None:
        """The artifact's file ``name`` (a relative path), contained in the artifact directory.

        A missing file raises :class:`Malformed` when ``required`` (the artifact is partial),
        else returns None; a name that leaves the directory always raises :class:`NotFound`.
        """
        parts = safe_parts(name)
        if parts is None or any(p.startswith(".") for p in parts):
            raise NotFound(f"no file {name!r} in artifact {self.id!r}")
        found = contained(self.path, parts)
        if found is not None and found.is_file():
            return found
        if (self.path.joinpath(*parts)).is_symlink():
            raise NotFound(f"no file {name!r} in artifact {self.id!r}")
        if required:
            raise Malformed(f"{self.path / name} is missing: the {self.kind} artifact {self.id!r} is partial")
        return None

    def summary(self) -> dict[str, Any]:
        """The row ``/api/runs`` lists: id, kind, schema version, created, model, path (and error)."""
        model = self.meta.get("model")
        if isinstance(model, dict):
            model = model.get("id")
        row: dict[str, Any] = {"id": self.id, "kind": self.kind, "schema_version": self.meta.get("schema_version"),
                               "path": str(self.path)}  # fmt: skip
        for key, value in (("created", self.meta.get("created")), ("model", model)):
            if value is not None:
                row[key] = value if isinstance(value, str | int | float) else str(value)
        if self.error:
            row["error"] = self.error
        return row


def _read_meta(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(meta, None)``, ``(None, error)`` for unreadable JSON, ``(None, None)`` when not an artifact."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{path} cannot be read: {e}"
    except json.JSONDecodeError as e:
        return None, f"{path} is not valid JSON ({e.msg} at line {e.lineno}): the artifact is corrupt"
    if not isinstance(meta, dict) or not isinstance(meta.get("kind"), str):
        return None, None
    return meta, None


class Registry:
    """The served roots, and the artifacts under them."""

    def __init__(self, roots: list[Path] | tuple[Path, ...]) -> None:
        if not roots:
            raise MechscopeError("serve needs at least one directory to serve")
        resolved = []
        for r in roots:
            p = Path(r).expanduser().resolve()
            if not p.is_dir():
                raise MechscopeError(f"{r} is not a directory: serve a run directory or a folder of runs")
            resolved.append(p)
        self.roots = tuple(resolved)

    def _id(self, index: int, rel: tuple[str, ...]) -> str:
        parts = ((str(index),) if len(self.roots) > 1 else ()) + rel
        return "/".join(parts) if parts else ROOT_ID

    def _artifact(self, index: int, rel: tuple[str, ...]) -> Artifact | None:
        root = self.roots[index]
        meta_path = contained(root, (*rel, "meta.json"))
        if meta_path is None or not meta_path.is_file():
            return None
        meta, error = _read_meta(meta_path)
        if meta is None and error is None:
            return None
        return Artifact(self._id(index, rel), root, root.joinpath(*rel), meta or {}, error)

    def discover(self) -> list[Artifact]:
        """Every artifact under the roots, ordered by id (see the module docstring)."""
        found: list[Artifact] = []
        for index, root in enumerate(self.roots):
            for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
                rel = Path(dirpath).relative_to(root).parts
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
                if len(rel) >= MAX_DEPTH:
                    dirnames[:] = []
                if "meta.json" in filenames:
                    art = self._artifact(index, rel)
                    if art is not None:
                        found.append(art)
                if len(found) >= MAX_ARTIFACTS:
                    break
        return sorted(found, key=lambda a: a.id)

    def locate(self, aid: str) -> Artifact:
        """The artifact with id ``aid``, or :class:`NotFound` (see the module docstring)."""
        parts = safe_parts(aid)
        missing = NotFound(f"no artifact {aid!r} under the served directories")
        if parts is None:
            raise missing
        index = 0
        if len(self.roots) > 1:
            if not parts[0].isdigit() or int(parts[0]) >= len(self.roots):
                raise missing
            index, parts = int(parts[0]), parts[1:]
        elif parts == (ROOT_ID,):
            parts = ()
        if any(p.startswith(".") for p in parts):
            raise missing
        root = self.roots[index]
        target = contained(root, parts)
        if target is None or not target.is_dir() or target.relative_to(root).parts != parts:
            raise missing
        art = self._artifact(index, parts)
        if art is None:
            raise missing
        return art

    def locate_file(self, text: str) -> tuple[Artifact, Path]:
        """``"<artifact id>/<file path>"`` as the deepest artifact holding it and the file itself."""
        parts = safe_parts(text)
        if parts is None:
            raise NotFound(f"no file {text!r}")
        for k in range(len(parts) - 1, 0, -1):
            try:
                art = self.locate("/".join(parts[:k]))
            except NotFound:
                continue
            path = art.file("/".join(parts[k:]), required=False)
            if path is None:
                break
            return art, path
        raise NotFound(f"no file {text!r} in any served artifact")


def read_json(path: Path, what: str) -> Any:
    """``path`` parsed, or :class:`Malformed` naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise Malformed(f"{path} cannot be read ({what}): {e}") from None
    except json.JSONDecodeError as e:
        raise Malformed(f"{path} is not valid JSON ({what}: {e.msg} at line {e.lineno}); "
                        "it is truncated or was edited by hand") from None  # fmt: skip


class JsonCache:
    """Parsed JSON files, re-read when their modification time or size changes."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._items: dict[Path, tuple[tuple[int, int], Any]] = {}
        self._lock = threading.Lock()

    def get(self, path: Path, what: str) -> Any:
        """``path`` parsed (see :func:`read_json`)."""
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._items.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = read_json(path, what)
        with self._lock:
            if len(self._items) >= self.size:
                self._items.pop(next(iter(self._items)))
            self._items[path] = (stamp, value)
        return value


# ---------------------------------------------------------------- labels sidecar

_LABELS_LOCK = threading.Lock()


def read_labels(art: Artifact) -> dict[str, str]:
    """The artifact's ``labels.json`` (``{node_id: label}``), empty when there is none."""
    path = art.file("labels.json", required=False)
    if path is None:
        return {}
    labels = read_json(path, "labels")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise Malformed(f"{path} must be one JSON object of string labels")
    return labels


def merge_labels(art: Artifact, updates: Any) -> dict[str, str]:
    """Merge ``updates`` (``{node_id: label}``; a null label removes one) into ``labels.json``, atomically."""
    if not isinstance(updates, dict):
        raise BadRequest("the body must be a JSON object {node_id: label}")
    for key, value in updates.items():
        if not (isinstance(key, str) and 0 < len(key) <= 200):
            raise BadRequest(f"label key {key!r} must be a string of 1 to 200 characters")
        if not (value is None or (isinstance(value, str) and len(value) <= 2000)):
            raise BadRequest(f"label for {key!r} must be a string of at most 2000 characters, or null")
    with _LABELS_LOCK:
        labels = read_labels(art)
        for key, value in updates.items():
            if value is None:
                labels.pop(key, None)
            else:
                labels[key] = value
        if len(labels) > MAX_LABELS:
            raise TooLarge(f"labels.json would hold {len(labels)} labels; at most {MAX_LABELS}")
        atomic_write_json(art.path / "labels.json", labels)
    return labels


# ---------------------------------------------------------------- circuits

DEFAULT_MAX_NODES, DEFAULT_MAX_EDGES = 5_000, 50_000
"""Drawing budget of ``/api/circuit`` when the request names none (also the largest allowed)."""


def _graph(doc: Any, path: Path) -> tuple[list[dict[str, Any]], list[tuple[str, str, float, dict[str, Any]]]]:
    """Nodes and ``(source, target, score, edge)`` of a circuit or attribution-graph JSON."""
    if not isinstance(doc, dict):
        raise Malformed(f"{path} must hold a JSON object with 'nodes' and 'edges'")
    nodes, edges = doc.get("nodes"), doc.get("edges", doc.get("links"))
    if not isinstance(nodes, list) or not isinstance(edges, list):
        raise Malformed(f"{path} has no 'nodes' and 'edges' lists: a partial circuit")
    out = []
    for j, e in enumerate(edges):
        if not isinstance(e, dict):
            raise Malformed(f"{path}: edge {j} is not an object")
        src, tgt = e.get("source"), e.get("target", e.get("receiver"))
        score = e.get("score", e.get("weight"))
        if not isinstance(src, str) or not isinstance(tgt, str) or not isinstance(score, int | float):
            raise Malformed(f"{path}: edge {j} needs string 'source' and 'target' and a numeric 'score'")
        out.append((src, tgt, float(score), e))
    return [n for n in nodes if isinstance(n, dict)], out


def _node_id(node: dict[str, Any]) -> str | None:
    for key in ("name", "node_id", "id"):
        if isinstance(node.get(key), str):
            return str(node[key])
    return None


def prune_circuit(
    doc: Any, path: Path, max_nodes: int, max_edges: int, labels: dict[str, str]
) -> dict[str, Any]:
    """The graph cut to the budget: edges by decreasing ``|score|`` while they fit, and the nodes they touch.

    An edge is kept when the edge budget is not spent and its new endpoints fit the node budget,
    so the strongest edges come first and no kept edge dangles. Labels are merged into nodes;
    every node gets ``id`` and every edge ``weight`` (= ``score``), as ``mechscope.graph`` reads them.
    """
    nodes, edges = _graph(doc, path)
    order = sorted(range(len(edges)), key=lambda j: -abs(edges[j][2]) if math.isfinite(edges[j][2]) else 0.0)
    kept: list[dict[str, Any]] = []
    touched: set[str] = set()
    for j in order:
        if len(kept) >= max_edges:
            break
        src, tgt, score, e = edges[j]
        new = {src, tgt} - touched
        if len(touched) + len(new) > max_nodes:
            continue
        touched |= new
        kept.append({**e, "source": src, "target": tgt, "score": score, "weight": score})
    by_id = {i: n for n in nodes if (i := _node_id(n)) is not None}
    out_nodes = []
    for name in sorted(touched):
        node = dict(by_id.get(name, {"name": name}))
        node["id"] = name
        if name in labels:
            node["label"] = labels[name]
        out_nodes.append(node)
    info = {
        k: v
        for k, v in doc.items()
        if k not in ("nodes", "edges", "links") and not isinstance(v, list | dict)
    }
    return {**info, "n_nodes_total": len(by_id), "n_edges_total": len(edges), "nodes": out_nodes,
            "edges": kept, "labels": labels}  # fmt: skip


# ---------------------------------------------------------------- tensors

MAX_ELEMENTS = 4 * 2**20
"""Largest tensor slice one response carries (4M float32 values, 16 MiB before base64)."""


def parse_slice(spec: str | None, shape: list[int]) -> tuple[tuple[slice | int, ...], list[int]]:
    """``"0:4,:,2"`` (numpy-like: ``start:stop[:step]`` or an index per dimension, fewer dimensions
    than the tensor's allowed) as an index tuple and the resulting shape; :class:`BadRequest` if malformed."""
    texts = [] if spec is None or spec.strip() == "" else spec.split(",")
    if len(texts) > len(shape):
        raise BadRequest(f"slice {spec!r} has {len(texts)} dimensions, the tensor {len(shape)} ({shape})")
    index: list[slice | int] = []
    out: list[int] = []
    for d, size in enumerate(shape):
        text = texts[d].strip() if d < len(texts) else ":"
        try:
            if ":" not in text:
                i = int(text)
                if not -size <= i < size:
                    raise BadRequest(f"index {i} is out of range for dimension {d} of size {size}")
                index.append(i % size)
                continue
            bits = [int(b) if b.strip() else None for b in text.split(":")]
        except ValueError:
            raise BadRequest(f"slice {spec!r}: {text!r} is not an index or start:stop[:step]") from None
        if len(bits) > 3 or (len(bits) == 3 and bits[2] is not None and bits[2] <= 0):
            raise BadRequest(f"slice {spec!r}: {text!r} must be start:stop[:step] with a positive step")
        start, stop, step = slice(*bits).indices(size)
        index.append(slice(start, max(start, stop), step))
        out.append(len(range(start, stop, step)))
    return tuple(index), out


def read_tensor(
    path: Path, name: str | None, spec: str | None
) -> tuple[Any, str, str, tuple[slice | int, ...]]:
    """The slice ``spec`` of tensor ``name`` in safetensors file ``path`` as a float32 numpy array,
    read with ``safe_open(...).get_slice`` (only the slice is read); also the tensor's name, its
    stored dtype and the parsed index (:func:`parse_slice`)."""
    import numpy as np
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            names = list(f.keys())
            if name is None and len(names) == 1:
                name = names[0]
            if name is None or name not in names:
                raise NotFound(f"{path.name} has no tensor {name!r}; it has {names}")
            sl = f.get_slice(name)
            shape, dtype = list(sl.get_shape()), str(sl.get_dtype())
    except ServeError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise Malformed(f"{path} is not a readable safetensors file: {e}") from None
    index, out_shape = parse_slice(spec, shape)
    n = math.prod(out_shape)
    if n > MAX_ELEMENTS:
        raise TooLarge(f"the slice holds {n:,} values ({out_shape}); at most {MAX_ELEMENTS:,} per request: "
                       "ask for a smaller slice, e.g. slice=0:8")  # fmt: skip
    framework = "pt" if dtype == "BF16" else "numpy"  # numpy has no bfloat16
    try:
        with safe_open(str(path), framework=framework) as f:
            data = f.get_slice(name)[index]
        if framework == "pt":
            data = data.float().numpy()
    except Exception as e:
        raise Malformed(f"{path}: tensor {name!r} cannot be read: {e}") from None
    return np.asarray(data, dtype="<f4").reshape(out_shape), name, dtype, index


def tensor_axes(art: Artifact, file: str, name: str, index: tuple[slice | int, ...],
                cache: JsonCache) -> list[dict[str, Any]] | None:  # fmt: skip
    """Axis names and labels of the slice's dimensions, when the artifact's JSON gives them.

    Patching results (``meta.json`` ``axes``) label ``values`` and the leading dimensions of
    ``per_example``; circuits label the last dimension of ``scores`` and ``in_circuit`` with the
    edge names of ``circuit.json``.
    """
    named: list[tuple[str, list[str] | None]] | None = None
    if isinstance(art.meta.get("axes"), list) and file == "values.safetensors":
        named = [
            (str(a.get("name")), list(a.get("labels") or [])) for a in art.meta["axes"] if isinstance(a, dict)
        ]
        named += [("example", None)] * (len(index) - len(named))
    elif (
        art.kind == "circuit" and name in ("scores", "in_circuit") and (p := art.file("circuit.json", False))
    ):
        doc = cache.get(p, "circuit")
        edges = doc.get("edges") if isinstance(doc, dict) else None
        if isinstance(edges, list):
            names = [str(e.get("name")) if isinstance(e, dict) else str(j) for j, e in enumerate(edges)]
            named = [("pos", None)] * (len(index) - 1) + [("edge", names)]
    if named is None or len(named) != len(index):
        return None
    out = []
    for (axis, labels), ix in zip(named, index):
        if isinstance(ix, slice):
            out.append({"name": axis, "labels": labels[ix] if labels is not None else None})
    return out


__all__ = [
    "MAX_ELEMENTS",
    "ROOT_ID",
    "Artifact",
    "BadRequest",
    "JsonCache",
    "Malformed",
    "NotFound",
    "Registry",
    "ServeError",
    "TooLarge",
    "merge_labels",
    "parse_slice",
    "prune_circuit",
    "read_json",
    "read_labels",
    "read_tensor",
    "tensor_axes",
]
