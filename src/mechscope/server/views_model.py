"""The model views of ``mechscope serve --model``: prompt, attention, logit lens and steering.

Each page is a form that posts to ``/api/model/*`` (:mod:`.model_api`) and draws the answer with
the component bundle. The form's values travel in the URL (``?text=...&layer=...``), so a view
can be shared and reloaded; a URL with ``text`` runs at once. Without a model every page shows
a panel saying to start the server with ``--model`` (and steering says ``--sae`` when there is no
dictionary); errors of the model routes (an empty prompt, a layer out of range) show in the
page's error panel.

* ``/view/prompt``: tokens, the top next tokens, and with a dictionary the top features of
  every token, linked to the feature page of a served feature artifact that reads the same hook.
* ``/view/attention``: a layer's head grid and a large pattern with token hover
  (``mechscope.attention``).
* ``/view/lens``: a layer x position heat map of the chosen statistic (prob, rank, logprob) of
  the answer or of the top token, with the top-k tokens of each cell on hover.
* ``/view/steer``: features and strengths, added or clamped; the default and steered greedy
  generations side by side (words after the point where they part are shaded), with the α = 0
  identity check; every run is saved as an artifact under the first root's ``steering/``.
"""

from __future__ import annotations

from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .artifacts import Registry
from .model_api import model_info
from .views import ref, shell

MODEL_LIB_JS = """
const form = document.getElementById('form');
const output = document.getElementById('output');
const fields = () => Object.fromEntries([...new FormData(form)].filter(([, v]) => v !== ''));
const intOr = (v, d) => v === undefined || v === '' ? d : Number.parseInt(v, 10);
function fromURL() {  // the form's values from the URL; true when there is a prompt to run
  const q = new URLSearchParams(location.search);
  for (const [k, v] of q) { const f = form.elements.namedItem(k); if (f) f.value = v; }
  return q.has('text');
}
function toURL(values) { history.replaceState(null, '', `?${new URLSearchParams(values)}`); }
const backendLine = () => `backend = ModelBackend(${pyStr(cfg.info.model)}` +
  (cfg.info.dictionary ? ', sae=SAE_DIR)  # SAE_DIR: the --sae directory' : ')');
function modelView(request, render) {
  if (!cfg.info.model) { document.body.dataset.state = 'ready'; return; }
  const go = () => main(async () => {
    clearError();
    const values = fields();
    toURL(values);
    output.replaceChildren(el('p', null, 'running…', 'muted'));
    const {url, body} = request(values);
    const data = await postJSON(url, body);
    output.replaceChildren();
    await render(data, values);
  });
  form.addEventListener('submit', (e) => { e.preventDefault(); go(); });
  if (fromURL()) go(); else document.body.dataset.state = 'ready';
}
const snippetHead = 'from mechscope.pipeline.ui_backend import ModelBackend\\n\\n';
"""

