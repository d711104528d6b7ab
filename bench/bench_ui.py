"""``mechscope serve`` views in headless Chromium: feature index, feature page, a large circuit.

What is measured
----------------
The real server (uvicorn on 127.0.0.1, a free port) serves two artifacts, and Debian's Chromium
(headless, software rendering, through Playwright as in ``tests/browser.py``) opens the views:

(a) **Feature index**: the synthetic feature artifact of ``bench/bench_serve.py`` (``--features``
    10⁵ × ``--examples`` 100); the index queries of that benchmark (search, filters, sorts) are
    fetched from inside the page (``fetch`` of ``/api/features/{id}/index``), so each time is the
    server's answer plus the loopback round trip. The first call builds the index table and is
    reported apart. ``bench/bench_serve.py`` times the same queries in-process.
(b) **Feature page** ``/view/feature/{id}/{i}`` for ``--loads`` random features: time to first
    render, from navigation start to the view's ``mechscope-ready`` mark, which is set once the
    histogram and every example's ``tokens`` component are in the page (the page's own
    ``performance`` clock, so it includes the HTML, the bundle, the feature request and the
    drawing). The first load also builds the artifact's DuckDB index and is reported apart.
    Target: a warm median ≤ 300 ms.
(c) **Circuit** ``/view/circuit/{id}``: a synthetic ``circuit.json`` of 5,000 nodes (20 layers ×
    250, 10 positions) and 50,000 mostly local edges. Reported: the ``/api/circuit`` request
    (server pruning to the 5,000 / 50,000 budget and JSON), the client time from the response to
    the drawn graph (parse, node mapping, ``mechscope.graph`` build and first draw), the time of
    one zoom frame (a wheel event, then the next animation frame; 20 in a row), and the
    intervals between animation frames while the mouse pans the graph (real input through
    Playwright, 40 moves), with their median, 95th percentile and maximum.

Run: ``.venv/bin/python bench/bench_ui.py [--features 100000] [--examples 100] [--loads 10]
[--dir DIR]``; results go to stdout and ``bench/results/ui.json``. The feature artifact is built
under ``--dir`` (a temporary directory by default) and reused when it is already there.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import math
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _bench_serve() -> Any:
    spec = importlib.util.spec_from_file_location("bench_serve", ROOT / "bench" / "bench_serve.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_circuit(path: Path, n_nodes: int = 5_000, n_edges: int = 50_000, seed: int = 0) -> Path:
    """A ``circuit`` artifact whose ``circuit.json`` has ``n_nodes`` feature nodes in 20 layers and
    ``n_edges`` edges between neighbouring layers, mostly between nearby nodes."""
    rng = random.Random(seed)
    layers, per = 20, n_nodes // 20
    nodes = [{"name": f"n{i}_{j}", "kind": "feature", "layer": i, "pos": j * 10 // per, "index": j}
             for i in range(layers) for j in range(per)]  # fmt: skip
    edges = []
    while len(edges) < n_edges:
        i, a = rng.randrange(layers - 1), rng.randrange(per)
        b = min(per - 1, max(0, a + round((rng.random() - 0.5) * 40)))
        w = (rng.random() - 0.5) * 2 * rng.random() ** 3
        edges.append({"name": f"e{len(edges)}", "source": f"n{i}_{a}", "target": f"n{i + 1}_{b}", "score": w})
    path.mkdir(parents=True, exist_ok=True)
    doc = {"kind": "circuit", "schema_version": 1, "method": "synthetic", "metric": "none", "nodes": nodes,
           "edges": edges}  # fmt: skip
    (path / "circuit.json").write_text(json.dumps(doc))
    (path / "meta.json").write_text(json.dumps({"kind": "circuit", "schema_version": 1}))
    return path


@contextlib.contextmanager
def running(app: Any) -> Iterator[str]:
    """``app`` on uvicorn at 127.0.0.1 (a free port); yields the base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _stats(times: list[float]) -> dict[str, float]:
    """Median, 95th percentile (nearest rank) and maximum, in ms rounded to 0.1."""
    ordered = sorted(times)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {"median_ms": round(statistics.median(ordered), 1), "p95_ms": round(p95, 1),
            "max_ms": round(ordered[-1], 1), "n": len(ordered)}  # fmt: skip


