"""The server's guards: Host and Origin checks, path containment (traversal, encodings, symlinks),
read-only behaviour, headers, loopback binding (a real uvicorn server) and the non-loopback warning."""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from starlette.testclient import TestClient

from mechscope.server import app_for, serve
from mechscope.server.security import CSP, host_allowed, is_loopback, safe_parts

ROOT = Path(__file__).resolve().parents[2]
BASE = "http://127.0.0.1:8765"
SECRET = "TOP-SECRET-CONTENT"


def _write_synthetic(path: Path) -> Path:
    spec = importlib.util.spec_from_file_location("bench_serve", ROOT / "bench" / "bench_serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_synthetic(path, n_features=12, n_examples=4, window=1, n_vocab=8)


@pytest.fixture()
def world(tmp_path) -> dict[str, Path]:
    """A served root with one artifact, and outside it a secret artifact and a secret file, with
    symlinks from inside the root to both."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    art = _write_synthetic(root / "runs" / "feat")
    secret_art = _write_synthetic(outside / "secret-art")
    meta = json.loads((secret_art / "meta.json").read_text())
    (secret_art / "meta.json").write_text(json.dumps({**meta, "model": SECRET}))
    save_file({"values": torch.full((2,), 7.0)}, str(secret_art / "values.safetensors"))
    (secret_art / "secret.txt").write_text(SECRET)
    doc = json.loads((secret_art / "explanations.json").read_text())
    doc["items"] = [{**item, "text": SECRET} for item in doc["items"]]
    (secret_art / "explanations.json").write_text(json.dumps(doc))
    (outside / "secret.txt").write_text(SECRET)
    (outside / "secret.safetensors").write_bytes(b"not really")
    (root / "runs" / "link-out").symlink_to(secret_art, target_is_directory=True)
    (art / "leak.html").symlink_to(outside / "secret.txt")
    (art / "leak.safetensors").symlink_to(outside / "secret.safetensors")
    (root / "runs" / "alias").symlink_to(art, target_is_directory=True)  # inside, but not canonical
    (root / "runs" / "meta-link").mkdir()
    (root / "runs" / "meta-link" / "meta.json").symlink_to(secret_art / "meta.json")
    (root / "runs" / ".tmp-half").mkdir()
    (root / "runs" / ".tmp-half" / "meta.json").write_text('{"kind": "demo"}')
    return {"root": root, "art": art, "outside": outside, "secret_art": secret_art}


@pytest.fixture()
def client(world) -> TestClient:
    return TestClient(app_for([world["root"]]), base_url=BASE)


def asgi(app, path: str, method: str = "GET", headers=None, body: bytes = b"", query: bytes = b""):
    """One request straight into the app, with ``path`` exactly as given (no client normalisation)."""
    hdrs = [(b"host", b"127.0.0.1:8765")] if headers is None else headers
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "",
             "headers": hdrs, "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8765)}  # fmt: skip
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_host_rules():
    assert host_allowed("127.0.0.1:8765", 8765) and host_allowed("localhost:8765", 8765)
    assert host_allowed("[::1]:8765", 8765) and host_allowed("LOCALHOST:8765", 8765)
    assert host_allowed("localhost", 80) and not host_allowed("localhost", 8765)
    for bad in ("evil.com:8765", "127.0.0.1:8766", "127.0.0.1.evil.com:8765", "localhost:8765@evil.com",
                "", "127.0.0.1:", "127.0.0.1:87650", "[::1:8765", None):  # fmt: skip
        assert not host_allowed(bad, 8765), bad
    assert host_allowed("box.lan:8765", 8765, ["box.lan"]) and host_allowed("box.lan:1", 8765, ["box.lan"])
    assert not host_allowed("box.lan:1", 8765, ["box.lan:8765"])
    assert (
        is_loopback("127.0.0.1")
        and is_loopback("127.1.2.3")
        and is_loopback("::1")
        and is_loopback("localhost")
    )
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")


def test_unsafe_parts_are_refused():
    for bad in ("..", "a/../b", "a/./b", "/etc/passwd", "a//b", "a\\..\\b", "C:/x", "c:", "a/\x00", ""):
        assert safe_parts(bad) is None, bad
    assert safe_parts("runs/demo-1/features") == ("runs", "demo-1", "features")


def test_dns_rebinding_hosts_get_400(client, world):
    assert client.get("/api/runs").status_code == 200
    assert client.get("/api/runs", headers={"host": "localhost:8765"}).status_code == 200
    for host in ("evil.example:8765", "127.0.0.1:9999", "localhost", "attacker.com"):
        r = client.get("/api/runs", headers={"host": host})
        assert r.status_code == 400 and "Host header" in r.json()["error"], host
    status, _ = asgi(client.app, "/api/runs", headers=[])  # no Host at all
    assert status == 400
    other = TestClient(app_for([world["root"]], allowed_hosts=["box.lan"]), base_url=BASE)
    assert other.get("/api/runs", headers={"host": "box.lan:8765"}).status_code == 200


ATTACKS = [
    "/api/artifact/{x}/meta", "/api/features/{x}/index", "/api/features/{x}/feature/0",
    "/api/circuit/{x}", "/api/labels/{x}", "/api/tensor/{x}?file=values.safetensors", "/files/{x}/meta.json",
    "/files/{x}/secret.txt", "/view/features/{x}", "/static/{x}",
]  # fmt: skip
TRAVERSALS = [
    "../outside/secret-art", "runs/../../outside/secret-art", "%2e%2e/outside/secret-art",
    "runs/%2e%2e/%2e%2e/outside/secret-art", "%252e%252e/outside/secret-art", "runs/link-out", "runs/alias",
    "runs/meta-link", "runs/.tmp-half", "runs%2f..%2f..%2foutside/secret-art", "..%5c..%5coutside%5csecret-art",
    "runs\\..\\..\\outside\\secret-art", f"{'/' * 2}etc", "runs/feat/%00", "%2Foutside/secret-art", "~/..",
]  # fmt: skip


def test_traversal_and_symlinks_out_of_the_root_are_404(client, world):
    outside = str(world["outside"]).lstrip("/")
    for template in ATTACKS:
        for x in [*TRAVERSALS, "/" + outside + "/secret-art", "%2F" + outside + "/secret-art"]:
            url = template.format(x=x)
            r = client.get(url)
            assert r.status_code == 404, (url, r.status_code, r.text[:200])
            assert SECRET not in r.text, url
            path, _, query = url.partition("?")
            status, body = asgi(
                client.app, path.replace("%2e", ".").replace("%2f", "/"), query=query.encode()
            )
            assert status == 404 and SECRET.encode() not in body, (path, status)


def test_symlinked_files_inside_an_artifact_are_404(client, world):
    assert client.get("/files/runs/feat/meta.json").status_code == 200  # the control
    assert client.get("/files/runs/feat/leak.html").status_code == 404
    (world["art"] / ".hidden").write_text("x")
    assert client.get("/files/runs/feat/.hidden").status_code == 404
    assert client.get("/files/runs/feat/leak.safetensors").status_code == 404
    r = client.get("/api/tensor/runs/feat?file=leak.safetensors")
    assert r.status_code == 404 and SECRET not in r.text
    for name in (
        "../../outside/secret.safetensors",
        "/etc/x.safetensors",
        "..%2Fx.safetensors",
        "a\\..\\x.safetensors",
    ):
        assert client.get(f"/api/tensor/runs/feat?file={name}").status_code == 404, name
    ids = {r["id"] for r in client.get("/api/runs").json()["runs"]}
    assert ids == {"runs/feat"}  # no symlinked, hidden or outside artifact is discovered


def test_labels_never_write_through_a_symlink_or_outside(client, world):
    (world["art"] / "labels.json").symlink_to(world["outside"] / "secret.txt")
    r = client.post("/api/labels/runs/feat", json={"a": "b"})
    assert r.status_code == 404
    assert (world["outside"] / "secret.txt").read_text() == SECRET
    for x in ("../outside/secret-art", "runs/link-out", "%2e%2e/outside/secret-art"):
        assert client.post(f"/api/labels/{x}", json={"a": "b"}).status_code == 404
    assert not (world["secret_art"] / "labels.json").exists()


def test_writes_need_json_from_this_origin(client, world):
    url = "/api/labels/runs/feat"
    assert client.post(url, content='{"a": "b"}', headers={"content-type": "text/plain"}).status_code == 403
    assert client.post(url, json={"a": "b"}, headers={"origin": "http://evil.example"}).status_code == 403
    assert client.post(url, json={"a": "b"}, headers={"origin": "null"}).status_code == 403
    assert client.post(url, json={"a": "b"}, headers={"origin": BASE}).status_code == 200
    assert not (world["art"] / "labels.json").is_symlink()
    big = {"k": "x" * 1000}
    big.update({f"k{i}": "v" * 1000 for i in range(1200)})
    assert client.post(url, json=big).status_code == 413
    assert client.put(url, json={"a": "b"}).status_code == 405


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            st = os.lstat(Path(dirpath) / f)
            out[str(Path(dirpath, f).relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def test_reads_write_nothing(client, world):
    before = _snapshot(world["root"])
    for url in ("/", "/api/runs", "/api/artifact/runs/feat/meta", "/api/features/runs/feat/index?token=t1&q=a",
                "/api/features/runs/feat/feature/3", "/api/labels/runs/feat", "/files/runs/feat/meta.json",
                "/view/features/runs/feat", "/view/feature/runs/feat/2"):  # fmt: skip
        assert client.get(url).status_code == 200, url
    assert _snapshot(world["root"]) == before
    assert client.post("/api/labels/runs/feat", json={"3": "three"}).status_code == 200
    after = _snapshot(world["root"])
    assert set(after) - set(before) == {"runs/feat/labels.json"}
    assert {k: v for k, v in after.items() if k in before} == before


def test_security_headers(client):
    r = client.get("/")
    assert r.headers["content-security-policy"] == CSP
    assert CSP == ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
                   "img-src 'self' data: blob:; connect-src 'self'")  # fmt: skip
    for url in ("/", "/api/runs", "/api/artifact/nope/meta", "/files/runs/feat/meta.json"):
        assert client.get(url).headers["x-content-type-options"] == "nosniff", url
    assert "content-security-policy" not in client.get("/api/runs").headers
    assert client.get("/files/runs/feat/leak.html").headers["x-content-type-options"] == "nosniff"


def test_runs_page_escapes_names(tmp_path):
    evil = tmp_path / '<img src=x onerror="alert(1)">'
    evil.mkdir()
    (evil / "meta.json").write_text(json.dumps({"kind": "<script>alert(2)</script>", "model": "<b>m</b>"}))
    page = TestClient(app_for([tmp_path]), base_url=BASE).get("/").text
    assert "<img src=x" not in page and "<script>alert(2)" not in page and "<b>m</b>" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page and "&lt;b&gt;m&lt;/b&gt;" in page


def test_real_server_binds_loopback(world):
    from urllib.parse import urlparse

    from browser import running

    with running(app_for([world["root"]])) as url:
        bound = urlparse(url)
        assert bound.hostname == "127.0.0.1"  # the address the socket is bound to
        conn = http.client.HTTPConnection("127.0.0.1", bound.port, timeout=10)
        conn.request("GET", "/api/runs")
        resp = conn.getresponse()
        assert resp.status == 200
        assert [r["id"] for r in json.loads(resp.read())["runs"]] == ["runs/feat"]
        for path, headers in (("/api/runs", {"Host": "evil.example"}),
                              ("/files/runs/feat/../../../outside/secret.txt", {}),
                              ("/files/runs/feat/leak.html", {})):  # fmt: skip
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status in (400, 404) and SECRET.encode() not in body, path
        conn.close()


@pytest.mark.parametrize(("host", "warned"), [("127.0.0.1", False), ("0.0.0.0", True), ("192.168.7.7", True)])
def test_serve_warns_when_not_loopback(world, monkeypatch, capsys, host, warned):
    import uvicorn

    seen = {}

    def fake_run(self, sockets=None):  # binds nothing
        seen["host"], seen["port"] = self.config.host, self.config.port
        seen["app"] = self.config.app

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    serve([world["root"]], host=host, port=0)
    assert seen["host"] == host and seen["port"] == 0
    err = capsys.readouterr().err
    assert ("warning" in err and "reachable from other machines" in err) == warned
    if host == "192.168.7.7":  # the bound name is accepted as a Host header
        c = TestClient(seen["app"], base_url="http://192.168.7.7:8765")
        assert c.get("/api/runs").status_code == 200