PROMPT_JS = """
document.getElementById('pick').addEventListener('change', (e) => { form.elements.text.value = e.target.value; });
const mechscope = await bundle().catch((e) => { fail(e); return null; });
if (mechscope) modelView((v) => ({url: '/api/model/prompt', body: {text: v.text ?? '', top_k: intOr(v.top_k, 10)}}),
  (data, v) => {
  const feats = data.features || null;
  const top = feats ? feats.map((fs) => fs.length ? fs[0].activation : 0) : data.tokens.map(() => 0);
  el('h2', output, feats ? 'Tokens (shaded by their strongest feature)' : 'Tokens');
  const toks = mechscope.tokens(el('div', output), {tokens: data.tokens, values: top});
  el('h2', output, 'Top next tokens');
  const t = el('table', output); t.id = 'next';
  const head = el('tr', el('thead', t)); for (const c of ['#', 'token', 'probability']) el('th', head, c);
  const body = el('tbody', t);
  data.next.forEach((n, i) => { const tr = el('tr', body); tr.dataset.token = n.token; tr.dataset.prob = n.prob;
    el('td', tr, i + 1); el('td', tr, JSON.stringify(n.token)); el('td', tr, n.prob.toPrecision(4)); });
  if (feats) featureTable(data);
  else el('p', output, 'Start the server with --sae to see the features of each token.', 'muted');
  exportBar(document.getElementById('exports'), {name: 'prompt', handles: [['tokens', toks]], json: data,
    csv: csvText([['rank', 'token', 'prob'], ...data.next.map((n, i) => [i + 1, n.token, n.prob])]),
    snippet: `${snippetHead}${backendLine()}\\nbackend.prompt(${pyStr(v.text)}, top_k=${intOr(v.top_k, 10)})\\n`});
});
function featureTable(data) {
  el('h2', output, `Top features per token (${data.hook})`);
  if (!cfg.features) el('p', output, `No feature artifact for ${data.hook} is served: features are not linked.`, 'muted');
  const t = el('table', output); t.id = 'features';
  const head = el('tr', el('thead', t)); for (const c of ['#', 'token', 'features (activation)']) el('th', head, c);
  const body = el('tbody', t);
  data.features.forEach((fs, p) => {
    const tr = el('tr', body); el('td', tr, p); el('td', tr, JSON.stringify(data.tokens[p]));
    const td = el('td', tr);
    for (const f of fs) {
      const a = el(cfg.features ? 'a' : 'span', td, `${f.feature}`); a.dataset.feature = f.feature;
      if (cfg.features) a.href = `/view/feature/${cfg.features.id_url}/${f.feature}`;
      el('span', td, ` (${f.activation.toPrecision(3)})  `);
    }
  });
}
"""

ATTENTION_JS = """
const mechscope = await bundle().catch((e) => { fail(e); return null; });
if (mechscope) modelView((v) => ({url: '/api/model/attention', body: {text: v.text ?? '', layer: intOr(v.layer, 0)}}),
  (data, v) => {
  const h = mechscope.attention(el('div', output), data);
  exportBar(document.getElementById('exports'), {name: `attention-L${data.layer}`, handles: [['attention', h]],
    json: data, snippet: `${snippetHead}${backendLine()}\\nbackend.attention(${pyStr(v.text)}, layer=${data.layer})` +
      '  # patterns: [heads, query, key]\\n'});
});
"""

LENS_JS = """
const mechscope = await bundle().catch((e) => { fail(e); return null; });
if (mechscope) modelView((v) => ({url: '/api/model/lens',
  body: {text: v.text ?? '', statistic: v.statistic || 'prob', answer: v.answer || null}}), (data, v) => {
  const h = mechscope.heatmap(el('div', output), data);
  const t = mechscope.decodeTensor(data.values);
  const rows = [['point', 'position', 'value', 'top tokens']];
  data.rows.forEach((r, i) => data.cols.forEach((c, j) => rows.push([r, c, t.values[i * data.cols.length + j], data.hover[i][j]])));
  const answer = v.answer ? `, answer=${pyStr(v.answer)}` : '';
  exportBar(document.getElementById('exports'), {name: 'lens', handles: [['lens', h]], json: data, csv: csvText(rows),
    snippet: `${snippetHead}${backendLine()}\\nbackend.lens(${pyStr(v.text)}, statistic=${pyStr(v.statistic || 'prob')}${answer})\\n`});
});
"""

