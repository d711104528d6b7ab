"""The feature index and the feature page of a ``feature-stats`` artifact.

* ``/view/features/{id}``: the virtualised, sortable, filterable index (``mechscope.table``) over
  ``/api/features/{id}/index``; the filter box searches explanations on the server.
* ``/view/feature/{id}/{i}``: one feature from ``/api/features/{id}/feature/{i}``: its summary;
  the explanation, scores and validation card; the activation histogram (``mechscope.histogram``)
  with the equal-count quantile edges as marks; the logit-effect table (promoted and suppressed
  tokens); the examples (top, each quantile, random) as ``mechscope.tokens`` with a hover
  readout; and its neighbours, by co-firing and, when ``features.parquet`` records them
  (``cosine_neighbours`` and ``cosine_values``), by decoder cosine.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .artifacts import ServeError
from .views import artifact_of, error_page, ref, shell

FEATURES_JS = """
const api = `/api/features/${cfg.art.id_url}/index`;
const form = document.getElementById('filters');
const loaded = new Map();  // offset -> row: what the table has fetched, for the exports
const params = (offset, limit, sort) => {
  const p = new URLSearchParams({offset, limit});
  if (sort) { p.set('sort', sort.key); if (sort.desc) p.set('desc', '1'); }
  for (const f of form.elements) if (f.name && f.value !== '') p.set(f.name, f.value);
  return p;
};
const href = (row) => `/view/feature/${cfg.art.id_url}/${row.feature}`;
const box = document.getElementById('table');
let table = null, columns = [];
async function render() {
  const first = await getJSON(`${api}?${params(0, 1, null)}`);
  columns = first.columns.map((c) => c.key === 'feature' ? {...c, link: true} : c);
  if (table) table.destroy();
  loaded.clear();
  table = mechscope.table(box, {columns, total: first.total}, {fetch: (offset, limit, sort, filter) => {
    const p = params(offset, limit, sort);
    if (typeof filter === 'string' && filter) p.set('q', filter);
    return getJSON(`${api}?${p}`).then((b) => {
      b.rows.forEach((row, j) => loaded.set(offset + j, row));
      return {...b, rows: b.rows.map((row) => ({...row, href: href(row)}))};
    });
  }});
  const rows = () => [...loaded.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]);
  exportBar(document.getElementById('exports'), {name: `features-${cfg.art.id}`, handles: [['table', table]],
    json: rows, csv: () => csvText([columns.map((c) => c.key), ...rows().map((r) => columns.map((c) => r[c.key]))]),
    snippet: cfg.snippet});
}
const mechscope = await bundle().catch((e) => { fail(e); return null; });
if (mechscope) await main(async () => {
  await render();
  form.addEventListener('change', () => main(render));
});
"""

FEATURE_JS = """
const out = document.getElementById('out');
const kv = (parent, pairs) => { const dl = el('dl', parent, null, 'kv');
  for (const [k, v] of pairs) if (v !== undefined && v !== null) { el('dt', dl, k); el('dd', dl, v); } return dl; };
const num = (v) => typeof v === 'number' ? String(Number(v.toPrecision(4))) : v;
const featureLink = (parent, i, text) => { const a = el('a', parent, text);
  a.href = `/view/feature/${cfg.art.id_url}/${i}`; a.dataset.feature = i; return a; };
