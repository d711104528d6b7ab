"""The investigation's dictionary stages: train or load dictionaries, find the behaviour's
features (the feature circuit), explain and validate them.

* ``dictionaries``: a TopK SAE on ``blocks.L.hook_resid_pre`` for each layer (given, or the
  ones whose heads carry most of the behaviour), trained on ``corpus.n_tokens`` corpus tokens
  and evaluated on the contexts after them, or loaded (copied into the run) from ``load`` and
  evaluated there too: on the contexts after its training ones when ``load`` is another run's
  ``dictionaries/``, else on the corpus's first contexts (``held_out: false``).
* ``features``: statistics of every latent over corpus contexts after the training ones
  (Parquet tables), then the **feature circuit** (node level; Marks et al. 2024): at the
  dictionary's hook the clean run is rewritten as ``x = decode(f) + err``, and the metric's
  gradient gives each latent's attribution, the linear estimate of the metric change when its
  activations at every position are patched to their corrupted values,
  ``attr_i = mean_n Σ_pos (f_i(corrupt) − f_i(clean)) ∂m/∂f_i`` (every real position but BOS,
  :func:`edit_mask`), the error term's the same way,
  and the zero-ablation estimate ``−mean_n Σ_pos f_i(clean) ∂m/∂f_i``. The ``n_features``
  largest |attr| are kept; the top ``check_top`` are patched exactly, one forward each.
  With several dictionaries, the edges between the kept features of consecutive ones
  (``feature_edges.py``) go to ``features/edges.json``.
* ``explain``: each kept feature explained from its top examples, scored (detection,
  fuzzing, simulation), validated on held-out contexts (report cards), with dashboards.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import Tensor

from .._fs import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..data import TokenStream, open_documents
from ..dictionary.io import load_dictionary
from ..errors import MechscopeError
from ..models import HookedModel
from ..tasks import PreparedTask, make_metric
from ._acts import decode_acts, edit_mask, encode_acts
from .runner import StageContext, read_stage_summary
from .session import Session

__all__ = [
    "dictionaries_stage",
    "explain_stage",
    "feature_attribution",
    "features_stage",
    "load_stage_dictionaries",
]


def _layers(session: Session, ctx: StageContext) -> list[int]:
    s = session.settings("dictionaries")
    if s["layers"]:
        return sorted(set(s["layers"]))
    scores = read_stage_summary(ctx.upstream["localise"]).get("layer_scores")
    if not scores:
        raise MechscopeError(
            "dictionaries: no layer given and the localisation has no 'heads' sweep to pick from"
        )
    ranked = sorted(scores, key=lambda k: -scores[k])[: s["auto_layers"]]
    return sorted(int(k) for k in ranked)


def _find_dictionary(root: Path, hook: str) -> Path:
    """The dictionary at ``root`` (or in a directory under it) whose hook is ``hook``."""
    candidates = [
        root,
        *sorted(p.parent for p in root.rglob("cfg.json")),
        *sorted(p.parent for p in root.rglob("config.json")),
    ]
    for path in candidates:
        try:
            d = load_dictionary(path)
        except MechscopeError:
            continue
        if d.config.hook_name == hook:
            return path
    raise MechscopeError(f"stages.dictionaries.settings.load: no dictionary for {hook} under {root}")


def dictionaries_stage(ctx: StageContext, session: Session) -> dict[str, Any]:
    """Train (or load) one dictionary per layer; write ``dictionaries/L<layer>/``."""
    from ..pipeline.sae_stage import SAEStageConfig, train_and_evaluate

    s, corpus, model = session.settings("dictionaries"), session.config.corpus, session.model
    layers = _layers(session, ctx)
    out = []
    for i, layer in enumerate(layers):
        hook, name = f"blocks.{layer}.hook_resid_pre", f"L{layer}"
        ctx.progress(i, len(layers), f"{'loading' if s['load'] else 'training'} a dictionary at {hook}")
        stream = TokenStream(open_documents(corpus.source), model, ctx_len=corpus.ctx_len, bos="bos")
        if s["load"]:
            out.append(
                _load_and_evaluate(ctx, model, hook, name, Path(s["load"]), stream, s["eval_contexts"])
            )
            continue
        cfg = SAEStageConfig(layer=layer, expansion=s["expansion"], k=s["k"], train_tokens=corpus.n_tokens,
                             batch_size=s["batch_size"], lr=s["lr"], ctx_len=corpus.ctx_len,
                             eval_contexts=s["eval_contexts"], seed=session.config.seed)  # fmt: skip
        say, on_step = _train_progress(ctx, i, len(layers), name, max(1, corpus.n_tokens // s["batch_size"]))
        summary = train_and_evaluate(model, hook, stream, cfg, ctx.out_dir / name, say, on_step=on_step)
        _final_paths(ctx, ctx.out_dir / name / "train.json")
        summary = {**summary, "dictionary": f"{ctx.name}/{name}/{summary['dictionary']}",
                   "density_png": f"{ctx.name}/{name}/density.png"}  # fmt: skip
        out.append({"name": name, **summary, "source": "trained", "corpus": summary["source"]})
    atomic_write_json(ctx.out_dir / "dictionaries.json", {"dictionaries": out})
    ctx.progress(len(layers), len(layers), "done")
    return {"layers": layers, "dictionaries": out}


def _load_and_evaluate(
    ctx: StageContext, model: HookedModel, hook: str, name: str, root: Path, stream: TokenStream, n_eval: int
) -> dict[str, Any]:
    """Copy the dictionary for ``hook`` found under ``root`` into the run and evaluate it on the
    corpus's first ``n_eval`` contexts after a gap (its training data is unknown here)."""
    from ..dictionary.evaluate import evaluate_dictionary, plot_density

    src = _find_dictionary(root, hook)
    shutil.copytree(src, ctx.out_dir / name / "topk")
    d = load_dictionary(ctx.out_dir / name / "topk").to(model.device)
    trained_on = _trained_contexts(root, hook)
    start = 0 if trained_on is None else trained_on + 1
    ctx.progress(
        0, 1, f"evaluating the loaded dictionary at {hook} on {n_eval} contexts from context {start}"
    )
    tokens = stream.take(n_eval, start=start)
    ev = evaluate_dictionary(model, d, tokens, batch_size=4, exclude_bos=True)
    plot_density(
        ev, ctx.out_dir / name / "density.png", title=f"Feature density, loaded dictionary at {hook}"
    )
    return {"name": name, "hook": hook, "source": "loaded", "loaded_from": str(src), "d_sae": d.config.d_sae,
            "k": getattr(d.config, "k", None), "dictionary": f"{ctx.name}/{name}/topk", "train_contexts": 0,
            "eval_start": start, "held_out": trained_on is not None, "eval_tokens": int(tokens.numel()),
            "metrics": ev.as_dict(),
            "density_png": f"{ctx.name}/{name}/density.png"}  # fmt: skip