STEER_JS = """
const rows = document.getElementById('feats');
function addRow(feature = '', strength = '') {
  const row = el('div', rows, null, 'feat');
  const f = el('input', row); f.type = 'number'; f.min = 0; f.placeholder = 'feature'; f.className = 'feature'; f.value = feature;
  const s = el('input', row); s.type = 'number'; s.step = 'any'; s.placeholder = 'strength'; s.className = 'strength'; s.value = strength;
}
document.getElementById('add').addEventListener('click', () => addRow());
const q = new URLSearchParams(location.search);
const given = q.getAll('f');
if (given.length) for (const pair of given) addRow(...pair.split(':'));
else addRow(q.get('feature') ?? '', '');
const chosen = () => { const out = {};
  for (const r of rows.querySelectorAll('.feat')) { const f = r.querySelector('.feature').value, s = r.querySelector('.strength').value;
    if (f !== '') out[f] = s === '' ? NaN : Number(s); }
  return out; };
function words(text, other) {  // word-like pieces; those after the point where the runs part get value 1
  const parts = text.match(/\\s*\\S+|\\s+$/g) || [''], theirs = other.match(/\\s*\\S+|\\s+$/g) || [''];
  let same = 0; while (same < parts.length && parts[same] === theirs[same]) same++;
  return {tokens: parts, values: parts.map((_, i) => (i < same ? 0 : 1))};
}
const mechscope = await bundle().catch((e) => { fail(e); return null; });
if (mechscope) modelView((v) => {
  const features = chosen();
  history.replaceState(null, '', `?${new URLSearchParams([...Object.entries(v),
    ...Object.entries(features).map(([f, s]) => ['f', `${f}:${s}`])])}`);
  return {url: '/api/model/steer', body: {text: v.text ?? '', features, mode: v.mode || 'add',
    max_new_tokens: intOr(v.max_new_tokens, 16)}};
}, (data, v) => {
  const cols = el('div', output, null, 'cols'), handles = [];
  for (const [key, title] of [['before', 'default'], ['after', 'steered']]) {
    const box = el('div', cols); box.id = key; box.dataset.text = data[key];
    el('h3', box, `${title} (greedy)`);
    handles.push([title, mechscope.tokens(el('div', box), words(data[key], data[key === 'before' ? 'after' : 'before']))]);
  }
  const zero = data.mode === 'add' && Object.values(data.features).every((a) => a === 0);
  const note = el('p', output, null, 'panel'); note.id = 'identity'; note.dataset.identity = data.identity;
  note.textContent = zero ? (data.identity ? 'α = 0 adds nothing, and the steered run equals the default: the identity holds.'
    : 'α = 0 adds nothing, yet the runs differ: the identity does NOT hold.')
    : 'Adding with every strength α = 0 must give the default run back (the identity); set the strengths to 0 to check.';
  const saved = el('p', output, 'Saved as ', 'muted'); saved.id = 'saved';
  if (data.saved_id) { const a = el('a', saved, data.saved_id); a.href = `/api/artifact/${encodeURI(data.saved_id)}/meta`; }
  else saved.textContent = data.saved ? `Saved in ${data.saved}` : 'Not saved.';
  const feats = Object.entries(data.features).map(([f, a]) => `${f}: ${a}`).join(', ');
  exportBar(document.getElementById('exports'), {name: 'steering', handles, json: data,
    csv: csvText([['run', 'text'], ['default', data.before], ['steered', data.after]]),
    snippet: `${snippetHead}${backendLine()}\\nbackend.steer(${pyStr(v.text)}, {${feats}}, mode=${pyStr(data.mode)}, ` +
      `max_new_tokens=${intOr(v.max_new_tokens, 16)})\\n`});
});
"""

EXAMPLES = ("When Mary and John went to the store, John gave a drink to",
            "The Eiffel Tower is in the city of", "1, 2, 3, 4, 5,", "The capital of France is")  # fmt: skip
PROMPT = "<label>prompt<br><textarea name=text rows=3 required></textarea></label><br>"


def _feature_artifact(registry: Registry, hook: Any, d_sae: Any) -> dict[str, Any] | None:
    """The first served feature artifact that reads ``hook`` (with ``d_sae`` features when recorded)."""
    if not hook:
        return None
    for art in registry.discover():
        if (
            art.kind == "feature-stats"
            and art.meta.get("hook") == hook
            and art.meta.get("d_sae") in (None, d_sae)
        ):
            return ref(art)
    return None


