"""The model routes of ``mechscope serve --model``: JSON in, JSON out, one model call at a time.

=================================  ============================================================
``POST /api/model/prompt``          ``{text, top_k?, n_features?}`` -> tokens, top next tokens,
                                    top features per token (with a dictionary)
``POST /api/model/attention``       ``{text, layer}`` -> every head's pattern at ``layer``
``POST /api/model/lens``            ``{text, statistic?, answer?}`` -> a layer x position map
``POST /api/model/steer``           ``{text, features: {id: value}, mode?, max_new_tokens?}`` ->
                                    default and steered generations, saved as an artifact
                                    under the first root's ``steering/``
=================================  ============================================================

The server never imports a model package: the backend (``app.state.model``, a
``mechscope.pipeline.ui_backend.ModelBackend`` when the CLI made it) is used by duck typing.
Bodies are checked here before the model sees them; a bad body, or an error the backend raises
about its input (a :class:`~mechscope.errors.MechscopeError`, ``ValueError``, ``KeyError``),
is answered ``{"error": ...}`` with status 400, and so is any call when no model is loaded.
Calls run in a worker thread, serialised by one lock, so a slow generation never blocks the
file routes and two requests never share the model.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import MechscopeError
from .api import MAX_BODY, json_response
from .artifacts import Registry

MAX_TEXT = 4000
"""Longest prompt text accepted, in characters (the backend also caps the tokens)."""
MAX_FEATURES = 16
"""Most features steered at once."""
STEERING_DIR = "steering"
"""Directory, under the first served root, that steering runs are saved in."""
NO_MODEL = "no model is loaded: start the server with --model (and --sae for features and steering)"


class Invalid(Exception):
    """A request body the model routes refuse (answered with 400)."""


def _int(body: dict[str, Any], key: str, default: int | None, lo: int, hi: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise Invalid(f"{key} must be an integer from {lo} to {hi}, got {value!r}")
    return value


def _text(body: dict[str, Any], key: str = "text", required: bool = True) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise Invalid(f"{key} is empty: type a prompt")
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise Invalid(f"{key} must be a string of at most {MAX_TEXT} characters")
    return value


def _features(body: dict[str, Any], d_sae: int | None) -> dict[int, float]:
    raw = body.get("features")
    if not isinstance(raw, dict) or not raw:
        raise Invalid("features must be a non-empty object {feature id: strength}")
    if len(raw) > MAX_FEATURES:
        raise Invalid(f"at most {MAX_FEATURES} features at once, got {len(raw)}")
    out: dict[int, float] = {}
    for key, value in raw.items():
        try:
            i = int(key)
        except (TypeError, ValueError):
            raise Invalid(f"feature id {key!r} is not an integer") from None
        if i < 0 or (d_sae is not None and i >= d_sae):
            raise Invalid(
                f"feature {i} is out of range: the dictionary has {d_sae} features (0..{(d_sae or 1) - 1})"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise Invalid(f"the strength of feature {i} must be a finite number, got {value!r}")
        out[i] = float(value)
    return out


def model_info(backend: Any) -> dict[str, Any]:
    """What the views show of the backend: its name, layers and dictionary (None without a model)."""
    if backend is None:
        return {"model": None}
    cfg = getattr(getattr(backend, "model", None), "cfg", None)
    dictionary = getattr(backend, "dictionary", None)
    dcfg = getattr(dictionary, "config", None)
    return {"model": str(backend.name), "n_layers": getattr(cfg, "n_layers", None),
            "n_heads": getattr(cfg, "n_heads", None), "dictionary": dictionary is not None,
            "hook": getattr(dcfg, "hook_name", None), "d_sae": getattr(dcfg, "d_sae", None)}  # fmt: skip


class ModelApi:
    """The ``/api/model/*`` handlers over ``app.state.model``; steering runs go to the first root's ``steering/``."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.steering_dir = registry.roots[0] / STEERING_DIR
        self._lock = threading.Lock()

    def saved_id(self, saved: Any) -> str | None:
        """The artifact id of a steering run saved at ``saved`` (None when it is not under the first root)."""
        if not isinstance(saved, str):
            return None
        path, root = Path(saved).resolve(), self.registry.roots[0]
        if not path.is_relative_to(root):
            return None
        rel = path.relative_to(root).as_posix()
        return f"0/{rel}" if len(self.registry.roots) > 1 else rel

    async def _call(self, request: Request, run: Callable[[Any, dict[str, Any]], Any]) -> Response:
        backend = request.app.state.model
        if backend is None:
            return JSONResponse({"error": NO_MODEL}, status_code=400)
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return JSONResponse(
                {"error": f"the body is {len(raw)} bytes; at most {MAX_BODY}"}, status_code=400
            )
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise Invalid("the body must be a JSON object")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return JSONResponse({"error": f"the body is not JSON: {e}"}, status_code=400)
        except Invalid as e:
            return JSONResponse({"error": str(e)}, status_code=400)

        def locked() -> Any:
            with self._lock:
                return run(backend, body)

        try:
            return json_response(await run_in_threadpool(locked))
        except (Invalid, MechscopeError, ValueError, KeyError) as e:
            message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            return JSONResponse({"error": message}, status_code=400)

    async def prompt(self, request: Request) -> Response:
        """``POST /api/model/prompt``."""

        def run(b: Any, body: dict[str, Any]) -> Any:
            return b.prompt(_text(body), top_k=_int(body, "top_k", 10, 1, 50),
                            n_features=_int(body, "n_features", 5, 1, 32))  # fmt: skip

        return await self._call(request, run)

    async def attention(self, request: Request) -> Response:
        """``POST /api/model/attention``."""

        def run(b: Any, body: dict[str, Any]) -> Any:
            n = model_info(b).get("n_layers")
            hi = n - 1 if isinstance(n, int) else 10_000
            layer = body.get("layer")
            if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= hi:
                raise Invalid(f"layer {layer!r} is out of range: the model has {n} layers (0..{hi})")
            return b.attention(_text(body), layer)

        return await self._call(request, run)

    async def lens(self, request: Request) -> Response:
        """``POST /api/model/lens``."""

        def run(b: Any, body: dict[str, Any]) -> Any:
            statistic = body.get("statistic", "prob")
            if statistic not in ("prob", "rank", "logprob"):
                raise Invalid(f"statistic must be prob, rank or logprob, not {statistic!r}")
            return b.lens(_text(body), statistic, _text(body, "answer", required=False))

        return await self._call(request, run)

    async def steer(self, request: Request) -> Response:
        """``POST /api/model/steer``: the run is saved under ``steering/`` of the first root."""

        def run(b: Any, body: dict[str, Any]) -> Any:
            info = model_info(b)
            if not info.get("dictionary"):
                raise Invalid("steering needs a dictionary: start the server with --sae")
            mode = body.get("mode", "add")
            if mode not in ("add", "clamp"):
                raise Invalid(f"mode must be add or clamp, not {mode!r}")
            features = _features(body, info.get("d_sae"))
            out = b.steer(_text(body), features, mode=mode, max_new_tokens=_int(body, "max_new_tokens", 16, 1, 64),
                          out_dir=self.steering_dir)  # fmt: skip
            out["saved_id"] = self.saved_id(out.get("saved"))
            return out

        return await self._call(request, run)


__all__ = ["MAX_FEATURES", "MAX_TEXT", "NO_MODEL", "STEERING_DIR", "ModelApi", "model_info"]
