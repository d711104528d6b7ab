"""The ``checks`` stage: causal tests of what the earlier stages predict, each with the
predicted and the measured number side by side.

1. **Heads together** (needs ``localise``'s heads sweep): the top ``top_heads`` heads are
   patched together (clean into corrupted). Prediction: the sum of their single-head
   normalised effects (additivity). Measured: the normalised metric of the joint patch.
   It passes when both sides agree in sign and the joint patch restores at least half of
   what the sum predicts (heads that matter alone should matter together); ``weak`` when the
   sign agrees but the joint effect is smaller than that.
2. **Feature ablation** (per kept feature): zero the feature at every position of the clean
   prompts (BOS excepted, as everywhere here). Prediction: its zero-ablation attribution
   (``features``). Measured: the exact metric change.
3. **Feature steering** (per kept feature): add ``steer_scale`` × its largest corpus
   activation along its decoder direction at every position of the corrupted prompts.
   Prediction: the first-order change, the metric's gradient on the corrupted run dotted
   with that vector. Measured: the exact change.

   A feature check passes when prediction and measurement agree in sign and lie within a factor
   of 3 of each other; it is ``weak`` when only the sign agrees, ``failed`` when the signs
   differ, and ``inconclusive`` when the prediction is under 1 % of the clean-corrupted gap (too
   small to have a sign worth testing).
4. **Steering example**: the top feature clamped to ``steer_scale`` × its largest activation on
   ``explain``'s neutral prompts; greedy generations before and after (shown, not scored).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._fs import atomic_write_json
from ..interventions import SWEEPS, SweepConfig
from ..interventions.patching import patch_variants
from ..models import HookedModel
from ..tasks import PreparedTask, make_metric
from ._acts import edit_mask, encode_acts
from .runner import StageContext, read_stage_summary
from .session import Session
from .stages_features import feature_edit, load_stage_dictionaries

__all__ = ["checks_stage"]

INCONCLUSIVE = 0.01
"""A prediction smaller than this fraction of |clean − corrupted| has no sign worth testing."""

FACTOR = 3.0
"""A measured change with the predicted sign is ``passed`` within this factor of the prediction,
and ``weak`` (right sign, wrong size) outside it."""

VERDICTS = ("passed", "weak", "failed", "inconclusive")
"""Every verdict a check can have."""


def _verdict(predicted: float, measured: float, span: float) -> str:
    if abs(predicted) < INCONCLUSIVE * abs(span):
        return "inconclusive"
    if predicted * measured <= 0:
        return "failed"
    return "passed" if 1 / FACTOR <= measured / predicted <= FACTOR else "weak"


def heads_check(
    model: HookedModel, data: PreparedTask, metric: str, top: list[dict[str, Any]], k: int
) -> dict[str, Any]:
    """Patch the top ``k`` heads together; compare with the sum of their single effects."""
    variants, axes = SWEEPS["heads"](model, data, SweepConfig())
    layers, n_heads = list(axes[0].labels), len(axes[1].labels)
    chosen = top[:k]
    joint: list[Any] = []
    for row in chosen:
        layer, head = row["component"][1:].split(".h")
        joint.extend(variants[layers.index(layer) * n_heads + int(head)])
    run = patch_variants(model, data, [tuple(joint)], metric, direction="denoise")
    clean, corrupted = float(run.clean.mean()), float(run.corrupted.mean())
    measured = (float(run.mean[0]) - corrupted) / (clean - corrupted)
    predicted = sum(float(r["normalised"]) for r in chosen)
    sign = predicted * measured > 0
    verdict = ("passed" if abs(measured) >= 0.5 * abs(predicted) else "weak") if sign else "failed"
    return {"kind": "heads", "name": "top heads patched together", "components": [r["component"] for r in chosen],
            "prediction": "sum of the single-head normalised effects", "predicted": predicted,
            "measured": measured, "verdict": verdict}  # fmt: skip


def _corrupted_grad(model: HookedModel, hook: str, data: PreparedTask, metric: str) -> Tensor:
    """``[n pos d]``: the metric's gradient at ``hook`` on the corrupted prompts (padding zeroed)."""
    m, store = make_metric(metric, model, data), {}

    def keep(x: Tensor, hook: Any) -> Tensor:
        x = x.detach().requires_grad_(True)
        store["x"] = x
        return x

    with torch.enable_grad(), model.hooks([(hook, keep)]):
        logits = model(data.corrupted, logits_to_keep=1)
        (g,) = torch.autograd.grad(m(logits[:, -1], data).sum(), [store["x"]])
    return g * edit_mask(model, data.corrupted).to(g.device)[..., None]


