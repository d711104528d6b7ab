"""A small client for any OpenAI-compatible chat-completions endpoint, on the standard library.

One call is one ``POST {base_url}/chat/completions`` with ``{"model", "messages", "temperature",
"max_tokens", "seed"}`` and, when a key is set, ``Authorization: Bearer <key>``. The reply's
``choices[0].message.content`` is returned.

Failures:

1. connection errors, timeouts, HTTP 429 and 5xx are retried ``max_retries`` times, waiting
   ``backoff x 2^k`` seconds before retry ``k``; when all attempts fail, :class:`LLMError` names the
   URL, the number of attempts and the last failure;
2. any other HTTP status (400, 401, 404, ...) fails at once, with the status and the start of
   the body;
3. a reply that is not JSON, or has no ``choices[0].message.content`` string, fails at once.

Works with OpenAI, vLLM, llama.cpp's server, Ollama (``/v1``), LM Studio and the like.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import MechscopeError

EXCERPT = 300
"""Characters of a reply body quoted in an error."""


class LLMError(MechscopeError):
    """The LLM endpoint was unreachable, refused the request, or answered something unusable."""


@dataclass(frozen=True)
class LLMConfig:
    """Where the LLM is and how it is asked."""

    base_url: str
    """The API root, e.g. ``http://localhost:8000/v1``; ``/chat/completions`` is appended."""
    model: str
    """The model name sent with each request."""
    api_key: str | None = field(default=None, repr=False)
    """Sent as ``Authorization: Bearer <key>`` when set; never stored in results."""
    timeout_s: float = 60.0
    """Seconds to wait for one request (connection and reply)."""
    max_retries: int = 3
    """Retries after a connection error, timeout, HTTP 429 or 5xx (so ``1 + max_retries`` attempts)."""
    backoff: float = 1.0
    """Seconds before the first retry; doubled before each further one."""
    temperature: float = 0.0
    """Sampling temperature (0: as deterministic as the server allows)."""
    seed: int | None = 0
    """Sampling seed sent to the server (not every server honours it); ``None`` to send none."""
    max_tokens: int = 512
    """Most tokens in a reply."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise LLMError(f"LLM base_url must start with http:// or https://, got {self.base_url!r}")
        if not self.model:
            raise LLMError("LLM model name is empty; set MECHSCOPE_LLM_MODEL or pass model=")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> LLMConfig:
        """Read ``MECHSCOPE_LLM_BASE_URL``, ``MECHSCOPE_LLM_MODEL`` and ``MECHSCOPE_LLM_API_KEY``
        (falling back to ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``); ``overrides`` set other fields."""
        env = os.environ if env is None else env
        base_url = env.get("MECHSCOPE_LLM_BASE_URL") or env.get("OPENAI_BASE_URL")
        model = env.get("MECHSCOPE_LLM_MODEL")
        missing = [name for name, v in [("MECHSCOPE_LLM_BASE_URL (or OPENAI_BASE_URL)", base_url),
                                        ("MECHSCOPE_LLM_MODEL", model)] if not v]  # fmt: skip
        if missing:
            raise LLMError(
                "no LLM endpoint configured: set "
                + " and ".join(missing)
                + ", e.g. MECHSCOPE_LLM_BASE_URL=http://localhost:8000/v1 MECHSCOPE_LLM_MODEL=my-model"
            )
        key = env.get("MECHSCOPE_LLM_API_KEY") or env.get("OPENAI_API_KEY") or None
        assert base_url is not None and model is not None
        return replace(cls(base_url=base_url, model=model, api_key=key), **overrides)

    def settings(self) -> dict[str, Any]:
        """The settings that shape replies, for the record (no key)."""
        return {"base_url": self.base_url, "model": self.model, "temperature": self.temperature,
                "seed": self.seed, "max_tokens": self.max_tokens}  # fmt: skip


class _Retryable(Exception):
    """A failure worth another attempt (connection, timeout, 429, 5xx)."""


class ChatClient:
    """Sends chat messages to :attr:`config`'s endpoint and returns the reply text."""

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self.url = f"{config.base_url}/chat/completions"

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The model's reply to ``messages`` (retried as the module docstring says)."""
        cfg = self.config
        attempts = 1 + max(0, cfg.max_retries)
        last = ""
        for k in range(attempts):
            if k:
                time.sleep(cfg.backoff * 2 ** (k - 1))
            try:
                return _content(self._post(messages), self.url)
            except _Retryable as e:
                last = str(e)
        raise LLMError(
            f"LLM endpoint {self.url} failed after {attempts} attempt{'s' if attempts > 1 else ''}: {last}; "
            "check that the server is up and MECHSCOPE_LLM_BASE_URL points at it"
        )

    def _post(self, messages: list[dict[str, str]]) -> str:
        """One request; the body on HTTP 200, :class:`_Retryable` or :class:`LLMError` otherwise."""
        cfg = self.config
        body: dict[str, Any] = {"model": cfg.model, "messages": messages, "temperature": cfg.temperature,
                                "max_tokens": cfg.max_tokens}  # fmt: skip
        if cfg.seed is not None:
            body["seed"] = cfg.seed
        headers = {"Content-Type": "application/json"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=cfg.timeout_s) as resp:
                return str(resp.read().decode("utf-8", errors="replace"))
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", errors="replace")[:EXCERPT]
            if e.code == 429 or e.code >= 500:
                raise _Retryable(f"HTTP {e.code}: {text}") from None
            raise LLMError(f"LLM endpoint {self.url} answered HTTP {e.code} (not retried): {text}") from None
        except TimeoutError:
            raise _Retryable(f"no reply within timeout_s={cfg.timeout_s} s") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                raise _Retryable(f"no connection within timeout_s={cfg.timeout_s} s") from None
            raise _Retryable(f"cannot connect ({e.reason})") from None
        except (ConnectionError, http.client.HTTPException) as e:  # the server hung up mid-reply
            raise _Retryable(f"connection lost ({type(e).__name__}: {e})") from None


def _content(body: str, url: str) -> str:
    """``choices[0].message.content`` of a chat-completions reply, or an :class:`LLMError`."""
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        raise LLMError(
            f"LLM endpoint {url} replied with something that is not JSON: {body[:EXCERPT]!r}"
        ) from None
    try:
        content = obj["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise LLMError(
            f"LLM endpoint {url} replied without a choices[0].message.content string: {body[:EXCERPT]!r}"
        )
    return content
