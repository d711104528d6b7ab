"""Views of saved results: patching heat maps, circuit graphs, and the diff of two runs.

* ``/view/patching/{id}[?b=ID]``: a ``patch_result``'s ``values`` as a ``mechscope.heatmap``
  (first axis as rows, the other axes folded into columns, labels from ``meta.json``), with the
  metric, the clean and corrupted values and the normalisation printed; a raw/normalised toggle;
  a cell click opens a drill-down with the cell's value and its per-example values (when the
  result kept ``per_example``). ``b`` draws a second result beside it on the same colour scale.
* ``/view/circuit/{id}``: ``/api/circuit/{id}`` (pruned on the server to a budget) as a
  ``mechscope.graph`` with its pruning slider, connections panel and pinning; a node click shows
  what the node is, with a link to its feature page when a feature artifact for its layer is
  served; labels edited in the graph are saved through ``POST /api/labels/{id}``.
* ``/view/diff?a=ID&b=ID``: both ``meta.json`` side by side with the differing keys
  highlighted; for two feature artifacts their feature counts and densities; for two patching
  results both heat maps on one colour scale.
"""

from __future__ import annotations

import math
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .artifacts import Artifact, BadRequest, Registry, ServeError
from .views import artifact_of, error_page, ref, shell

PATCH_LIB_JS = """
const isNorm = (meta) => meta.method !== 'direct_logit_attribution' && Number.isFinite(meta.clean)
  && Number.isFinite(meta.corrupted) && meta.clean !== meta.corrupted;
function fold(meta, shape) {  // rows: the first axis; columns: the other axes, folded
  const axes = meta.axes || [];
  const labels = (d) => axes[d] && Array.isArray(axes[d].labels) && axes[d].labels.length === shape[d]
    ? axes[d].labels.map(String) : [...Array(shape[d]).keys()].map(String);
  const names = shape.map((_, d) => (axes[d] && axes[d].name) || `axis ${d}`);
  if (shape.length <= 1) return {rows: [meta.metric || 'value'], cols: shape.length ? labels(0) : ['value'],
    names: ['', names[0] || '']};
  let cols = [''];
  for (let d = 1; d < shape.length; d++) cols = cols.flatMap((c) => labels(d).map((l) => c ? `${c}·${l}` : l));
  return {rows: labels(0), cols, names: [names[0], names.slice(1).join(' × ')]};
}
function cellIndex(shape, r, c) {  // (row, column) of the folded grid -> an index per dimension
  if (shape.length <= 1) return [c];
  const idx = [];
  for (let d = shape.length - 1; d >= 1; d--) { idx.unshift(c % shape[d]); c = Math.floor(c / shape[d]); }
  return [r, ...idx];
}
async function loadResult(r) {
  const t = await getJSON(`/api/tensor/${r.art.id_url}?file=values.safetensors&name=values`);
  const raw = mechscope.decodeTensor(t).values, meta = r.meta;
  const norm = isNorm(meta) ? raw.map((v) => (v - meta.corrupted) / (meta.clean - meta.corrupted)) : null;
  return {...r, shape: t.shape, raw, norm, grid: fold(meta, t.shape)};
}
const absMax = (arr) => { let m = 0; for (const v of arr) if (Math.abs(v) > m) m = Math.abs(v); return m; };
const valuesOf = (res, normalised) => normalised && res.norm ? res.norm : res.raw;
function drawResult(box, res, normalised, vmax, onCell) {
  const g = res.grid, m = res.meta;
  const note = `clean ${m.clean} · corrupted ${m.corrupted}` + (normalised && res.norm ? ' · normalised' : ' · raw');
  return mechscope.heatmap(box, {values: {shape: [g.rows.length, g.cols.length], values: valuesOf(res, normalised)},
    rows: g.rows, cols: g.cols, title: `${res.art.id}: ${m.method} · ${m.sweep} (${g.names.filter(Boolean).join(' × ')})`,
    metric: normalised && res.norm ? `normalised ${m.metric}` : m.metric, note}, {vmax, onCell});
}
function resultRows(results) {
  const rows = [['id', 'row', 'column', 'value', 'normalised']];
  for (const res of results) res.grid.rows.forEach((rl, r) => res.grid.cols.forEach((cl, c) => {
    const k = r * res.grid.cols.length + c; rows.push([res.art.id, rl, cl, res.raw[k], res.norm ? res.norm[k] : '']);
  }));
  return csvText(rows);
}
const resultJSON = (results) => results.map((res) => ({id: res.art.id, meta: res.meta, shape: res.shape,
  rows: res.grid.rows, cols: res.grid.cols, values: Array.from(res.raw), normalised: res.norm ? Array.from(res.norm) : null}));
"""

