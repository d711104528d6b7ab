"""HTML shells of ``mechscope serve``: the page frame every view shares, and the runs browser.

Every view is a small HTML page that loads ``/static/mechscope.js`` as a module and fetches its
data from the JSON API; the components do the drawing. A page gets:

1. its configuration as JSON in ``<script type="application/json" id="cfg">`` (``<``, ``>`` and
   ``&`` escaped, so no value can close the element);
2. :data:`COMMON_JS`, inlined before the page's own script: fetch helpers that turn an API
   ``{error}`` into an exception, ``main()``, which shows any exception in the page's error
   panel (``#error``) instead of leaving a blank page, and ``exportBar()``, which offers the
   component as SVG and PNG, the fetched data as JSON or CSV (download links built in the page)
   and a Python snippet that reproduces the view from the library;
3. ``data-state`` on ``<body>``: ``ready`` once drawn (with a ``mechscope-ready`` performance
   mark), ``error`` when the error panel shows.

Every string from the file system (ids, kinds, model names) is HTML-escaped, and ids in links are
percent-encoded. The pages pass the server's ``Content-Security-Policy``: scripts and fetches
from this origin only. A view whose artifact is unknown or unreadable answers an HTML page with
the error panel filled in (status 404 or 422), never a blank page.

The views themselves live in :mod:`.views_results` (diff, patching, circuit),
:mod:`.views_features` (feature index and page) and :mod:`.views_model` (prompt, attention,
lens, steering).
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import quote

from starlette.responses import HTMLResponse, Response

from .artifacts import Artifact, NotFound, Registry, ServeError

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse}td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:left}
th{background:#f4f4f4}.muted{color:#777}.err{color:#a00}input{margin-right:.8rem}
code{background:#f4f4f4;padding:0 .2rem}nav{margin-bottom:1rem}nav a{margin-right:.8rem}
.error-panel{border:1px solid #c33;background:#fff0f0;color:#900;padding:.6rem .9rem;margin:1rem 0;
white-space:pre-wrap}.panel{border:1px solid #ccc;background:#fafafa;padding:.6rem .9rem;margin:1rem 0}
.cols{display:flex;gap:1.5rem;flex-wrap:wrap;align-items:flex-start}.cols>*{flex:1 1 420px;min-width:0}
tr.differs td{background:#fff3cd}.exports{margin:1.2rem 0;border-top:1px solid #ddd;padding-top:.6rem}
.exports button,.exports a{margin-right:.6rem}pre.snippet{background:#f6f8fa;padding:.6rem;overflow:auto}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:.1rem .8rem}dl.kv dt{color:#555}dl.kv dd{margin:0}
pre.gen{white-space:pre-wrap;background:#f6f8fa;padding:.6rem}textarea{width:100%;max-width:48rem}
"""

NAV = (
    '<nav><a href="/">runs</a><a href="/view/prompt">prompt</a><a href="/view/attention">attention</a>'
    '<a href="/view/lens">lens</a><a href="/view/steer">steer</a></nav>'
)

