"""The server's guards: who may talk to it, what paths it may touch, and the headers it always sends.

1. **Host header** (DNS-rebinding defence): a request is answered only when its ``Host`` is
   ``127.0.0.1:PORT``, ``localhost:PORT`` or ``[::1]:PORT`` (``PORT`` being the port the
   server's socket is bound to), or a host named in ``allowed_hosts``; anything else gets 400.
   A web page on another origin that rebinds its DNS name to 127.0.0.1 still sends its own
   name in ``Host``, so it is refused.
2. **Writes** (the label sidecar): a ``POST`` must carry ``Content-Type: application/json``
   (which a cross-origin page cannot send without a CORS preflight, which this server never
   grants) and, when the browser sends an ``Origin``, an allowed one; else 403.
3. **Paths**: an artifact id or file name from a request is split into parts, and refused when
   any part is empty, ``.`` or ``..``, holds a backslash, a NUL, or a drive (``C:``), or the
   whole is absolute. The joined path is then resolved (symlinks followed) and must stay
   inside the directory it was joined onto (``Path.is_relative_to``), or it does not exist
   as far as the server is concerned (404).
4. **Headers**: every response gets ``X-Content-Type-Options: nosniff``,
   ``Referrer-Policy: no-referrer`` and ``X-Frame-Options: SAMEORIGIN``; every HTML response a
   strict ``Content-Security-Policy`` (scripts, styles, images and fetches from this origin
   only; inline scripts and styles allowed for the self-contained dashboards).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'"
)
"""The ``Content-Security-Policy`` of every HTML response."""

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
"""Host names always accepted (with the server's port)."""

Scope = dict[str, Any]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> tuple[str, int | None] | None:
    """``"name:port"`` (or ``"[v6]:port"``, or without a port) as ``(name, port)``; None if malformed."""
    value = value.strip().lower()
    if not value or any(c in value for c in "/\\@ \t"):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1 :]
    else:
        name, sep, port_text = value.partition(":")
        rest = sep + port_text
    if not rest:
        return name, None
    if not rest.startswith(":") or not rest[1:].isdigit() or len(rest) > 6:
        return None
    return name, int(rest[1:])


def host_allowed(value: str | None, port: int | None, allowed: Iterable[str] = ()) -> bool:
    """Whether a ``Host`` header ``value`` names this server (bound to ``port``).

    Loopback names must carry the server's port (or none, when the port is 80). An entry of
    ``allowed`` matches the name with any port, or exactly when it has a port itself.
    """
    if value is None:
        return False
    parsed = split_host(value)
    if parsed is None:
        return False
    name, got = parsed
    port_ok = got == port or (got is None and port == 80)
    if name in LOOPBACK_NAMES and port_ok:
        return True
    for entry in allowed:
        want = split_host(entry)
        if want is None:
            continue
        if want[0] == name and (want[1] is None or want[1] == got):
            return True
    return False


def origin_allowed(origin: str, port: int | None, allowed: Iterable[str] = ()) -> bool:
    """Whether an ``Origin`` header (``http://host:port``) names this server."""
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in ("http", "https") or "/" in rest:
        return False
    return host_allowed(rest, port, allowed)


def safe_parts(text: str) -> tuple[str, ...] | None:
    """``text`` (a ``/``-separated relative path from a request) as parts, or None when unsafe."""
    if not text or "\\" in text or "\x00" in text or text.startswith("/"):
        return None
    parts = tuple(text.split("/"))
    for part in parts:
        if part in ("", ".", "..") or (len(part) >= 2 and part[1] == ":" and part[0].isalpha()):
            return None
    if PurePosixPath(text).is_absolute():
        return None
    return parts


def contained(base: Path, parts: tuple[str, ...]) -> Path | None:
    """``base / parts`` resolved (symlinks followed), or None when it leaves ``base`` or does not exist."""
    root = base.resolve()
    try:
        target = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a symlink loop, a name the OS refuses
        return None
    return target if target.is_relative_to(root) else None


def resolve_within(base: Path, text: str) -> Path | None:
    """A request's relative path ``text`` under ``base``: :func:`safe_parts` then :func:`contained`."""
    parts = safe_parts(text)
    return None if parts is None else contained(base, parts)


class SecurityMiddleware:
    """ASGI middleware: the Host and Origin checks and the security headers (see the module docstring)."""

    def __init__(self, app: Any, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = tuple(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        port = (scope.get("server") or (None, None))[1]
        if not host_allowed(headers.get("host"), port, self.allowed):
            await _refuse(send, 400, f"Host header {headers.get('host')!r} is not this server's "
                          "(127.0.0.1 or localhost with its port); use the URL `mechscope serve` printed")  # fmt: skip
            return
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            origin = headers.get("origin")
            if ctype != "application/json" or (
                origin is not None and not origin_allowed(origin, port, self.allowed)
            ):
                await _refuse(
                    send, 403, "writes need Content-Type: application/json from this server's own pages"
                )
                return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                ctype = next((v for k, v in raw if k.lower() == b"content-type"), b"")
                raw += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                        (b"x-frame-options", b"SAMEORIGIN")]  # fmt: skip
                if ctype.lower().startswith(b"text/html"):
                    raw.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _refuse(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


__all__ = [
    "CSP",
    "LOOPBACK_NAMES",
    "SecurityMiddleware",
    "contained",
    "host_allowed",
    "is_loopback",
    "origin_allowed",
    "resolve_within",
    "safe_parts",
]
