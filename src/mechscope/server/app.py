"""The Starlette app of ``mechscope serve``, and the function that runs it with uvicorn.

:func:`app_for` builds the app over a list of directories: the JSON API of
:mod:`mechscope.server.api` (and the model routes of :mod:`mechscope.server.model_api`), the HTML
views of :mod:`mechscope.server.views` and its ``views_*`` modules, and the guards of
:mod:`mechscope.server.security` (Host check, write checks, security headers) around all of it.
:func:`serve` binds it to ``127.0.0.1`` unless told otherwise, and warns on stderr when the
address is reachable from other machines.
"""

from __future__ import annotations

import sys
import threading
import time
import webbrowser
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .api import MAX_BODY, Api, error_response
from .artifacts import Registry, ServeError
from .model_api import ModelApi
from .security import SecurityMiddleware, is_loopback
from .views import runs_page
from .views_features import feature_view, features_view
from .views_model import attention_view, lens_view, prompt_view, steer_view
from .views_results import circuit_view, diff_view, patching_view

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765
"""Where :func:`serve` listens unless told otherwise."""


def _routes(api: Api) -> list[Route]:
    registry = api.registry
    model = ModelApi(registry)

    def index(request: Request) -> Response:
        return runs_page(registry)

    return [
        Route("/", index),
        Route("/api/runs", api.runs),
        Route("/api/artifact/{id:path}/meta", api.meta),
        Route("/api/features/{id:path}/index", api.feature_index),
        Route("/api/features/{id:path}/summary", api.feature_summary),
        Route("/api/features/{id:path}/feature/{i}", api.feature),
        Route("/api/tensor/{id:path}", api.tensor),
        Route("/api/circuit/{id:path}", api.circuit),
        Route("/api/labels/{id:path}", api.labels, methods=["GET"]),
        Route("/api/labels/{id:path}", api.post_labels, methods=["POST"]),
        Route("/files/{path:path}", api.files),
        Route("/static/{name:path}", api.static),
        Route("/api/model/prompt", model.prompt, methods=["POST"]),
        Route("/api/model/attention", model.attention, methods=["POST"]),
        Route("/api/model/lens", model.lens, methods=["POST"]),
        Route("/api/model/steer", model.steer, methods=["POST"]),
        Route("/view/features/{id:path}", features_view),
        Route("/view/feature/{id:path}/{i:int}", feature_view),
        Route("/view/patching/{id:path}", patching_view),
        Route("/view/circuit/{id:path}", circuit_view),
        Route("/view/diff", diff_view),
        Route("/view/prompt", prompt_view),
        Route("/view/attention", attention_view),
        Route("/view/lens", lens_view),
        Route("/view/steer", steer_view),
    ]


def _serve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServeError)
    return error_response(exc)


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _internal_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"internal error ({type(exc).__name__}): {exc}"}, status_code=500)


def app_for(roots: Sequence[str | Path], allowed_hosts: Sequence[str] | None = None) -> Starlette:
    """The app serving the artifacts under ``roots`` (read-only, except the label sidecars).

    ``allowed_hosts``: ``Host`` names accepted besides ``127.0.0.1``, ``localhost`` and ``[::1]``
    with the server's port (e.g. a name behind which the user deliberately exposes the server).
    """
    api = Api(Registry([Path(r) for r in roots]))
    app = Starlette(
        routes=_routes(api),
        middleware=[Middleware(SecurityMiddleware, allowed_hosts=tuple(allowed_hosts or ()))],
        exception_handlers={ServeError: _serve_error, HTTPException: _http_error, Exception: _internal_error},
        max_body_size=MAX_BODY,
    )
    app.state.api = api
    app.state.model = None
    return app


def _announce(server: Any, host: str, open_browser: bool, n_artifacts: int) -> None:
    """Once uvicorn is listening, print the URL (with the port it got) and maybe open a browser."""
    while not server.started and not server.should_exit:
        time.sleep(0.05)
    if not server.started:
        return
    port = server.servers[0].sockets[0].getsockname()[1]
    name = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else name}:{port}/"
    print(f"mechscope serve: {n_artifacts} artifacts at {url}  (Ctrl-C stops)", file=sys.stderr, flush=True)
    if open_browser:
        webbrowser.open(url)


def serve(
    roots: Sequence[str | Path],
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    model: Any = None,
    open_browser: bool = False,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """Serve the artifacts under ``roots`` on ``http://host:port/`` until interrupted.

    ``host`` other than a loopback address makes the server reachable from other machines: a
    warning goes to stderr, and ``host`` (unless a wildcard) is accepted as a ``Host`` header.
    ``port`` 0 picks a free port. ``model``, a loaded model backend (the CLI passes a
    ``mechscope.pipeline.ui_backend.ModelBackend``), is kept on the app (``app.state.model``) for
    the model views; the server uses it by duck typing and never loads one itself.
    ``open_browser`` opens the runs page.
    """
    import uvicorn

    allowed = list(allowed_hosts)
    if not is_loopback(host):
        print(
            f"warning: mechscope serve is listening on {host}, reachable from other machines; it has no "
            "authentication. Bind 127.0.0.1 (the default) unless you mean to expose your artifacts.",
            file=sys.stderr,
            flush=True,
        )
        if host not in ("0.0.0.0", "::", ""):
            allowed.append(host)
    app = app_for(roots, allowed_hosts=allowed)
    app.state.model = model
    n = len(app.state.api.registry.discover())
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", proxy_headers=False,
                            server_header=False, access_log=False)  # fmt: skip
    server = uvicorn.Server(config)
    threading.Thread(target=_announce, args=(server, host, open_browser, n), daemon=True).start()
    try:
        server.run()
    finally:
        server.should_exit = True  # ends the announcing thread when the server never started


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "app_for", "serve"]