def _model_page(request: Request, name: str, heading: str, form: str, script: str) -> Response:
    """A model view: the form and the script, or the panel saying to start the server with ``--model``."""
    backend = request.app.state.model
    info = model_info(backend)
    registry: Registry = request.app.state.api.registry
    cfg: dict[str, Any] = {
        "info": info,
        "features": _feature_artifact(registry, info.get("hook"), info.get("d_sae")),
    }
    if backend is None:
        html = ('<div id=nomodel class=panel>No model is loaded: start the server with <code>--model</code> '
                "(e.g. <code>mechscope serve runs/ --model smollm2-135m --sae DICT_DIR</code>) to use this view.</div>")  # fmt: skip
    elif name == "steer" and not info.get("dictionary"):
        html = ("<div id=nomodel class=panel>Steering needs a dictionary: start the server with "
                "<code>--model</code> and <code>--sae</code>.</div>")  # fmt: skip
        cfg["info"] = {"model": None}
    else:
        script = MODEL_LIB_JS + script
        html = (f"<p class=muted>Model <code>{escape(str(info['model']))}</code>"
                f"{', ' + str(info['n_layers']) + ' layers' if info.get('n_layers') else ''}"
                f"{', dictionary at ' + escape(str(info['hook'])) if info.get('dictionary') else ''}.</p>"
                f"<form id=form>{form}<button type=submit>run</button></form>"
                "<div id=output></div><div id=exports class=exports></div>")  # fmt: skip
    if not cfg["info"].get("model"):
        script = "document.body.dataset.state = 'ready';"
    return shell(f"{name}: mechscope", heading, cfg, script, html)


def prompt_view(request: Request) -> Response:
    """``GET /view/prompt[?text=&top_k=]``."""
    options = "".join(f'<option value="{escape(e)}">{escape(e)}</option>' for e in EXAMPLES)
    form = (f"<label>pick <select id=pick><option value=''>…</option>{options}</select></label><br>{PROMPT}"
            "<label>top next tokens <input name=top_k type=number min=1 max=50 value=10></label>")  # fmt: skip
    return _model_page(request, "prompt", "Prompt", form, PROMPT_JS)


def attention_view(request: Request) -> Response:
    """``GET /view/attention[?text=&layer=]``."""
    n = model_info(request.app.state.model).get("n_layers")
    top = f" max={int(n) - 1}" if isinstance(n, int) else ""
    form = f"{PROMPT}<label>layer <input name=layer type=number min=0{top} value=0></label>"
    return _model_page(request, "attention", "Attention", form, ATTENTION_JS)


def lens_view(request: Request) -> Response:
    """``GET /view/lens[?text=&statistic=&answer=]``."""
    form = (f"{PROMPT}<label>statistic <select name=statistic><option>prob</option><option>rank</option>"
            "<option>logprob</option></select></label> <label>answer (one token, optional) "
            "<input name=answer size=12></label>")  # fmt: skip
    return _model_page(request, "lens", "Logit lens", form, LENS_JS)


def steer_view(request: Request) -> Response:
    """``GET /view/steer[?text=&f=FEATURE:STRENGTH...&mode=&max_new_tokens=]``."""
    form = (f"{PROMPT}<div id=feats><strong>features and strengths</strong></div>"
            "<button type=button id=add>add a feature</button><br>"
            "<label><input type=radio name=mode value=add checked> add α × decoder direction</label> "
            "<label><input type=radio name=mode value=clamp> clamp the activation to α</label><br>"
            "<label>new tokens <input name=max_new_tokens type=number min=1 max=64 value=16></label>")  # fmt: skip
    return _model_page(request, "steer", "Steering", form, STEER_JS)


__all__ = ["attention_view", "lens_view", "prompt_view", "steer_view"]