def _rounded(obj: Any) -> Any:
    """``obj`` with every float rounded to 0.1 (milliseconds)."""
    if isinstance(obj, float):
        return round(obj, 1)
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    return obj


FETCH_JS = """async ([url, reps]) => {
  const once = async () => { const t = performance.now(); const r = await fetch(url); await r.json();
    if (!r.ok) throw new Error(url); return performance.now() - t; };
  const cold = await once(), warm = [];
  for (let i = 0; i < reps; i++) warm.push(await once());
  return {cold, warm};
}"""


def index_queries(pg: Any, base: str, aid: str, reps: int) -> dict[str, Any]:
    """(a): each query of ``bench_serve.QUERIES``, fetched from the feature index page."""
    pg.goto(f"{base}/view/features/{aid}")
    pg.wait_for_selector("body[data-state=ready]", timeout=120_000)
    out = {}
    for name, query in _bench_serve().QUERIES.items():
        got = pg.evaluate(FETCH_JS, [f"/api/features/{aid}/index?{query}", reps])
        out[name] = {"query": query, "cold_ms": got["cold"], **_stats(got["warm"])}
        print(f"  {name:40s} first {got['cold']:8.1f} ms   warm median {out[name]['median_ms']:6.1f} ms")
    return out


READY_JS = "() => performance.getEntriesByName('mechscope-ready')[0].startTime"
API_JS = "(part) => performance.getEntriesByType('resource').find((e) => e.name.includes(part)).duration"


def feature_pages(pg: Any, base: str, aid: str, n_features: int, loads: int) -> dict[str, Any]:
    """(b): navigation start -> ``mechscope-ready`` on ``loads`` random feature pages (after a first load)."""
    rng = random.Random(1)
    times, api, first = [], [], None
    for k in range(loads + 1):
        pg.goto(f"{base}/view/feature/{aid}/{rng.randrange(n_features)}")
        pg.wait_for_selector("body[data-state=ready]", timeout=120_000)
        assert pg.locator(".ms-histogram").count() == 1 and pg.locator(".ms-tokens").count() > 0
        t = pg.evaluate(READY_JS)
        if k == 0:
            first = t
            continue
        times.append(t)
        api.append(pg.evaluate(API_JS, "/feature/"))
    out = {"first_ms": first, **_stats(times), "feature_request": _stats(api),
           "examples_drawn": pg.locator(".ms-tokens").count()}  # fmt: skip
    print(f"  feature page: first {first:.0f} ms, then median {out['median_ms']:.0f} ms, p95 {out['p95_ms']:.0f} ms, "
          f"max {out['max_ms']:.0f} ms over {loads} loads ({out['examples_drawn']} token rows each); "
          f"of which the feature request: median {out['feature_request']['median_ms']:.0f} ms")  # fmt: skip
    return out


ZOOM_JS = """async () => {
  const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
  const stage = document.querySelector('.ms-g-stage'), box = stage.getBoundingClientRect();
  const wheel = (dy) => stage.dispatchEvent(new WheelEvent('wheel', {deltaY: dy, clientX: box.x + box.width / 2,
    clientY: box.y + box.height / 2, bubbles: true, cancelable: true}));
  await frame(); await new Promise((r) => setTimeout(r, 300));
  const times = [];
  for (let i = 0; i < 20; i++) { const t = performance.now(); wheel(i < 10 ? -40 : 40); await frame(); times.push(performance.now() - t); }
  await new Promise((r) => setTimeout(r, 300));
  return times;
}"""
RECORD_JS = """() => { window.frames_ = []; window.recording_ = true;
  const tick = (t) => { window.frames_.push(t); if (window.recording_) requestAnimationFrame(tick); };
  requestAnimationFrame(tick); }"""


