"""The demo run's report: read a run directory, draw its plot and write its static page.

Everything here works from the run directory's files alone (``meta.json``,
``results.json``, ``lens.safetensors``, ``lens.png``); no model or torch is involved, so a
run can be re-rendered anywhere. The layout of those files is described in
``mechscope.pipeline.demo`` and ``docs/demo.md``.

1. :func:`load_demo` reads and checks the files, raising :class:`ArtifactError` that names
   the missing or corrupt one.
2. :func:`draw_lens_png` draws ``lens.png`` (answer probability and rank per lens point).
3. :func:`render_demo` writes ``index.html``, escaping every piece of text it embeds.
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import atomic_write_bytes, atomic_write_text
from ..errors import ArtifactError
from ..viz.results import fold_axes
from ..viz.widgets import heatmap, inline_bundle
from .features_section import features_section

__all__ = ["SCHEMA_VERSION", "DemoRun", "draw_lens_png", "load_demo", "render_demo"]

SCHEMA_VERSION = 1
"""Version of the demo run layout written into ``meta.json``."""

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TENSORS = ("answer_rank", "answer_prob", "top_ids", "top_probs")
_META_KEYS = ("kind", "schema_version", "mechscope_version", "created", "config", "model", "seed")
_LENS_KEYS = ("prompt", "answer", "labels", "top_tokens", "str_tokens")
_LENS_TABLE_TOP = 3


@dataclass(frozen=True)
class DemoRun:
    """A demo run directory, read back from its files."""

    path: Path
    """The run directory."""
    meta: dict[str, Any]
    """Contents of ``meta.json``."""
    results: dict[str, Any]
    """Contents of ``results.json``: ``factual`` (list of rows) and ``lens`` (labels, tokens)."""
    answer_rank: np.ndarray
    """``[point]`` rank of the lens answer at each lens point (0 = top-1)."""
    answer_prob: np.ndarray
    """``[point]`` probability of the lens answer at each lens point."""
    top_ids: np.ndarray
    """``[point k]`` top-k token ids at each lens point."""
    top_probs: np.ndarray
    """``[point k]`` their probabilities."""


def load_demo(run_dir: str | Path, *, need_png: bool = True) -> DemoRun:
    """Read a demo run directory; raise :class:`ArtifactError` naming any missing or corrupt file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ArtifactError(f"{run_dir} is not a directory; expected a demo run directory")
    meta = _read_json(run_dir / "meta.json", _META_KEYS)
    if meta["kind"] != "demo":
        raise ArtifactError(f"{run_dir / 'meta.json'} has kind {meta['kind']!r}, not 'demo'")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise ArtifactError(
            f"{run_dir / 'meta.json'} has schema_version {meta['schema_version']!r}; "
            f"this mechscope reads version {SCHEMA_VERSION}"
        )
    results = _read_json(run_dir / "results.json", ("factual", "lens"))
    lens = results["lens"]
    if not isinstance(lens, dict) or any(k not in lens for k in _LENS_KEYS):
        raise ArtifactError(
            f"{run_dir / 'results.json'} is corrupt: 'lens' needs the keys {', '.join(_LENS_KEYS)}"
        )
    tensors = _read_tensors(run_dir / "lens.safetensors", len(lens["labels"]), len(lens["top_tokens"]))
    if need_png:
        png = run_dir / "lens.png"
        if not png.is_file():
            raise ArtifactError(f"{png} is missing; the run is incomplete (redraw it with draw_lens_png)")
        with open(png, "rb") as f:
            if f.read(len(PNG_MAGIC)) != PNG_MAGIC:
                raise ArtifactError(f"{png} is corrupt: not a PNG file")
    return DemoRun(run_dir, meta, results, **tensors)


def _read_json(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; the run directory is incomplete")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ArtifactError(f"{path} is corrupt: {e}") from e
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path} is corrupt: expected a JSON object")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ArtifactError(f"{path} is corrupt: missing keys {', '.join(missing)}")
    return obj