PATCHING_JS = """
const info = document.getElementById('info'), maps = document.getElementById('maps'), drill = document.getElementById('cell');
let results = [], handles = [], selected = null;
function describe(res) {
  const m = res.meta, box = el('div', info, null, 'panel');
  el('strong', box, res.art.id);
  const dl = el('dl', box, null, 'kv');
  const pairs = [['method', m.method], ['sweep', m.sweep], ['metric', m.metric], ['direction', m.direction],
    ['ablation', m.ablation], ['clean', m.clean], ['corrupted', m.corrupted],
    ['normalisation', res.norm ? `(value − corrupted) / (clean − corrupted) = (value − ${m.corrupted}) / ` +
      `(${m.clean} − ${m.corrupted}): 0 is the corrupted run, 1 the clean run` : 'none (values are shown raw)'],
    ['shape', `${res.shape.join(' × ')} (${(m.axes || []).map((a) => a.name).join(' × ')})`]];
  for (const [k, v] of pairs) if (v !== null && v !== undefined) { el('dt', dl, k); el('dd', dl, v).dataset.key = k; }
}
async function showCell(r, c) {
  selected = [r, c];
  drill.hidden = false; drill.replaceChildren(el('strong', null, 'Cell'));
  for (const res of results) {
    const box = el('div', drill, null, 'cell-result'), k = r * res.grid.cols.length + c;
    if (r >= res.grid.rows.length || c >= res.grid.cols.length) { el('p', box, `${res.art.id}: no such cell`); continue; }
    box.dataset.id = res.art.id; box.dataset.row = r; box.dataset.col = c; box.dataset.value = res.raw[k];
    el('p', box, `${res.art.id} · ${res.grid.rows[r]} · ${res.grid.cols[c]}: ${res.raw[k]}` +
      (res.norm ? ` (normalised ${res.norm[k].toPrecision(4)})` : ''));
    if (!res.tensors.includes('per_example')) { el('p', box, 'No per-example values were kept.', 'muted'); continue; }
    const t = await getJSON(`/api/tensor/${res.art.id_url}?file=values.safetensors&name=per_example` +
      `&slice=${cellIndex(res.shape, r, c).join(',')}`);
    const ex = Array.from(mechscope.decodeTensor(t).values);
    const list = el('p', box, `per example (${ex.length}): `, 'per-example');
    list.dataset.values = JSON.stringify(ex);
    el('span', list, ex.map((v) => v.toPrecision(4)).join(', '));
  }
}
function draw() {
  const normalised = document.querySelector('input[name=mode]:checked').value === 'norm';
  for (const h of handles) h.destroy();
  maps.replaceChildren();
  const vmax = Math.max(...results.map((res) => absMax(valuesOf(res, normalised))));
  handles = results.map((res) => drawResult(el('div', maps), res, normalised, vmax, showCell));
  exportBar(document.getElementById('exports'), {name: `patching-${cfg.results[0].art.id}`,
    handles: handles.map((h, i) => [results[i].art.id, h]), json: resultJSON(results), csv: resultRows(results),
    snippet: cfg.snippet});
  if (selected) showCell(...selected);
}
const mechscope = await bundle().catch((e) => { fail(e); return null; });
if (mechscope) await main(async () => {
  results = await Promise.all(cfg.results.map(loadResult));
  results.forEach(describe);
  const norm = document.querySelector('input[value=norm]');
  norm.disabled = !results.some((res) => res.norm);
  if (cfg.normalised && !norm.disabled) norm.checked = true;
  for (const input of document.querySelectorAll('input[name=mode]')) input.addEventListener('change', draw);
  draw();
});
"""

