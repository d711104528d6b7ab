"""HTML shells: the runs browser (plain HTML) and feature views that load ``/static/mechscope.js``.

Every string from the file system (ids, kinds, model names) is HTML-escaped, and ids in links
are percent-encoded. Data for a page's script travels as JSON in a ``<script
type="application/json">`` element with ``<`` escaped, so no value can close the element. The
pages pass the ``Content-Security-Policy`` the server sets: scripts and fetches from this origin
only.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from .artifacts import Artifact, NotFound, Registry

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse}td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:left}
th{background:#f4f4f4}.muted{color:#777}.err{color:#a00}input{margin-right:.8rem}
code{background:#f4f4f4;padding:0 .2rem}
"""

OPENABLE = ("index.html", "dashboards/index.html", "heatmap.html", "report.html")
"""HTML files linked from the runs page when an artifact has them."""


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
        '<link rel="icon" href="data:,">'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def _json_script(element_id: str, data: Any) -> str:
    text = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def _links(art: Artifact) -> list[str]:
    aid = quote(art.id)
    links = [f'<a href="/api/artifact/{aid}/meta">meta</a>']
    if art.kind == "feature-stats":
        links.append(f'<a href="/view/features/{aid}">features</a>')
    if art.kind == "circuit":
        links.append(f'<a href="/api/circuit/{aid}?max_edges=500">circuit (JSON)</a>')
    for name in OPENABLE:
        try:
            if art.file(name, required=False) is not None:
                links.append(f'<a href="/files/{aid}/{quote(name)}">{escape(name)}</a>')
        except NotFound:
            continue
    return links


def runs_page(registry: Registry) -> Response:
    """``GET /``: every artifact under the served roots, with links to its views and files."""
    rows = []
    for art in registry.discover():
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
    return _page("mechscope: runs", f"<h1>Artifacts</h1><p class=muted>Serving {roots}</p>{table}")


FEATURES_JS = """
const cfg = JSON.parse(document.getElementById('cfg').textContent);
const api = `/api/features/${cfg.id_url}/index`;
const form = document.getElementById('filters');
const params = (offset, limit, sort) => {
  const p = new URLSearchParams({offset, limit});
  if (sort) { p.set('sort', sort.key); if (sort.desc) p.set('desc', '1'); }
  for (const el of form.elements) if (el.name && el.value !== '') p.set(el.name, el.value);
  return p;
};
const get = async (p) => { const r = await fetch(`${api}?${p}`); const b = await r.json();
  if (!r.ok) throw new Error(b.error || r.statusText); return b; };
const el = document.getElementById('table');
const href = (row) => `/view/feature/${cfg.id_url}/${row.feature}`;
let mechscope = null, table = null;
try { mechscope = await import('/static/mechscope.js'); }
catch (e) { el.textContent = `The component bundle did not load (${e.message}).`; }
async function render() {
  const first = await get(params(0, 1, null));
  const columns = first.columns.map((c) => c.key === 'feature' ? {...c, link: true} : c);
  if (table && table.destroy) table.destroy();
  el.replaceChildren();
  table = mechscope.table(el, {columns, total: first.total}, {fetch: (offset, limit, sort, filter) => {
    const p = params(offset, limit, sort);
    if (typeof filter === 'string' && filter) p.set('q', filter);
    return get(p).then((b) => ({...b, rows: b.rows.map((row) => ({...row, href: href(row)}))}));
  }});
}
if (mechscope) { await render(); form.addEventListener('change', render); }
"""

FEATURE_JS = """
const cfg = JSON.parse(document.getElementById('cfg').textContent);
const r = await fetch(`/api/features/${cfg.id_url}/feature/${cfg.feature}`);
const f = await r.json();
const out = document.getElementById('out');
if (!r.ok) { out.textContent = f.error; throw new Error(f.error); }
const text = (tag, s) => { const el = document.createElement(tag); el.textContent = s; out.append(el); return el; };
text('p', f.explanation ? `Explanation: ${f.explanation.text}` : 'No explanation.');
text('pre', JSON.stringify({...f.summary, scores: f.scores}, null, 1));
const mechscope = await import('/static/mechscope.js');
text('h2', 'Activations');
mechscope.histogram(out.appendChild(document.createElement('div')),
  {bins: f.histogram.bins, marks: f.histogram.quantile_edges || [], log: true});
for (const kind of ['top', 'quantile', 'random']) {
  const examples = f.examples[kind] || [];
  if (!examples.length) continue;
  text('h2', `${kind} examples`);
  const max = Math.max(...(f.examples.top || examples).map((e) => e.activation), 1e-9);
  for (const e of examples) mechscope.tokens(out.appendChild(document.createElement('div')),
    {tokens: e.tokens, values: e.activations, max, target: e.target});
}
text('h2', 'Co-occurring features');
for (const c of f.cooccurring) {
  const a = out.appendChild(document.createElement('a'));
  a.href = `/view/feature/${cfg.id_url}/${c.feature}`; a.textContent = `${c.feature} (${c.count}) `;
}
"""


def _feature_artifact(registry: Registry, aid: str) -> Artifact:
    art = registry.locate(aid).checked()
    if art.kind != "feature-stats":
        raise NotFound(f"artifact {aid!r} is a {art.kind!r}, not a feature-stats artifact")
    return art


def features_view(registry: Registry, request: Request) -> Response:
    """``GET /view/features/{id}``: the sortable, filterable feature index (``mechscope.table``)."""
    art = _feature_artifact(registry, request.path_params["id"])
    form = ('<form id=filters onsubmit="return false">token <input name=token size=8> '
            "density ≥ <input name=min_density size=6> ≤ <input name=max_density size=6></form>")  # fmt: skip
    body = (f"<h1>Features of <code>{escape(art.id)}</code></h1>{form}<div id=table></div>"
            + _json_script("cfg", {"id": art.id, "id_url": quote(art.id)})
            + f"<script type=module>{FEATURES_JS}</script>")  # fmt: skip
    return _page(f"features: {art.id}", body)


def feature_view(registry: Registry, request: Request) -> Response:
    """``GET /view/feature/{id}/{i}``: one feature (``mechscope.histogram`` and ``mechscope.tokens``)."""
    art = _feature_artifact(registry, request.path_params["id"])
    i = int(request.path_params["i"])
    body = (f'<p><a href="/view/features/{quote(art.id)}">all features</a></p>'
            f"<h1>Feature {i} of <code>{escape(art.id)}</code></h1><div id=out></div>"
            + _json_script("cfg", {"id": art.id, "id_url": quote(art.id), "feature": i})
            + f"<script type=module>{FEATURE_JS}</script>")  # fmt: skip
    return _page(f"feature {i}: {art.id}", body)


__all__ = ["feature_view", "features_view", "runs_page"]