COMMON_JS = r"""
const cfg = JSON.parse(document.getElementById('cfg').textContent);
const errorPanel = document.getElementById('error');
const el = (tag, parent, text, cls) => {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  if (parent) parent.append(node);
  return node;
};
function fail(err) {
  const msg = err instanceof Error ? err.message : String(err);
  errorPanel.hidden = false;
  errorPanel.textContent = msg;
  document.body.dataset.state = 'error';
}
function clearError() { errorPanel.hidden = true; errorPanel.textContent = ''; }
window.addEventListener('unhandledrejection', (e) => { e.preventDefault(); fail(e.reason); });
async function getJSON(url, init) {
  const r = await fetch(url, init);
  let body;
  try { body = await r.json(); } catch { throw new Error(`${url}: ${r.status} ${r.statusText} (not JSON)`); }
  if (!r.ok) throw new Error(body && body.error ? body.error : `${url}: ${r.status} ${r.statusText}`);
  return body;
}
const postJSON = (url, body) => getJSON(url, {method: 'POST', body: JSON.stringify(body),
  headers: {'Content-Type': 'application/json'}});
let bundleModule = null;
async function bundle() {
  if (bundleModule) return bundleModule;
  try { bundleModule = await import('/static/mechscope.js'); }
  catch (e) { throw new Error(`the component bundle /static/mechscope.js did not load (${e.message})`); }
  return bundleModule;
}
async function main(fn) {  // the mark times a view: navigation start -> drawn (bench/bench_ui.py)
  try { document.body.dataset.state = 'loading'; await fn(); document.body.dataset.state = 'ready';
    performance.mark('mechscope-ready'); }
  catch (e) { fail(e); }
}
const csvCell = (v) => { const s = v === null || v === undefined ? '' : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s; };
const csvText = (rows) => rows.map((r) => r.map(csvCell).join(',')).join('\n') + '\n';
const pyStr = (s) => JSON.stringify(String(s));
function save(name, blob) {
  const a = el('a'); a.href = URL.createObjectURL(blob); a.download = name; a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}
function pngOf(svg, scale = 2) {  // a data: URL, since the page's CSP allows no blob: images
  const bytes = new TextEncoder().encode(svg);
  let bin = '';
  for (let i = 0; i < bytes.length; i += 8192) bin += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const w = Math.max(1, img.naturalWidth), h = Math.max(1, img.naturalHeight);
      const k = Math.min(scale, 16384 / Math.max(w, h), Math.sqrt(6.4e7 / (w * h)));
      const c = el('canvas'); c.width = Math.max(1, Math.floor(w * k)); c.height = Math.max(1, Math.floor(h * k));
      const ctx = c.getContext('2d'); ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, c.width, c.height);
      ctx.drawImage(img, 0, 0, c.width, c.height);
      c.toBlob((b) => (b ? resolve(b) : reject(new Error('the PNG encoder returned nothing'))), 'image/png');
    };
    img.onerror = () => reject(new Error('the SVG export could not be drawn as an image'));
    img.src = `data:image/svg+xml;base64,${btoa(bin)}`;
  });
}
function exportBar(host, {name, handles = [], json, csv, snippet}) {
  for (const a of host.querySelectorAll('a[href^="blob:"]')) URL.revokeObjectURL(a.href);
  host.replaceChildren();
  el('strong', host, 'Export: ');
  for (const [label, handle] of handles) {
    const suffix = handles.length > 1 ? `-${label}` : '';
    const svg = el('button', host, `SVG${handles.length > 1 ? ` (${label})` : ''}`);
    svg.type = 'button'; svg.dataset.export = `svg${suffix}`;
    svg.onclick = () => save(`${name}${suffix}.svg`, new Blob([handle.toSVG()], {type: 'image/svg+xml'}));
    const png = el('button', host, `PNG${handles.length > 1 ? ` (${label})` : ''}`);
    png.type = 'button'; png.dataset.export = `png${suffix}`;
    png.onclick = () => pngOf(handle.toSVG()).then((b) => save(`${name}${suffix}.png`, b)).catch(fail);
  }
  const link = (kind, make, type) => {  // data given: a link; a function: a button reading it on click
    if (typeof make === 'function') {
      const b = el('button', host, kind.toUpperCase()); b.type = 'button'; b.dataset.export = kind;
      b.onclick = () => save(`${name}.${kind}`, new Blob([make()], {type}));
      return;
    }
    const a = el('a', host, kind.toUpperCase()); a.download = `${name}.${kind}`; a.dataset.export = kind;
    a.href = URL.createObjectURL(new Blob([make], {type}));
  };
  const asJSON = (v) => JSON.stringify(v, null, 1);
  if (json !== undefined) link('json', typeof json === 'function' ? () => asJSON(json()) : asJSON(json), 'application/json');
  if (csv) link('csv', csv, 'text/csv');
  if (snippet) { el('div', host, 'Python:', 'muted'); el('pre', host, snippet, 'snippet'); }
}
"""


def json_script(element_id: str, data: Any) -> str:
    """``data`` as JSON in a ``<script type="application/json">`` element that no value can close."""
    text = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A whole HTML page around ``body``, with the navigation bar."""
    return HTMLResponse(
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
        '<link rel="icon" href="data:,">'
        f"<style>{STYLE}</style></head><body>{NAV}{body}</body></html>",
        status_code=status,
    )


def shell(title: str, heading: str, cfg: dict[str, Any], script: str, html: str = "") -> HTMLResponse:
    """A view: escaped ``heading``, the error panel, ``html`` (trusted markup), the config, the script."""
    body = (
        f"<h1>{escape(heading)}</h1><div id=error class=error-panel role=alert hidden></div>{html}"
        + json_script("cfg", cfg)
        + f"<script type=module>{COMMON_JS}\n{script}</script>"
    )
    return page(title, body)


def error_page(title: str, exc: ServeError) -> HTMLResponse:
    """The error panel alone, with the error's status (404 unknown, 422 malformed or partial)."""
    body = f"<h1>{escape(title)}</h1><div id=error class=error-panel role=alert>{escape(str(exc))}</div>"
    return page(title, f'{body}<script type=module>document.body.dataset.state="error"</script>', exc.status)