CIRCUIT_JS = """
const box = document.getElementById('graph'), nodeBox = document.getElementById('node'), status = document.getElementById('status');
let graph = null;
function row(n, data) {  // drawing row: input, then each block's attention, then its MLP, then the logits
  const L = Number(n.layer), N = Number(data.n_layers);
  if (!Number.isFinite(N)) return Number.isFinite(L) ? L : 0;
  if (n.kind === 'input') return 0;
  if (n.kind === 'logits') return 2 * N + 1;
  return n.kind === 'head' || n.kind === 'attn_in' ? 2 * L + 1 : 2 * L + 2;
}
function showNode(n) {
  nodeBox.hidden = false; nodeBox.replaceChildren(el('strong', null, `Node ${n.id}`));
  nodeBox.dataset.node = n.id;
  const dl = el('dl', nodeBox, null, 'kv');
  for (const [k, v] of [['kind', n.kind], ['layer', n.block], ['head', n.head], ['feature', n.feature],
                        ['position', n.pos], ['label', n.label]]) if (v !== undefined && v !== null) { el('dt', dl, k); el('dd', dl, v); }
  if (n.kind !== 'feature') return;
  const fa = cfg.features_all || cfg.features[String(n.block)];
  if (!fa) { el('p', nodeBox, `No feature artifact for layer ${n.block} is served.`, 'muted'); return; }
  const a = el('a', el('p', nodeBox), `feature ${n.feature} in ${fa.id}`);
  a.href = `/view/feature/${fa.id_url}/${n.feature}`; a.className = 'feature-link';
}
async function saveLabel(n, label) {
  const body = await postJSON(`/api/labels/${cfg.art.id_url}`, {[n.id]: label === '' ? null : label});
  status.textContent = `saved the label of ${n.id} (${Object.keys(body).length} labels in labels.json)`;
  status.dataset.saved = n.id;
  if (nodeBox.dataset.node === n.id) showNode({...n, label});
}
async function load() {
  const q = new URLSearchParams({max_nodes: cfg.max_nodes, max_edges: cfg.max_edges});
  const data = await getJSON(`/api/circuit/${cfg.art.id_url}?${q}`);
  const nodes = data.nodes.map((n) => ({...n, block: n.layer, layer: row(n, data),
    index: n.head ?? n.feature ?? n.index ?? 0, pos: n.pos ?? n.ctx_idx ?? null, kind: n.kind ?? n.feature_type,
    label: n.label ?? n.name ?? n.id}));
  const edges = data.edges.map((e) => ({source: e.source, target: e.target, weight: e.weight}));
  if (graph) graph.destroy();
  graph = mechscope.graph(box, {nodes, edges, title: `${cfg.art.id}: ${data.method ?? ''} · ${data.metric ?? ''}`},
    {onNode: showNode, onLabel: (n, l) => saveLabel(n, l).catch(fail), threshold: cfg.threshold});
  const info = document.getElementById('budget-info');
  info.textContent = `Drawing the ${edges.length.toLocaleString()} strongest of ${data.n_edges_total.toLocaleString()} ` +
    `edges and ${nodes.length.toLocaleString()} of ${data.n_nodes_total.toLocaleString()} nodes ` +
    `(server budget: ${cfg.max_nodes} nodes, ${cfg.max_edges} edges). Shift-click pins a node; double-click edits its label.`;
  const edgeCSV = () => csvText([['source', 'target', 'weight'], ...graph.keptEdges().map((e) => [e.source, e.target, e.weight])]);
  exportBar(document.getElementById('exports'), {name: `circuit-${cfg.art.id}`, handles: [['graph', graph]],
    json: () => graph.toJSON(), csv: edgeCSV, snippet: cfg.snippet});
}
const mechscope = await bundle().catch((e) => { fail(e); return null; });
if (mechscope) await main(load);
"""

