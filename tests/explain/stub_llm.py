"""A stub OpenAI-compatible chat-completions server on 127.0.0.1, for testing the LLM path for real.

The server runs in a thread; each request is recorded (path, headers, JSON body) and answered by
a ``respond(body, n) -> (status, text)`` function, ``n`` the request's 0-based index. A few
responders are here: a fixed reply, a scripted sequence of statuses, and a rule-based judge that
answers the explain / detect / marking / simulate prompts from what the prompt says.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

Respond = Callable[[dict[str, Any], int], tuple[int, str]]


@dataclass
class Stub:
    """The running server: its base URL and the requests it received."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


def completion(text: str) -> str:
    """A chat-completions reply body whose message content is ``text``."""
    return json.dumps({"id": "stub", "object": "chat.completion",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}]})  # fmt: skip


@contextmanager
def serve(respond: Respond) -> Iterator[Stub]:
    """Run the stub until the ``with`` block ends; yields a :class:`Stub`."""
    stub = Stub(url="")
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                body = {"_raw": raw.decode(errors="replace")}
            with lock:
                n = len(stub.requests)
                stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            status, text = respond(body, n)
            data = text.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (a timeout test)
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def fixed(text: str) -> Respond:
    """Always answer 200 with a completion of ``text``."""
    return lambda body, n: (200, completion(text))


def scripted(statuses: list[int], text: str, delay_s: float = 0.0) -> Respond:
    """Answer request ``n`` with ``statuses[n]`` (the last one repeats), after ``delay_s`` seconds."""

    def respond(body: dict[str, Any], n: int) -> tuple[int, str]:
        time.sleep(delay_s)
        status = statuses[min(n, len(statuses) - 1)]
        return status, completion(text) if status == 200 else json.dumps({"error": f"stub status {status}"})

    return respond


QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _explained_token(user: str) -> str:
    """The first quoted token of the ``Explanation: ...`` line."""
    line = re.search(r"^Explanation: (.*)$", user, re.M)
    assert line, user
    return str(json.loads('"' + QUOTED.findall(line.group(1))[0] + '"'))


def rule_judge(explanation_reply: str = 'Explanation: fires on " dog"') -> Respond:
    """A judge that follows the explanation literally: the feature fires on its first quoted token.

    Detection: yes when that token occurs in the text. Marking: yes when every marked span is made
    of that token. Simulation: 10 on that token, 0 elsewhere. Anything else is an explain request,
    answered with ``explanation_reply``.
    """

    def respond(body: dict[str, Any], n: int) -> tuple[int, str]:
        user = body["messages"][-1]["content"]
        if "Does the feature activate on any token" in user:
            token = _explained_token(user)
            text = re.search(r"\nText:\n(.*)\n\nDoes", user, re.S)
            assert text, user
            return 200, completion("yes" if token in text.group(1) else "no")
        if "Are the marked tokens" in user:
            token = _explained_token(user)
            spans = re.findall(r"<<(.*?)>>", user)
            ok = bool(spans) and all(s.replace(token, "") == "" for s in spans)
            return 200, completion("Yes." if ok else "No.")
        if "Reply with exactly" in user:
            token = _explained_token(user)
            rows = re.findall(r"^(\d+)\t(\".*\")$", user, re.M)
            return 200, completion("\n".join(f"{i}\t{10 if json.loads(t) == token else 0}" for i, t in rows))
        return 200, completion("The marked tokens are all the same word.\n" + explanation_reply)

    return respond