function notes(f) {
  el('h2', out, 'Explanation, scores and validation');
  const ex = el('p', out, f.explanation ? f.explanation.text : 'No explanation recorded.', 'explanation');
  if (f.explanation) el('span', ex, ` (${f.explanation.explainer})`, 'muted');
  if (f.scores.length) kv(out, f.scores.map((s) => [`score: ${s.scorer}`, num(s.value)])).id = 'scores';
  else el('p', out, 'No scores recorded.', 'muted');
  const card = el('div', out, null, 'panel'); card.id = 'card';
  if (!f.card) { el('span', card, 'No validation card recorded.', 'muted'); return; }
  el('strong', card, `Validation: ${f.card.verdict ?? '?'}`);
  kv(card, Object.entries(f.card).filter(([, v]) => typeof v !== 'object' || v === null).map(([k, v]) => [k, num(v)]));
  for (const g of f.card.generations || []) { const p = el('div', card, null, 'cols');
    el('pre', p, `before: ${g.before}`, 'gen'); el('pre', p, `after: ${g.after}`, 'gen'); }
}
function logits(s) {
  el('h2', out, 'Logit effects');
  el('p', out, "Tokens the feature's decoder direction promotes and suppresses most (W_dec @ W_U).", 'muted');
  const t = el('table', out); t.id = 'logits';
  const head = el('tr', el('thead', t)); for (const c of ['#', 'promoted', 'suppressed']) el('th', head, c);
  const body = el('tbody', t), up = s.promoted || [], down = s.suppressed || [];
  for (let k = 0; k < Math.max(up.length, down.length); k++) {
    const tr = el('tr', body); el('td', tr, k + 1); el('td', tr, up[k] ?? '', 'up'); el('td', tr, down[k] ?? '', 'down');
  }
}
function examples(f, edges) {
  const max = Math.max(...(f.examples.top || []).map((e) => e.activation), 1e-9);
  const hover = el('p', out, 'Hover a token to read its activation.', 'muted'); hover.id = 'hover';
  const group = (title, list) => {
    if (!list.length) return;
    el('h3', out, title);
    for (const e of list) {
      const box = el('div', out); box.dataset.kind = e.kind; box.dataset.quantile = e.quantile; box.dataset.rank = e.rank;
      mechscope.tokens(box, {tokens: e.tokens, values: e.activations, max, target: e.target});
    }
  };
  el('h2', out, 'Examples');
  group('Top activations', f.examples.top || []);
  const byQ = new Map();
  for (const e of f.examples.quantile || []) byQ.set(e.quantile, [...(byQ.get(e.quantile) || []), e]);
  for (const [q, list] of [...byQ.entries()].sort((a, b) => b[0] - a[0])) {
    const range = edges.length > q + 1 ? ` (activations ${num(edges[q])} to ${num(edges[q + 1])})` : '';
    group(`Quantile ${q + 1} of ${Math.max(edges.length - 1, byQ.size)}${range}`, list);
  }
  group('Random held-out windows', f.examples.random || []);
  out.addEventListener('mouseover', (ev) => {
    const t = ev.target.closest ? ev.target.closest('.ms-tk') : null;
    if (!t || !t.dataset.act) return;
    const box = t.closest('[data-kind]');
    hover.textContent = `${JSON.stringify(t.textContent)} · activation ${num(Number(t.dataset.act))} · ${box.dataset.kind} example ${box.dataset.rank}`;
    hover.dataset.act = t.dataset.act; hover.dataset.token = t.textContent;
  });
}
function neighbours(f, s) {
  el('h2', out, 'Neighbours');
  const co = el('p', out, 'Co-firing (tokens where both fire): '); co.id = 'cofiring';
  if (!f.cooccurring.length) el('span', co, 'none recorded', 'muted');
  for (const c of f.cooccurring) { featureLink(co, c.feature, `${c.feature}`); el('span', co, ` (${c.count})  `); }
  const cos = el('p', out, 'Decoder cosine: '); cos.id = 'cosine';
  if (!Array.isArray(s.cosine_neighbours)) { el('span', cos, 'not recorded in this artifact', 'muted'); return; }
  s.cosine_neighbours.forEach((j, k) => { featureLink(cos, j, `${j}`);
    el('span', cos, ` (${num((s.cosine_values || [])[k])})  `); });
}
function exampleRows(f) {
  const rows = [['kind', 'quantile', 'rank', 'activation', 'target_token', 'text']];
  for (const kind of ['top', 'quantile', 'random']) for (const e of f.examples[kind] || [])
    rows.push([kind, e.quantile, e.rank, e.activation, e.tokens[e.target], e.tokens.join('')]);
  return csvText(rows);
}
const mechscope = await bundle().catch((e) => { fail(e); return null; });
if (mechscope) await main(async () => {
  const f = await getJSON(`/api/features/${cfg.art.id_url}/feature/${cfg.feature}`);
  const s = f.summary;
  kv(out, [['density', num(s.density)], ['active tokens', s.n_active], ['mean activation', num(s.mean_activation)],
           ['max activation', num(s.max_activation)]]).id = 'summary';
  notes(f);
  el('h2', out, 'Activations');
  const edges = f.histogram.quantile_edges || [];
  const hist = mechscope.histogram(el('div', out), {bins: f.histogram.bins, marks: edges, log: true,
    xlabel: 'activation (log scale)', title: `feature ${f.feature}: active tokens per activation bin`});
  el('p', out, `Dashed lines: the ${edges.length} edges of the equal-count quantiles (each quantile holds ` +
    'the same number of sampled active tokens).', 'muted');
  logits(s);
  examples(f, edges);
  neighbours(f, s);
  exportBar(document.getElementById('exports'), {name: `feature-${f.feature}`, handles: [['histogram', hist]],
    json: f, csv: exampleRows(f), snippet: cfg.snippet});
});
"""


def _index_snippet(path: str) -> str:
    return (
        "from mechscope.features import FeatureArtifact\n\n"
        f"art = FeatureArtifact({path!r})\n"
        'art.sql("SELECT feature, density, n_active, max_activation FROM features '
        'ORDER BY density DESC LIMIT 100").fetchall()\n'
    )


def _feature_snippet(path: str, i: int) -> str:
    return (
        "from mechscope.features import FeatureArtifact\n\n"
        f"art = FeatureArtifact({path!r})\n"
        f"art.summary({i})  # density, activations, promoted/suppressed tokens, quantile edges\n"
        f"art.histogram({i})  # [(low, high, count)]\n"
        f'art.examples({i}, "quantile")  # windows with per-token activations\n'
        f"art.cooccurring({i})  # [(feature, count)]\n"
    )


def features_view(request: Request) -> Response:
    """``GET /view/features/{id}``: the sortable, filterable feature index (``mechscope.table``)."""
    registry = request.app.state.api.registry
    try:
        art = artifact_of(registry, request.path_params["id"], ("feature-stats",))
    except ServeError as e:
        return error_page("features", e)
    form = ('<form id=filters onsubmit="return false">token <input name=token size=8> '
            "density ≥ <input name=min_density size=6> ≤ <input name=max_density size=6></form>")  # fmt: skip
    cfg: dict[str, Any] = {"art": ref(art), "snippet": _index_snippet(str(art.path))}
    return shell(f"features: {art.id}", f"Features of {art.id}", cfg, FEATURES_JS,
                 f"{form}<div id=table></div><div id=exports class=exports></div>")  # fmt: skip


def _steer_link(request: Request, art_hook: Any, i: int) -> str:
    """A link to the steering view for feature ``i`` when the served model's dictionary reads this hook."""
    dictionary = getattr(request.app.state.model, "dictionary", None)
    hook = getattr(getattr(dictionary, "config", None), "hook_name", None)
    return (
        f' · <a href="/view/steer?feature={i}">steer it</a>' if hook is not None and hook == art_hook else ""
    )


def feature_view(request: Request) -> Response:
    """``GET /view/feature/{id}/{i}``: one feature (``mechscope.histogram`` and ``mechscope.tokens``)."""
    registry = request.app.state.api.registry
    i = int(request.path_params["i"])
    try:
        art = artifact_of(registry, request.path_params["id"], ("feature-stats",))
    except ServeError as e:
        return error_page(f"feature {i}", e)
    a = ref(art)
    nav = (f'<p><a href="/view/features/{a["id_url"]}">all features</a> · '
           f'<a href="/view/feature/{a["id_url"]}/{max(i - 1, 0)}">previous</a> · '
           f'<a href="/view/feature/{a["id_url"]}/{i + 1}">next</a>{_steer_link(request, art.meta.get("hook"), i)}</p>')  # fmt: skip
    cfg = {"art": a, "feature": i, "snippet": _feature_snippet(str(art.path), i)}
    return shell(f"feature {i}: {art.id}", f"Feature {i} of {art.id}", cfg, FEATURE_JS,
                 f"{nav}<div id=out></div><div id=exports class=exports></div>")  # fmt: skip


__all__ = ["feature_view", "features_view"]