DIFF_JS = """
const flat = (obj, prefix = '', out = {}) => {
  for (const [k, v] of Object.entries(obj ?? {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length) flat(v, key, out);
    else out[key] = JSON.stringify(v);
  }
  return out;
};
const A = cfg.a, B = cfg.b, fa = flat(A.meta), fb = flat(B.meta);
function metaTable() {
  const keys = [...new Set([...Object.keys(fa), ...Object.keys(fb)])].sort();
  const t = el('table', document.getElementById('metas')); t.id = 'meta-diff';
  const head = el('tr', el('thead', t)); for (const c of ['key', A.art.id, B.art.id]) el('th', head, c);
  const body = el('tbody', t), rows = [['key', A.art.id, B.art.id, 'differs']];
  let n = 0;
  for (const k of keys) {
    const tr = el('tr', body), differs = fa[k] !== fb[k];
    if (differs) { tr.className = 'differs'; n++; }
    tr.dataset.key = k; el('td', tr, k); el('td', tr, fa[k] ?? '—'); el('td', tr, fb[k] ?? '—');
    rows.push([k, fa[k] ?? '', fb[k] ?? '', differs]);
  }
  document.getElementById('ndiff').textContent = `${n} of ${keys.length} keys differ (highlighted).`;
  document.getElementById('ndiff').dataset.count = n;
  return rows;
}
async function featureSummaries(host) {
  const sums = await Promise.all([A, B].map((r) => getJSON(`/api/features/${r.art.id_url}/summary`)));
  const cols = el('div', host, null, 'cols');
  const handles = sums.map((s, i) => {
    const box = el('div', cols, null, 'panel feature-summary'); box.dataset.id = [A, B][i].art.id;
    el('strong', box, [A, B][i].art.id);
    const dl = el('dl', box, null, 'kv');
    const pairs = [['features', s.features], ['dead (density 0)', s.dead], ['explained', s.explained],
      ...Object.entries(s.density).map(([k, v]) => [`density ${k}`, v === null ? '—' : Number(v).toPrecision(4)]),
      ...Object.entries(s.scorers).map(([k, v]) => [`mean score: ${k}`, v === null ? '—' : Number(v).toPrecision(4)])];
    for (const [k, v] of pairs) { el('dt', dl, k); el('dd', dl, v).dataset.key = k; }
    return [[A, B][i].art.id, mechscope.histogram(el('div', box), {bins: s.density_bins, log: true,
      xlabel: 'density (log scale)', title: 'features per density bin'})];
  });
  return {handles, data: sums};
}
async function patchMaps(host) {
  const results = await Promise.all([A, B].map(loadResult));
  const vmax = Math.max(...results.map((r) => absMax(r.raw)));
  const cols = el('div', host, null, 'cols');
  const handles = results.map((r) => [r.art.id, drawResult(el('div', cols), r, false, vmax)]);
  el('p', host, `Both maps share the colour limit ±${vmax.toPrecision(4)}.`, 'muted');
  return {handles, data: resultJSON(results), csv: resultRows(results)};
}
const mechscope = await bundle().catch((e) => { fail(e); return null; });
if (mechscope) await main(async () => {
  const rows = metaTable(), host = document.getElementById('extra');
  let extra = {handles: [], data: null, csv: null};
  if (A.art.kind === 'feature-stats' && B.art.kind === 'feature-stats') extra = await featureSummaries(host);
  if (A.art.kind === 'patch_result' && B.art.kind === 'patch_result') extra = await patchMaps(host);
  exportBar(document.getElementById('exports'), {name: 'diff', handles: extra.handles,
    json: {a: A.meta, b: B.meta, compared: extra.data}, csv: extra.csv || csvText(rows), snippet: cfg.snippet});
});
"""