def artifact_of(registry: Registry, aid: str, kinds: tuple[str, ...] | None = None) -> Artifact:
    """The artifact ``aid`` (readable ``meta.json``), or :class:`NotFound` if not one of ``kinds``."""
    art = registry.locate(aid).checked()
    if kinds is not None and art.kind not in kinds:
        raise NotFound(f"artifact {aid!r} is a {art.kind!r}, not {' or '.join(repr(k) for k in kinds)}")
    return art


def ref(art: Artifact) -> dict[str, Any]:
    """How a page's script names an artifact: its id, the id for URLs, its kind and directory."""
    return {"id": art.id, "id_url": quote(art.id), "kind": art.kind, "path": str(art.path)}


OPENABLE = ("index.html", "dashboards/index.html", "heatmap.html", "report.html")
"""HTML files linked from the runs page when an artifact has them."""
VIEWS = {"feature-stats": ("features", "features"), "patch_result": ("patching", "heat map"),
         "circuit": ("circuit", "graph")}  # fmt: skip
"""The view of each known kind: route name and link text."""


def _links(art: Artifact) -> list[str]:
    aid = quote(art.id)
    links = [f'<a href="/api/artifact/{aid}/meta">meta</a>']
    if art.kind in VIEWS:
        route, text = VIEWS[art.kind]
        links.append(f'<a href="/view/{route}/{aid}">{text}</a>')
    if art.kind == "circuit":
        links.append(f'<a href="/api/circuit/{aid}?max_edges=500">circuit (JSON)</a>')
    for name in OPENABLE:
        try:
            if art.file(name, required=False) is not None:
                links.append(f'<a href="/files/{aid}/{quote(name)}">{escape(name)}</a>')
        except NotFound:
            continue
    return links


def _diff_form(arts: list[Artifact]) -> str:
    """Two pickers over every artifact and a button opening ``/view/diff?a=&b=``."""
    if len(arts) < 2:
        return ""

    def options(chosen: int) -> str:
        return "".join(f'<option value="{escape(a.id)}"{" selected" if i == chosen else ""}>'
                       f"{escape(a.id)} ({escape(str(a.kind))})</option>" for i, a in enumerate(arts))  # fmt: skip

    return (f'<form id=diff action="/view/diff" method=get><strong>Compare two runs:</strong> '
            f"<select name=a>{options(0)}</select> <select name=b>{options(1)}</select> "
            "<button type=submit>diff</button></form>")  # fmt: skip


def runs_page(registry: Registry) -> Response:
    """``GET /``: every artifact under the served roots, with links to its views and files."""
    rows = []
    arts = registry.discover()
    for art in arts:
        s = art.summary()
        cells = [f"<code>{escape(art.id)}</code>", escape(str(s.get("kind"))), escape(str(s.get("schema_version"))),
                 escape(str(s.get("model", ""))), escape(str(s.get("created", "")))]  # fmt: skip
        links = " · ".join(_links(art)) if not art.error else f'<span class="err">{escape(art.error)}</span>'
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + f"<td>{links}</td></tr>")
    roots = ", ".join(f"<code>{escape(str(r))}</code>" for r in registry.roots)
    table = (
        "<table><thead><tr><th>id</th><th>kind</th><th>schema</th><th>model</th><th>created</th><th>open</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        if rows else '<p class="muted">No artifacts (directories with a meta.json) found.</p>'
    )  # fmt: skip
    readable = [a for a in arts if not a.error]
    return page(
        "mechscope: runs",
        f"<h1>Artifacts</h1><p class=muted>Serving {roots}</p>{_diff_form(readable)}{table}",
    )


__all__ = ["COMMON_JS", "artifact_of", "error_page", "json_script", "page", "ref", "runs_page", "shell"]
