"""``mechscope serve``: a local, read-only web server over artifact directories.

:func:`app_for` builds the Starlette app; :func:`serve` runs it with uvicorn on 127.0.0.1. The
server reads artifacts in place (``meta.json``, Parquet through DuckDB, safetensors by slice,
JSON) and writes nothing but ``labels.json`` sidecars and, when it was given a model backend
(``mechscope serve --model``; the server itself imports no model code), the steering runs of the
steering view under the first root's ``steering/``. See ``docs/serve.md`` for the API, the views
and the security rules.
"""

from __future__ import annotations

from .app import DEFAULT_HOST, DEFAULT_PORT, app_for, serve

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "app_for", "serve"]