PATCH_SNIPPET = """from mechscope.interventions.results import PatchResult

r = PatchResult.load({path!r})
r.values  # [{axes}]: {metric} per site
r.normalized()  # (values - corrupted) / (clean - corrupted): 0 = corrupted run, 1 = clean run
r.top(10)  # the largest effects, with their labels
r.per_example  # [{axes}, n] when kept, else None
"""

CIRCUIT_SNIPPET = """from mechscope.circuits.circuit import Circuit

c = Circuit.load({path!r})
c.scores  # every edge's score
data = c.to_json()  # nodes and edges (name, source, target, score, in_circuit), as circuit.json holds them
"""


def _patch_entry(art: Artifact) -> dict[str, Any]:
    """What the patching script needs of one result: its meta and the tensors its file holds."""
    keys = ("method", "sweep", "metric", "direction", "ablation", "clean", "corrupted", "axes")
    names: list[str] = []
    path = art.file("values.safetensors", required=False)
    if path is not None:
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                names = list(f.keys())
        except Exception:  # a corrupt file: the tensor request reports it in the error panel
            names = []
    return {"art": ref(art), "meta": {k: art.meta.get(k) for k in keys}, "tensors": names}


def _patch_snippet(art: Artifact) -> str:
    axes = art.meta.get("axes")
    axes = axes if isinstance(axes, list) else []
    names = ", ".join(str(a.get("name")) for a in axes if isinstance(a, dict)) or "..."
    return PATCH_SNIPPET.format(path=str(art.path), axes=names, metric=art.meta.get("metric", "the metric"))


MODES = ('<p id=mode><label><input type=radio name=mode value=raw checked> raw</label> '
         "<label><input type=radio name=mode value=norm> normalised</label></p>")  # fmt: skip


def patching_view(request: Request) -> Response:
    """``GET /view/patching/{id}[?b=ID][&norm=1]``: one or two patching results as heat maps."""
    registry: Registry = request.app.state.api.registry
    try:
        arts = [artifact_of(registry, request.path_params["id"], ("patch_result",))]
        if request.query_params.get("b"):
            arts.append(artifact_of(registry, request.query_params["b"], ("patch_result",)))
    except ServeError as e:
        return error_page("patching", e)
    snippet = "\n".join(_patch_snippet(a) for a in arts)
    cfg = {"results": [_patch_entry(a) for a in arts], "snippet": snippet,
           "normalised": request.query_params.get("norm") in ("1", "true")}  # fmt: skip
    html = (f"<div id=info class=cols></div>{MODES}<div id=maps class=cols></div>"
            "<div id=cell class=panel hidden></div><div id=exports class=exports></div>")  # fmt: skip
    title = " vs ".join(a.id for a in arts)
    return shell(f"patching: {title}", f"Patching: {title}", cfg, PATCH_LIB_JS + PATCHING_JS, html)


_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def feature_artifacts_by_layer(registry: Registry) -> dict[str, dict[str, Any]]:
    """``{layer: artifact ref}``: the served feature artifacts, by the layer of the hook they read
    (``blocks.L.*``; the first by id when several read one layer)."""
    out: dict[str, dict[str, Any]] = {}
    for art in registry.discover():
        match = _BLOCK.match(str(art.meta.get("hook", ""))) if art.kind == "feature-stats" else None
        if match and match.group(1) not in out:
            out[match.group(1)] = ref(art)
    return out