def feature_checks(model: HookedModel, dictionary: Any, data: PreparedTask, metric: str, rows: list[dict[str, Any]],
                   scale: float, span: float) -> list[dict[str, Any]]:  # fmt: skip
    """Zero-ablation and steering checks of each kept feature (module docstring)."""
    hook = dictionary.config.hook_name
    grad = _corrupted_grad(model, hook, data, metric)
    zeros = torch.zeros(())
    clean_base = feature_edit(model, dictionary, data.clean, data, metric, zeros)
    corrupt_base = feature_edit(model, dictionary, data.corrupted, data, metric, zeros)
    _, cache = model.run_with_cache(data.clean, names=[hook], return_logits=False)
    with torch.no_grad():
        x = cache[hook]
        f = encode_acts(dictionary, x)
    real = edit_mask(model, data.clean).to(x.device)[..., None]
    out = []
    for r in rows:
        i = r["feature"]
        w = dictionary.W_dec[i].detach()  # [d]
        ablate = -(f[..., i : i + 1] * real) * w  # [n pos d]
        measured = feature_edit(model, dictionary, data.clean, data, metric, ablate) - clean_base
        out.append({"kind": "ablation", "name": f"zero-ablate feature {i}", "feature": i,
                    "prediction": "zero-ablation attribution", "predicted": r["zero_attribution"],
                    "measured": measured, "verdict": _verdict(r["zero_attribution"], measured, span)})  # fmt: skip
        vec = scale * r["max_activation"] * w.float()  # [d]
        predicted = float((grad.float() @ vec.to(grad.device)).sum(1).mean())
        steer = vec.to(x.device) * edit_mask(model, data.corrupted).to(x.device)[..., None]
        measured = feature_edit(model, dictionary, data.corrupted, data, metric, steer) - corrupt_base
        out.append({"kind": "steering", "name": f"steer feature {i} (+{scale:g} x max)", "feature": i,
                    "prediction": "first-order change (gradient . steering vector)", "predicted": predicted,
                    "measured": measured, "verdict": _verdict(predicted, measured, span)})  # fmt: skip
    return out


def checks_stage(ctx: StageContext, session: Session) -> dict[str, Any]:
    """Run every check its enabled upstream stages allow; write ``checks/checks.json``."""
    from ..pipeline.features_stage import steering_example

    s, model, metric = session.settings("checks"), session.model, session.config.behaviour.metric
    data = session.prepared()
    checks: list[dict[str, Any]] = []
    examples: list[dict[str, Any]] = []
    ctx.progress(0, 3, "heads patched together")
    if "localise" in ctx.upstream and s["top_heads"] > 0:
        loc = read_stage_summary(ctx.upstream["localise"])
        if loc.get("top_heads") and all(r.get("normalised") is not None for r in loc["top_heads"]):
            small = session.prepared(session.settings("localise")["n"])
            checks.append(heads_check(model, small, metric, loc["top_heads"], s["top_heads"]))
    if "features" in ctx.upstream:
        fsum = read_stage_summary(ctx.upstream["features"])
        dicts = load_stage_dictionaries(
            ctx.run_dir, read_stage_summary(ctx.upstream["dictionaries"]), model.device
        )
        m = make_metric(metric, model, data)
        with torch.no_grad():
            span = float(m(model(data.clean, logits_to_keep=1)[:, -1], data).mean()
                         - m(model(data.corrupted, logits_to_keep=1)[:, -1], data).mean())  # fmt: skip
        for d in fsum["dictionaries"]:
            ctx.progress(1, 3, f"{d['name']}: ablating and steering {len(d['features'])} features")
            rows = feature_checks(
                model, dicts[d["name"]], data, metric, d["features"], s["steer_scale"], span
            )
            checks.extend({**c, "dictionary": d["name"]} for c in rows)
            if d["features"] and "explain" in ctx.upstream:
                top = d["features"][0]
                prompts = session.settings("explain")["steer_prompts"]
                ctx.progress(2, 3, f"{d['name']}: steering example, feature {top['feature']}")
                ex = steering_example(model, dicts[d["name"]], top["feature"], s["steer_scale"] * top["max_activation"],
                                      prompts, s["max_new_tokens"])  # fmt: skip
                examples.append({**ex, "dictionary": d["name"]})
    counts = {v: sum(c["verdict"] == v for c in checks) for v in VERDICTS}
    atomic_write_json(ctx.out_dir / "checks.json", {"checks": checks, "steering_examples": examples})
    ctx.progress(3, 3, ", ".join(f"{counts[v]} {v}" for v in VERDICTS))
    return {
        "checks": checks,
        "counts": counts,
        "steering_examples": examples,
        "file": f"{ctx.name}/checks.json",
    }