def _read_tensors(path: Path, n_points: int, n_top_rows: int) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    if not path.is_file():
        raise ArtifactError(f"{path} is missing; the run directory is incomplete")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error type (and OSError)
        raise ArtifactError(f"{path} is corrupt: {e}") from e
    missing = [k for k in _TENSORS if k not in tensors]
    if missing:
        raise ArtifactError(f"{path} is corrupt: missing tensors {', '.join(missing)}")
    ok = (
        tensors["answer_rank"].shape == (n_points,)
        and tensors["answer_prob"].shape == (n_points,)
        and tensors["top_ids"].ndim == 2
        and tensors["top_ids"].shape == tensors["top_probs"].shape
        and tensors["top_ids"].shape[0] == n_points == n_top_rows
    )
    if not ok:
        shapes = {k: tuple(tensors[k].shape) for k in _TENSORS}
        raise ArtifactError(f"{path} does not match results.json ({n_points} lens points): shapes {shapes}")
    return {k: tensors[k] for k in _TENSORS}


# ---------------------------------------------------------------------------- plot


def draw_lens_png(run_dir: str | Path) -> Path:
    """Draw ``lens.png`` from ``results.json`` and ``lens.safetensors``; return its path."""
    run = load_demo(run_dir, need_png=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator

    lens = run.results["lens"]
    labels: list[str] = list(lens["labels"])
    x = np.arange(len(labels))  # [point]
    fig = Figure(figsize=(10, 6.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax_p, ax_r = fig.subplots(2, 1, sharex=True)
    ax_p.plot(x, run.answer_prob, marker="o", ms=4, color="#1f5fa8")
    ax_p.set_ylim(-0.02, 1.02)
    ax_p.set_ylabel(f"p({lens['answer']!r})")
    ax_p.set_title(f"Logit lens: {lens['prompt']!r} → {lens['answer']!r}", fontsize=12)
    ax_r.plot(x, run.answer_rank.astype(np.float64) + 1, marker="o", ms=4, color="#b8471b")
    ax_r.set_yscale("log")
    ax_r.invert_yaxis()  # best rank (1 = top-1) at the top
    ax_r.yaxis.set_major_locator(LogLocator(base=10))
    ax_r.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax_r.set_ylabel(f"rank of {lens['answer']!r}\n(1 = top-1, log scale)")
    ax_r.set_xlabel("residual stream point (resid_pre i = before block i; last = model output)")
    step = max(1, len(labels) // 10)
    ticks = sorted(set(range(0, len(labels), step)) | {len(labels) - 1})
    ax_r.set_xticks(ticks)
    ax_r.set_xticks(x, minor=True)
    ax_r.set_xticklabels([labels[i] for i in ticks], rotation=35, ha="right", fontsize=9)
    for ax in (ax_p, ax_r):
        ax.grid(True, alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(run.path / "lens.png", buf.getvalue())


# ---------------------------------------------------------------------------- page


def render_demo(run_dir: str | Path) -> Path:
    """Write ``index.html`` for a demo run from its files alone; return its path."""
    run = load_demo(run_dir)
    css = resources.files("mechscope.report").joinpath("demo.css").read_text(encoding="utf-8")
    model = run.meta["model"]
    model_id = model.get("id", "?") if isinstance(model, dict) else str(model)
    body = "\n".join(
        [
            f'<h1>mechscope demo <span class="muted">· {_e(model_id)}</span></h1>',
            _factual_section(run.results["factual"]),
            _lens_section(run),
            _localisation_section(run.path),
            _circuit_section(run.path),
            _dictionary_section(run.path),
            features_section(run.path),
            _meta_section(run.meta),
        ]
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n<link rel="icon" href="data:,">\n'
        f"<title>mechscope demo · {_e(model_id)}</title>\n<style>\n{css}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
    return atomic_write_text(run.path / "index.html", page)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _p(prob: Any) -> str:
    """A probability with three decimals, or two significant digits below 0.001."""
    x = float(prob)
    return f"{x:.3f}" if x >= 1e-3 or x == 0 else f"{x:.1e}"


def _tok(token: str) -> str:
    """A token as ``<code>"…"</code>``, so leading spaces and newlines are visible."""
    return f"<code>{_e(json.dumps(token, ensure_ascii=False))}</code>"


def _factual_section(rows: list[dict[str, Any]]) -> str:
    n_ok = sum(bool(r.get("correct")) for r in rows)
    head = "<tr><th>prompt</th><th>expected</th><th>top-1?</th><th>rank</th><th>p(expected)</th><th>top predictions</th></tr>"
    lines = []
    for r in rows:
        top = " ".join(f"{_tok(t['token'])}&nbsp;{_p(t['prob'])}" for t in r["top"])
        mark = '<td class="ok">yes</td>' if r["correct"] else '<td class="bad">no</td>'
        lines.append(
            f"<tr><td>{_e(r['prompt'])}</td><td>{_tok(r['answer'])}</td>{mark}"
            f'<td class="num">{int(r["answer_rank"])}</td><td class="num">{_p(r["answer_prob"])}</td>'
            f'<td class="tops">{top}</td></tr>'
        )
    return (
        "<section>\n<h2>Factual recall</h2>\n"
        f"<p>The model's next-token prediction after each prompt: {n_ok} of {len(rows)} expected answers are top-1. "
        "Rank 0 is the top prediction.</p>\n"
        f"<table>\n<thead>{head}</thead>\n<tbody>\n" + "\n".join(lines) + "\n</tbody>\n</table>\n</section>"
    )


def _lens_section(run: DemoRun) -> str:
    lens = run.results["lens"]
    labels: list[str] = list(lens["labels"])
    n = len(labels)
    step = max(1, n // 8)
    shown = sorted(set(range(0, n, step)) | {n - 1})
    k = min(_LENS_TABLE_TOP, run.top_probs.shape[1])
    rows = []
    for i in shown:
        top = " ".join(f"{_tok(lens['top_tokens'][i][j])}&nbsp;{_p(run.top_probs[i, j])}" for j in range(k))
        rows.append(
            f'<tr><td>{_e(labels[i])}</td><td class="num">{int(run.answer_rank[i])}</td>'
            f'<td class="num">{_p(run.answer_prob[i])}</td><td class="tops">{top}</td></tr>'
        )
    tokens = " ".join(_tok(t) for t in lens["str_tokens"])
    return (
        "<section>\n<h2>Logit lens</h2>\n"
        f"<p>Prompt: <q>{_e(lens['prompt'])}</q>, answer {_tok(lens['answer'])}. "
        "Each residual-stream point is read through the final norm and unembedding at the last token. "
        "<code>resid_pre i</code> is the stream before block <i>i</i>; the last point is the model's output.</p>\n"
        f'<p class="muted">Tokens: {tokens}</p>\n'
        f'<img src="lens.png" alt="{_e("Logit lens of " + repr(lens["prompt"]))}">\n'
        f"<table>\n<thead><tr><th>point</th><th>rank of {_tok(lens['answer'])}</th>"
        f"<th>p({_tok(lens['answer'])})</th><th>top-{k} lens tokens</th></tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody>\n</table>\n</section>"
    )


def _localisation_section(run_dir: Path) -> str:
    """Where the behaviours are computed, from ``localisation.json`` (absent when the stage was skipped)."""
    path = run_dir / "localisation.json"
    if not path.exists():
        return ""
    loc = _read_json(path, ("tasks", "results", "top_heads", "atp_vs_exact"))
    rows = "\n".join(
        f'<tr><td>{_e(t["task"])}</td><td class="num">{t["n"]}</td>'
        f'<td class="num">{t["clean_accuracy"]:.0%}</td><td class="num">{t["corrupted_accuracy"]:.0%}</td>'
        f'<td>{_e(t["metric"])}</td><td class="num">{t["clean_metric"]:.3f}</td>'
        f'<td class="num">{t["corrupted_metric"]:.3f}</td></tr>'
        for t in loc["tasks"]
    )
    heads = "\n".join(
        f'<tr><td>{_e(h["site"])}</td><td class="num">{h["value"]:.3f}</td><td class="num">{h["effect"]:+.3f}</td></tr>'
        for h in loc["top_heads"]
    )
    figures = "\n".join(
        f'<figure><img src="{_e(r["png"])}" alt="{_e(r["title"])}"><figcaption>{_e(r["title"])} — '
        f'<a href="{_e(r["html"])}">interactive heat map</a> ({_e(r["seconds"])} s)</figcaption></figure>'
        for r in loc["results"]
    )
    widgets = "\n".join(_result_widget(run_dir, r, f"ms-result-{i}") for i, r in enumerate(loc["results"]))
    if widgets:
        figures += (
            "\n<h3>Explore the results</h3>\n<p>The same results drawn by mechscope's components, data inlined "
            "(hover a cell for its value; the scale is centred at 0):</p>\n"
            f'<script type="module">{inline_bundle()}</script>\n{widgets}'
        )
    c = loc["atp_vs_exact"]
    return (
        "<section>\n<h2>Localisation</h2>\n"
        "<p>Clean vs corrupted prompts (corrupted accuracy is judged against the clean answers):</p>\n"
        "<table>\n<thead><tr><th>task</th><th>n</th><th>clean acc.</th><th>corrupted acc.</th><th>metric</th>"
        f"<th>clean</th><th>corrupted</th></tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n"
        "<h3>Top IOI heads (exact patching, clean → corrupted)</h3>\n"
        "<table>\n<thead><tr><th>head</th><th>patched logit diff</th><th>effect</th></tr></thead>\n"
        f"<tbody>\n{heads}\n</tbody>\n</table>\n"
        f"<p>Attribution patching of the heads correlates {c['correlation']:.3f} with exact patching "
        f"and took {c['atp_seconds']} s against {c['exact_seconds']} s.</p>\n"
        f"{figures}\n</section>"
    )


def _result_widget(run_dir: Path, r: dict[str, Any], uid: str) -> str:
    """A patching result as the bundle's heat map, from its ``meta.json`` and ``values.safetensors``."""
    from safetensors.numpy import load_file

    result = (run_dir / str(r.get("png", ""))).parent
    try:
        meta = json.loads((result / "meta.json").read_text())
        values = load_file(str(result / "values.safetensors"))["values"]
        axes = meta["axes"]
    except (OSError, KeyError, ValueError):
        return ""  # the figure above still shows it
    metric = str(meta.get("metric", ""))
    clean, corrupted = meta.get("clean"), meta.get("corrupted")
    if meta.get("method") != "direct_logit_attribution" and isinstance(clean, float) and isinstance(corrupted, float) \
            and clean != corrupted:  # fmt: skip
        values, metric = (
            (values - corrupted) / (clean - corrupted),
            f"normalized {metric}",
        )  # as the PNG beside it
    grid, rows, cols = fold_axes(values, [ax["labels"] for ax in axes], metric)
    widget = heatmap(grid, rows, cols, title=str(r.get("title", "")), metric=metric)
    return widget.fragment(bundle=False, uid=uid)


def _circuit_section(run_dir: Path) -> str:
    """The IOI circuit: top edges, exact checks, faithfulness curve and graph (absent when skipped)."""
    path = run_dir / "circuit.json"
    if not path.exists():
        return ""
    c = _read_json(path, ("top_edges", "curve", "top_check", "graph_png", "graph_html", "curve_png"))
    check = c["top_check"]
    rows = "\n".join(
        f'<tr><td>{_e(name)}</td><td class="num">{est:+.3f}</td><td class="num">{ex:+.3f}</td></tr>'
        for name, est, ex in zip(check.get("edges", []), check.get("score", []), check.get("exact", []))
    )
    curve = c["curve"]
    points = ", ".join(f"{f:.1%}: {v:.2f}" for f, v in zip(curve["fractions"], curve["faithfulness"]))
    return (
        "<section>\n<h2>Circuit</h2>\n"
        f"<p>EAP-IG over all {c.get('n_edges')} edges of the residual-stream graph, IOI logit difference, "
        f"{_e(c.get('ablation'))} ablation ({_e(c.get('method_seconds'))} s; whole stage "
        f"{_e(c.get('stage_seconds'))} s). Faithfulness of the top-k circuit by fraction of edges kept: "
        f"{_e(points)} (CPR {curve['cpr']:.2f}, CMD {curve['cmd']:.2f}).</p>\n"
        f"<h3>Top edges: EAP-IG estimate against exact edge patching</h3>\n"
        f"<p>Pearson correlation {_num(check.get('pearson'), '.3f')}, same sign for "
        f"{_num(check.get('sign_agreement'), '.0%')} of them.</p>\n"
        "<table>\n<thead><tr><th>edge</th><th>EAP-IG</th><th>exact</th></tr></thead>\n"
        f"<tbody>\n{rows}\n</tbody>\n</table>\n"
        f'<figure><img src="{_e(c["curve_png"])}" alt="faithfulness curve"><figcaption>Faithfulness against '
        "circuit size</figcaption></figure>\n"
        f'<figure><img src="{_e(c["graph_png"])}" alt="circuit graph" style="max-height:900px">'
        f'<figcaption>The circuit\'s top edges — <a href="{_e(c["graph_html"])}">interactive graph</a>'
        "</figcaption></figure>\n</section>"
    )


def _num(v: Any, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def _dictionary_section(run_dir: Path) -> str:
    """The demo SAE's metrics and feature-density plot, from ``sae.json`` (absent when skipped)."""
    path = run_dir / "sae.json"
    if not path.exists():
        return ""
    sae = _read_json(path, ("hook", "d_sae", "k", "train_tokens", "metrics", "density_png"))
    m = sae["metrics"]
    rows = [
        ("FVU (1 − explained variance)", _num(m.get("fvu"), ".4f")),
        ("L0 (active latents per token)", _num(m.get("l0"), ".1f")),
        ("cosine similarity of reconstructions", _num(m.get("cosine_similarity"), ".3f")),
        ("dead latents (never fired on the eval set)", _num(m.get("dead_fraction"), ".1%")),
        ("dense latents (fire on > 10% of tokens)", _num(m.get("dense_fraction"), ".1%")),
        ("CE loss: clean / with SAE", f"{_num(m.get('ce_clean'), '.4f')} / {_num(m.get('ce_sae'), '.4f')}"),
        ("CE loss recovered vs zero ablation", _num(m.get("ce_recovered_zero"), ".3f")),
        ("CE loss recovered vs mean ablation", _num(m.get("ce_recovered_mean"), ".3f")),
        ("delta LM loss (nats)", _num(m.get("delta_lm_loss"), "+.4f")),
        ("KL(clean ‖ with SAE) per token (nats)", _num(m.get("kl_sae"), ".4f")),
    ]
    table = "\n".join(f'<tr><td>{_e(k)}</td><td class="num">{_e(v)}</td></tr>' for k, v in rows)
    return (
        "<section>\n<h2>Dictionary</h2>\n"
        f"<p>A TopK SAE ({sae['d_sae']} latents, k = {sae['k']}) trained on {_e(sae['hook'])} over "
        f"{sae['train_tokens']} tokens of the Python standard library corpus "
        f"({_e(sae.get('train_seconds'))} s), evaluated on {_e(sae.get('eval_tokens'))} held-out tokens "
        f"({_e(m.get('n_tokens'))} counted: BOS excluded). "
        f'Saved in <a href="{_e(sae.get("dictionary", ""))}">{_e(sae.get("dictionary", ""))}</a>.</p>\n'
        f"<table>\n<thead><tr><th>metric</th><th>value</th></tr></thead>\n<tbody>\n{table}\n</tbody>\n</table>\n"
        f'<figure><img src="{_e(sae["density_png"])}" alt="feature density histogram">'
        "<figcaption>Feature density: latents per bin of log10 firing frequency on the eval set "
        "(dead latents are not in any bin)</figcaption></figure>\n</section>"
    )


def _meta_section(meta: dict[str, Any]) -> str:
    raw = meta.get("model")
    model: dict[str, Any] = raw if isinstance(raw, dict) else {}
    items = [
        ("model", model.get("id")),
        ("revision", model.get("revision")),
        (
            "architecture",
            f"{model.get('family')}, {model.get('n_layers')} layers, d_model {model.get('d_model')}",
        ),
        ("created", meta.get("created")),
        ("mechscope", meta.get("mechscope_version")),
        ("device", meta.get("device")),
        ("seed", meta.get("seed")),
        ("kind / schema", f"{meta.get('kind')} / {meta.get('schema_version')}"),
    ]
    dl = "\n".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    config = json.dumps(meta.get("config"), indent=2, ensure_ascii=False)
    return (
        "<section>\n<h2>Run</h2>\n"
        f"<dl>\n{dl}\n</dl>\n<details><summary>config</summary>\n<pre>{_e(config)}</pre>\n</details>\n"
        '<p class="muted">Files: meta.json, results.json, lens.safetensors, lens.png, index.html.</p>\n</section>'
    )