def _budget(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name) or str(default)
    if not text.isdigit() or not 0 < int(text) <= default:
        raise BadRequest(f"{name} must be 1..{default}, got {text!r}")
    return int(text)


def circuit_view(request: Request) -> Response:
    """``GET /view/circuit/{id}[?max_nodes=&max_edges=&threshold=&features=ID]``: the circuit as a graph."""
    from .artifacts import DEFAULT_MAX_EDGES, DEFAULT_MAX_NODES

    registry: Registry = request.app.state.api.registry
    try:
        art = artifact_of(registry, request.path_params["id"])
        features = feature_artifacts_by_layer(registry)
        chosen = request.query_params.get("features")
        every = ref(artifact_of(registry, chosen, ("feature-stats",))) if chosen else None
        max_nodes = _budget(request, "max_nodes", DEFAULT_MAX_NODES)
        max_edges = _budget(request, "max_edges", DEFAULT_MAX_EDGES)
        threshold = float(request.query_params.get("threshold") or 0)
        if not math.isfinite(threshold):
            raise ValueError
    except ValueError:
        return error_page("circuit", BadRequest("threshold must be a finite number"))
    except ServeError as e:
        return error_page("circuit", e)
    cfg = {"art": ref(art), "features": features, "features_all": every, "max_nodes": max_nodes, "max_edges": max_edges,
           "threshold": threshold, "snippet": CIRCUIT_SNIPPET.format(path=str(art.path))}  # fmt: skip
    html = ("<p id=budget-info class=muted></p><div id=graph></div><p id=status class=muted></p>"
            "<div id=node class=panel hidden></div><div id=exports class=exports></div>")  # fmt: skip
    return shell(f"circuit: {art.id}", f"Circuit {art.id}", cfg, CIRCUIT_JS, html)


def _diff_snippet(a: Artifact, b: Artifact) -> str:
    lines = ["import json", "from pathlib import Path", ""]
    lines += [
        f"{n} = json.loads(Path({str(x.path / 'meta.json')!r}).read_text())" for n, x in (("a", a), ("b", b))
    ]
    lines.append("differs = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}")
    if a.kind == b.kind == "patch_result":
        lines += ["", "from mechscope.interventions.results import PatchResult", "",
                  f"ra, rb = PatchResult.load({str(a.path)!r}), PatchResult.load({str(b.path)!r})",
                  "vmax = max(ra.values.abs().max(), rb.values.abs().max())  # one colour scale"]  # fmt: skip
    if a.kind == b.kind == "feature-stats":
        lines += ["", "from mechscope.features import FeatureArtifact", ""]
        lines += [f'FeatureArtifact({str(x.path)!r}).sql("SELECT count(*), count(*) FILTER (WHERE density = 0), '
                  'median(density) FROM features").fetchall()' for x in (a, b)]  # fmt: skip
    return "\n".join(lines) + "\n"


def diff_view(request: Request) -> Response:
    """``GET /view/diff?a=ID&b=ID``: two runs side by side."""
    registry: Registry = request.app.state.api.registry
    try:
        ids = [request.query_params.get(k) for k in ("a", "b")]
        if not all(ids):
            raise BadRequest("the diff needs two runs: /view/diff?a=ID&b=ID")
        a, b = (artifact_of(registry, str(i)) for i in ids)
    except ServeError as e:
        return error_page("diff", e)
    cfg = {"a": {"art": ref(a), "meta": a.meta}, "b": {"art": ref(b), "meta": b.meta},
           "snippet": _diff_snippet(a, b)}  # fmt: skip
    html = "<p id=ndiff></p><div id=extra></div><div id=metas></div><div id=exports class=exports></div>"
    return shell(f"diff: {a.id} vs {b.id}", f"{a.id} vs {b.id}", cfg, PATCH_LIB_JS + DIFF_JS, html)


__all__ = ["circuit_view", "diff_view", "feature_artifacts_by_layer", "patching_view"]