def circuit(pg: Any, base: str, aid: str) -> dict[str, Any]:
    """(c): the 5,000-node, 50,000-edge circuit view: request, build, zoom frames, pan frame intervals.
    The view is loaded twice; the second load finds ``circuit.json`` parsed in the server's cache."""
    first = {}
    for _ in range(2):
        pg.goto(f"{base}/view/circuit/{aid}")
        pg.wait_for_selector("body[data-state=ready]", timeout=120_000)
        first = first or {
            "request_ms": pg.evaluate(API_JS, "/api/circuit/"),
            "drawn_ms": pg.evaluate(READY_JS),
        }
    kept = int(pg.get_attribute(".ms-graph", "data-kept"))
    res = pg.evaluate("() => performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/circuit/'))"
                      ".map((e) => [e.requestStart, e.responseStart, e.responseEnd])[0]")  # fmt: skip
    ready = pg.evaluate(READY_JS)
    zoom = pg.evaluate(ZOOM_JS)
    box = pg.locator(".ms-g-stage").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    pg.evaluate(RECORD_JS)
    pg.mouse.move(x, y)
    pg.mouse.down()
    for i in range(40):
        pg.mouse.move(x + 8 * (i % 20) - 80, y + 3 * (i % 10))
    pg.mouse.up()
    frames = pg.evaluate("() => { window.recording_ = false; return window.frames_; }")
    intervals = [b - a for a, b in itertools.pairwise(frames)]
    out = {"nodes": int(pg.get_attribute(".ms-graph", "data-nodes")), "edges_kept": kept,
           "request_ms": res[2] - res[0], "server_wait_ms": res[1] - res[0], "client_build_ms": ready - res[2],
           "navigation_to_drawn_ms": ready, "first_load": first, "zoom_frame": _stats(zoom),
           "pan_frame_interval": _stats(intervals)}  # fmt: skip
    print(
        f"  circuit, first load: /api/circuit {first['request_ms']:.0f} ms, drawn {first['drawn_ms']:.0f} ms"
    )
    print(f"  circuit: {out['nodes']} nodes, {kept} edges; /api/circuit {out['request_ms']:.0f} ms "
          f"(server {out['server_wait_ms']:.0f} ms), client parse+build+draw {out['client_build_ms']:.0f} ms, "
          f"drawn {ready:.0f} ms after navigation")  # fmt: skip
    print(f"  zoom frame: median {out['zoom_frame']['median_ms']:.0f} ms, max {out['zoom_frame']['max_ms']:.0f} ms; "
          f"panning frame interval: median {out['pan_frame_interval']['median_ms']:.0f} ms, "
          f"p95 {out['pan_frame_interval']['p95_ms']:.0f} ms, max {out['pan_frame_interval']['max_ms']:.0f} ms "
          f"({len(intervals)} frames)")  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--features", type=int, default=100_000)
    p.add_argument("--examples", type=int, default=100)
    p.add_argument("--loads", type=int, default=10, help="feature pages loaded after the first")
    p.add_argument("--reps", type=int, default=5, help="repeats of each index query after the first")
    p.add_argument("--dir", type=Path, default=None, help="where to build (and reuse) the artifacts")
    a = p.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from browser import page  # tests/browser.py: Debian's Chromium through Playwright
    from mechscope.server import app_for

    root = a.dir or Path(tempfile.mkdtemp(prefix="mechscope-bench-ui-"))
    art = root / f"synthetic-{a.features}x{a.examples}"
    if not (art / "meta.json").exists():
        print(f"building {art} ...", flush=True)
        _bench_serve().write_synthetic(art, a.features, a.examples)
    big = root / "circuit-5000x50000"
    if not (big / "circuit.json").exists():
        write_circuit(big)
    out: dict[str, Any] = {"features": a.features, "examples": a.examples, "machine": platform.platform(),
                           "command": " ".join(["bench/bench_ui.py", *sys.argv[1:]])}  # fmt: skip
    with running(app_for([root])) as base, page() as pg:
        print("(b) feature page, time to first render")
        out["feature_page"] = feature_pages(pg, base, art.name, a.features, a.loads)
        print("(a) feature index queries, fetched from the page")
        out["index"] = index_queries(pg, base, art.name, a.reps)
        print("(c) circuit view")
        out["circuit"] = circuit(pg, base, big.name)
        assert pg.errors == [], pg.errors
    dest = Path(__file__).parent / "results" / "ui.json"
    dest.write_text(json.dumps(_rounded(out), indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