def _trained_contexts(root: Path, hook: str) -> int | None:
    """How many corpus contexts the dictionary for ``hook`` under ``root`` was trained on, when
    ``root`` is another run's ``dictionaries/`` (its ``dictionaries.json`` says); else None."""
    try:
        entries = json.loads((root / "dictionaries.json").read_text())["dictionaries"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for entry in entries:
        if entry.get("hook") == hook and entry.get("source") == "trained":
            return int(entry["train_contexts"])
    return None


def load_stage_dictionaries(run_dir: Path, summary: dict[str, Any], device: Any) -> dict[str, Any]:
    """The dictionaries a ``dictionaries`` stage wrote, by name, on ``device``."""
    return {d["name"]: load_dictionary(run_dir / d["dictionary"]).to(device) for d in summary["dictionaries"]}


def feature_attribution(
    model: HookedModel, dictionary: Any, data: PreparedTask, metric: str
) -> dict[str, Tensor]:
    """Per-latent attributions to the metric at the dictionary's hook (module docstring), ``[d_sae]`` each."""
    hook, m = dictionary.config.hook_name, make_metric(metric, model, data)
    _, cache = model.run_with_cache(data.corrupted, names=[hook], return_logits=False)
    x_corr = cache[hook]  # [n pos d]
    with torch.no_grad():
        f_corr = encode_acts(dictionary, x_corr)
        err_corr = x_corr - decode_acts(dictionary, f_corr, x_corr)
    leaves: dict[str, Tensor] = {}

    def rewrite(x: Tensor, hook: Any) -> Tensor:
        f = encode_acts(dictionary, x).detach().requires_grad_(True)
        recon = decode_acts(dictionary, f, x)
        err = (x - recon).detach().requires_grad_(True)
        leaves.update(f=f, err=err)
        return recon + err

    with torch.enable_grad(), model.hooks([(hook, rewrite)]):
        logits = model(data.clean, logits_to_keep=1)
        per_example = m(logits[:, -1], data)  # [n]
        g_f, g_err = torch.autograd.grad(per_example.sum(), [leaves["f"], leaves["err"]])
    real = edit_mask(model, data.clean).to(g_f.device)[..., None]  # [n pos 1]
    f_clean = leaves["f"].detach()
    n = data.n
    return {
        "attr_patch": ((f_corr - f_clean) * g_f * real).sum((0, 1)).float().cpu() / n,
        "attr_zero": (-f_clean * g_f * real).sum((0, 1)).float().cpu() / n,
        "error_patch": (((err_corr - leaves["err"].detach()) * g_err * real).sum() / n)
        .float()
        .cpu()
        .reshape(1),
        "act_clean": (f_clean * real).sum((0, 1)).float().cpu() / real.sum().cpu(),
        "act_corrupted": (f_corr * real).sum((0, 1)).float().cpu() / real.sum().cpu(),
        "clean_metric": per_example.detach().float().mean().cpu().reshape(1),
    }


def feature_edit(model: HookedModel, dictionary: Any, inputs: Any, data: PreparedTask, metric: str,
                 delta: Tensor) -> float:  # fmt: skip
    """The mean metric when ``delta`` (``[n pos d]`` or broadcastable) is added at the dictionary's hook."""
    m, hook = make_metric(metric, model, data), dictionary.config.hook_name

    def add(x: Tensor, hook: Any) -> Tensor:
        return x + delta.to(x.dtype)

    with torch.no_grad(), model.hooks([(hook, add)]):
        logits = model(inputs, logits_to_keep=1)
    return float(m(logits[:, -1], data).float().mean())


def exact_patches(
    model: HookedModel, dictionary: Any, data: PreparedTask, metric: str, features: list[int]
) -> list[float]:
    """Exact metric change when each feature's clean activations are patched to the corrupted
    ones (every edited position at once), one forward pass per feature."""
    hook = dictionary.config.hook_name
    with torch.no_grad():
        _, cc = model.run_with_cache(data.corrupted, names=[hook], return_logits=False)
        _, ca = model.run_with_cache(data.clean, names=[hook], return_logits=False)
        diff = encode_acts(dictionary, cc[hook]) - encode_acts(dictionary, ca[hook])  # [n pos d_sae]
        diff = diff * edit_mask(model, data.clean).to(diff.device)[..., None]
    base = feature_edit(model, dictionary, data.clean, data, metric, torch.zeros(()))
    return [
        feature_edit(model, dictionary, data.clean, data, metric, diff[..., f : f + 1] * dictionary.W_dec[f])
        - base
        for f in features
    ]


def features_stage(ctx: StageContext, session: Session) -> dict[str, Any]:
    """Statistics, feature attributions and exact checks per dictionary; ``features/<name>/``."""
    from ..features import FeatureArtifact, StatsConfig
    from ..pipeline.features_job import FeaturesJobConfig, run_features

    s, corpus, model = session.settings("features"), session.config.corpus, session.model
    dsum = read_stage_summary(ctx.upstream["dictionaries"])
    dicts = load_stage_dictionaries(ctx.run_dir, dsum, model.device)
    data, metric = session.prepared(), session.config.behaviour.metric
    out = []
    for i, d in enumerate(dsum["dictionaries"]):
        dictionary, name = dicts[d["name"]], d["name"]
        ctx.progress(i, len(dicts), f"{name}: statistics over {s['n_contexts']} contexts")
        # after the training and evaluation contexts of the dictionary (sae_stage.train_and_evaluate)
        start = (
            int(d.get("eval_start", d.get("train_contexts", 0) + 1))
            + session.settings("dictionaries")["eval_contexts"]
        )
        fcfg = FeaturesJobConfig(corpus=corpus.source, n_contexts=s["n_contexts"], ctx_len=corpus.ctx_len,
                                 start=start, stats=StatsConfig(skip_first=1), dashboards=0)  # fmt: skip
        _, stats = run_features(fcfg, lambda _m: None, model, dictionary, out=ctx.out_dir / name)
        ctx.progress(i, len(dicts), f"{name}: attributing the metric to {dictionary.config.d_sae} latents")
        attr = feature_attribution(model, dictionary, data, metric)
        atomic_write_bytes(ctx.out_dir / name / "attribution.safetensors",
                           save({k: v.contiguous() for k, v in attr.items()}, metadata={"kind": "feature-attribution"}))  # fmt: skip
        art = FeatureArtifact(ctx.out_dir / name)
        active = (attr["act_clean"] > 0) | (attr["act_corrupted"] > 0)
        score = torch.where(active, attr["attr_patch"].abs(), torch.full_like(attr["attr_patch"], -1.0))
        chosen = [int(f) for f in score.topk(min(s["n_features"], int(active.sum()))).indices]
        checked = exact_patches(model, dictionary, data, metric, chosen[: s["check_top"]])
        rows = []
        for j, f in enumerate(chosen):
            exact = checked[j] if j < len(checked) else None
            rows.append({"feature": f, "attribution": float(attr["attr_patch"][f]), "exact": exact,
                         "zero_attribution": float(attr["attr_zero"][f]), "act_clean": float(attr["act_clean"][f]),
                         "act_corrupted": float(attr["act_corrupted"][f]),
                         "max_activation": float(art.summary(f)["max_activation"])})  # fmt: skip
        out.append({"name": name, "hook": d["hook"], "artifact": f"{ctx.name}/{name}",
                    "attribution_file": f"{ctx.name}/{name}/attribution.safetensors", "n_tokens": stats["n_tokens"],
                    "fired": stats["fired"], "d_sae": stats["d_sae"], "features": rows,
                    "total_attribution": float(attr["attr_patch"].sum()), "error_attribution": float(attr["error_patch"][0]),
                    "check": _check(rows)})  # fmt: skip
    edges = _edges(ctx, model, dicts, out, data, metric)
    atomic_write_json(ctx.out_dir / "features.json", {"dictionaries": out, "edges": edges})
    ctx.progress(len(dicts), len(dicts), "done")
    return {"dictionaries": out, "edges": edges, "edges_file": f"{ctx.name}/edges.json" if edges else None}


def _edges(ctx: StageContext, model: HookedModel, dicts: dict[str, Any], out: list[dict[str, Any]],
           data: PreparedTask, metric: str) -> list[dict[str, Any]]:  # fmt: skip
    """Feature-circuit edges between the kept features of consecutive dictionaries (``edges.json``);
    returns them as rows ``{source, target, weight}``, largest |weight| first."""
    from .feature_edges import feature_edges

    rows: list[dict[str, Any]] = []
    pairs = []
    for up, down in itertools.pairwise(out):
        ctx.progress(len(out), len(out), f"feature-circuit edges {up['name']} -> {down['name']}")
        src, dst = [r["feature"] for r in up["features"]], [r["feature"] for r in down["features"]]
        e = feature_edges(
            model,
            dicts[up["name"]],
            dicts[down["name"]],
            data,
            metric,
            src,
            dst,
            edit_mask(model, data.clean),
        )
        pairs.append({"upstream": up["name"], "downstream": down["name"], "sources": src, "targets": dst,
                      "edges": e["edges"].tolist(), "error": e["error"].tolist(), "all_sources": e["all_sources"].tolist()})  # fmt: skip
        for i, u in enumerate(src):
            for j, d in enumerate(dst):
                rows.append(
                    {
                        "source": f"{up['name']}/{u}",
                        "target": f"{down['name']}/{d}",
                        "weight": float(e["edges"][i, j]),
                    }
                )
    if pairs:
        atomic_write_json(ctx.out_dir / "edges.json", {"pairs": pairs})
    return sorted(rows, key=lambda r: -abs(r["weight"]))


def _check(rows: list[dict[str, Any]]) -> dict[str, Any]:
    pairs = [(r["attribution"], r["exact"]) for r in rows if r["exact"] is not None]
    if not pairs:
        return {}
    est, ex = torch.tensor(pairs, dtype=torch.float64).T
    pearson = float(torch.corrcoef(torch.stack([est, ex]))[0, 1]) if len(pairs) > 2 else None
    return {
        "n": len(pairs),
        "pearson": pearson,
        "sign_agreement": float((est.sign() == ex.sign()).double().mean()),
    }


def explain_stage(ctx: StageContext, session: Session) -> dict[str, Any]:
    """Explain, score and validate each dictionary's kept features; ``explain/<name>/``."""
    from ..explain.files import save_explanations, save_scores
    from ..features import FeatureArtifact
    from ..features.dashboard import build_dashboards
    from ..pipeline.features_job import (
        SCORERS,
        ExplainJobConfig,
        explain_features,
        notes_for,
        validate_features,
    )

    s, model = session.settings("explain"), session.model
    fsum = read_stage_summary(ctx.upstream["features"])
    dicts = load_stage_dictionaries(
        ctx.run_dir, read_stage_summary(ctx.upstream["dictionaries"]), model.device
    )
    explainer, simulator = _explainer(s)
    ecfg = ExplainJobConfig(
        held_out=s["held_out"], held_out_len=s["held_out_len"], steer_prompts=tuple(s["steer_prompts"])
    )
    out = []
    for i, d in enumerate(fsum["dictionaries"]):
        name, art = d["name"], FeatureArtifact(ctx.run_dir / d["artifact"])
        chosen = [r["feature"] for r in d["features"]]
        ctx.progress(i, len(fsum["dictionaries"]), f"{name}: explaining and validating features {chosen}")
        explanations, scores = explain_features(
            art, chosen, explainer, simulator, SCORERS, session.config.seed
        )
        cards = (
            validate_features(model, dicts[name], art, explanations, simulator, ecfg) if explanations else {}
        )
        where = ctx.out_dir / name
        save_explanations(where / "explanations.json", explanations)
        save_scores(where / "scores.json", scores)
        atomic_write_json(where / "cards.json", {str(f): c.to_json() for f, c in cards.items()})
        counts = art.column("n_active")
        frequent = sorted((j for j, c in enumerate(counts) if c > 0), key=lambda j: -counts[j])
        pages = sorted(set(chosen) | set(frequent[: session.settings("features")["dashboards"]]))
        build_dashboards(
            art, where / "dashboards", features=pages, notes=notes_for(explanations, scores, cards)
        )
        out.append({"name": name, "hook": d["hook"], "dashboards": f"{ctx.name}/{name}/dashboards/index.html",
                    "features": [{"feature": e.feature, "explanation": e.text,
                                  "scores": {sc.scorer: sc.value for sc in scores if sc.feature == e.feature},
                                  "verdict": cards[e.feature].verdict if e.feature in cards else None,
                                  "card": f"{ctx.name}/{name}/cards.json",
                                  "page": f"{ctx.name}/{name}/dashboards/feature/{e.feature}.html"}
                                 for e in explanations]})  # fmt: skip
    ctx.progress(len(out), len(out), "done")
    return {"explainer": s["explainer"], "dictionaries": out}


def _explainer(s: dict[str, Any]) -> tuple[Any, Any]:
    """The explainer and simulator; ``llm_url``/``llm_model`` override the environment's endpoint."""
    import os

    from ..pipeline.features_job import explainer_and_simulator

    if s["explainer"] != "llm":
        return explainer_and_simulator(s["explainer"])
    from ..explain import LLMConfig, LLMExplainer, LLMSimulator

    env = dict(os.environ)
    if s["llm_url"]:
        env["MECHSCOPE_LLM_BASE_URL"] = s["llm_url"]
    if s["llm_model"]:
        env["MECHSCOPE_LLM_MODEL"] = s["llm_model"]
    cfg = LLMConfig.from_env(env)
    return LLMExplainer(cfg), LLMSimulator(cfg)


def _train_progress(
    ctx: StageContext, i: int, n: int, name: str, steps: int
) -> tuple[Callable[[str], None], Callable[[int, int], None]]:
    """Progress callbacks for training dictionary ``i`` of ``n``: notes at the latest step, and the
    optimiser steps themselves (about 20 updates), on a scale of ``n * steps``."""
    done = {"step": i * steps}

    def say(message: str) -> None:
        ctx.progress(done["step"], n * steps, message)

    def on_step(step: int, total: int) -> None:
        done["step"] = i * steps + step
        if step % max(1, total // 20) == 0 or step == total:
            ctx.progress(done["step"], n * steps, f"{name}: training step {step}/{total}")

    return say, on_step


def _final_paths(ctx: StageContext, path: Path) -> None:
    """Point the paths the trainer recorded in ``path`` at the stage's final directory (the
    temporary build directory is renamed when the stage completes)."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    final = ctx.run_dir / ctx.name
    for tmp in {str(ctx.out_dir), str(ctx.out_dir.resolve())}:
        text = text.replace(json.dumps(tmp)[1:-1], json.dumps(str(final))[1:-1])
    atomic_write_text(path, text)
