"""Activation-patching sweeps and attribution patching: mechscope against TransformerLens.

What is measured
----------------
One GPT-2-small-shaped model (``GPT2Config()``: 12 layers, d_model 768, 12 heads, vocab
50257), randomly initialised under ``torch.manual_seed(0)``, fp32, eval mode, CPU. mechscope
wraps the HF model. TransformerLens 3.9 (the last release with ``HookedTransformer``) runs
the same weights two ways: a ``HookedTransformer`` built from the HF state dict offline
(``convert_gpt2_weights`` + ``load_and_process_state_dict`` without weight processing: the
setup this benchmark was specified with) and a ``TransformerBridge`` built offline around a
copy of the HF module (the class TransformerLens 4 keeps). The input is one 20-token IOI-style prompt pair in Wang et al.'s template style
(names at positions 2, 4 and 16), tokenised with SmolLM2's tokenizer (ids < 50257; the
weights are random, so only shapes and positions matter). Metric: the logit difference
between the indirect object and the subject at the last position.

* ``resid_pre`` sweep, 12 layers x 20 positions = 240 patches: TransformerLens's
  ``patching.get_act_patch_resid_pre`` against ``mechscope.interventions.sweep(..., "resid_pre")``.
* all-heads sweep (each head's output at every position), 144 patches:
  ``get_act_patch_attn_head_out_all_pos`` against ``sweep(..., "heads")``.
* AtP over every head at every position (``heads_by_pos``: 2,880 sites) against one plain HF
  forward plus backward of the same metric.

Before timing, results are checked to agree (max |difference| <= 1e-4). Each measurement is
repeated ``--reps`` times (interleaved: every variant once per round) after one untimed
warm-up call each, and the median is reported. A second prompt pair with a 7-token shared prefix shows how mechscope's prefix
reuse scales (reported, no target).

Run: ``make bench`` (runs every benchmark) or ``.venv/bin/python bench/bench_patching.py``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

import mechscope
from mechscope.interventions import sweep
from mechscope.interventions.attribution import attribution_patching
from mechscope.tasks import Task, prepare

OUT = Path(__file__).parent / "results" / "patching.json"
PROMPTS = {
    "wang": (
        "Then, Mary and John went to the big grocery store in the town. John gave a drink to",
        "Then, Alice and Bob went to the big grocery store in the town. Charlie gave a drink to",
    ),
    "long-prefix": (
        "Then, in the early morning, Mary and John went to the store. John gave a drink to",
        "Then, in the early morning, Alice and Bob went to the store. Charlie gave a drink to",
    ),
}
TARGETS = {"resid_pre": 10.0, "heads": 10.0}
ATP_TARGET = 3.0
TOLERANCE = 1e-4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="one repetition, for a smoke run")
    p.add_argument("--out", type=Path, default=OUT, help="where to write the JSON results")
    return p.parse_args(argv)


def tokens() -> dict[str, tuple[list[int], list[int], int, int]]:
    """Clean ids, corrupted ids, answer id, wrong id for each prompt pair."""
    tok = mechscope.load_model("smollm2-135m").tokenizer
    out = {}
    for name, (clean, corrupted) in PROMPTS.items():
        c, k = tok(clean)["input_ids"], tok(corrupted)["input_ids"]
        assert len(c) == len(k) == 20, (name, len(c), len(k))
        out[name] = (c, k, tok(" Mary")["input_ids"][0], tok(" John")["input_ids"][0])
    return out


def build() -> tuple[Any, dict[str, Any]]:
    """mechscope's wrapper and TransformerLens's two model classes, all with the same weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config()).eval()
    model = mechscope.wrap(hf)
    peers: dict[str, Any] = {}
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
        from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

        c = hf.config
        cfg = HookedTransformerConfig(
            n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head, d_mlp=4 * c.n_embd,
            n_ctx=c.n_positions, d_vocab=c.vocab_size, act_fn="gelu_new", normalization_type="LN",
        )  # fmt: skip
        ht = HookedTransformer(cfg)
        ht.load_and_process_state_dict(
            convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False, center_unembed=False
        )
        peers["TL HookedTransformer"] = ht.eval()
    except ImportError as e:
        print(f"TransformerLens HookedTransformer unavailable ({e})")
    try:
        from transformer_lens.model_bridge.sources import build_bridge_from_module

        twin = copy.deepcopy(hf)
        peers["TL TransformerBridge"] = build_bridge_from_module(
            twin, "GPT2LMHeadModel", hf_config=twin.config
        ).eval()
    except ImportError as e:
        print(f"TransformerLens TransformerBridge unavailable ({e})")
    return model, peers


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def variants(
    model: Any, peers: dict[str, Any], ids: tuple[list[int], list[int], int, int]
) -> dict[str, Callable[[], Any]]:
    """Every measured call, keyed by name; each returns its result tensor."""
    clean, corrupted, ans, wrong = ids
    data = prepare(model, Task("ioi", (tuple(clean),), (tuple(corrupted),), (ans,), (wrong,)))
    out: dict[str, Callable[[], Any]] = {
        "mechscope resid_pre": lambda: sweep(model, data, "resid_pre").values,
        "mechscope heads": lambda: sweep(model, data, "heads").values,
        "mechscope AtP heads_by_pos": lambda: attribution_patching(model, data, "heads_by_pos").values,
        "hf forward+backward": lambda: _forward_backward(model.hf_model, corrupted, ans, wrong),
    }
    if peers:
        from transformer_lens import patching

        corr_t = torch.tensor([corrupted])

        def metric(logits: torch.Tensor) -> torch.Tensor:
            return logits[0, -1, ans] - logits[0, -1, wrong]

        for name, peer in peers.items():
            with torch.no_grad():
                _, cache = peer.run_with_cache(torch.tensor([clean]))
            out[f"{name} resid_pre"] = partial(patching.get_act_patch_resid_pre, peer, corr_t, cache, metric)
            out[f"{name} heads"] = partial(
                patching.get_act_patch_attn_head_out_all_pos, peer, corr_t, cache, metric
            )
    return out


def _forward_backward(hf: Any, corrupted: list[int], ans: int, wrong: int) -> torch.Tensor:
    params = [p for p in hf.parameters() if p.requires_grad]
    logits = hf(input_ids=torch.tensor([corrupted])).logits
    metric = logits[0, -1, ans] - logits[0, -1, wrong]
    metric.backward()
    for p in params:
        p.grad = None
    return metric.detach()


def run(args: argparse.Namespace) -> dict[str, Any]:
    reps = 1 if args.quick else args.reps
    model, peers = build()
    report: dict[str, Any] = {}
    for name, ids in tokens().items():
        calls = variants(model, peers, ids)
        if name != "wang":  # the second prompt only shows mechscope's scaling
            calls = {k: v for k, v in calls.items() if k in ("mechscope resid_pre", "mechscope heads")}
        times: dict[str, list[float]] = {k: [] for k in calls}
        results: dict[str, Any] = {}
        for key, fn in calls.items():  # warm-up (first-call allocations, lazy imports), not timed
            with (
                torch.no_grad() if "forward+backward" not in key and "AtP" not in key else torch.enable_grad()
            ):
                fn()
        for _ in range(reps):
            for key, fn in calls.items():
                with (
                    torch.no_grad()
                    if "forward+backward" not in key and "AtP" not in key
                    else torch.enable_grad()
                ):
                    seconds, results[key] = timed(fn)
                times[key].append(seconds)
                print(f"  [{name}] {key}: {seconds:.2f} s", flush=True)
        report[name] = summarize(times, results)
    return report


def summarize(times: dict[str, list[float]], results: dict[str, Any]) -> dict[str, Any]:
    med = {k: statistics.median(v) for k, v in times.items()}
    out: dict[str, Any] = {"median_seconds": med, "all_seconds": times}
    for sweep_name, target in TARGETS.items():
        ms = f"mechscope {sweep_name}"
        for peer in ("TL HookedTransformer", "TL TransformerBridge"):
            key = f"{peer} {sweep_name}"
            if key in med:
                diff = float((results[key].cpu() - results[ms].cpu()).abs().max())
                out[f"{sweep_name} vs {peer}"] = {
                    "speedup": med[key] / med[ms],
                    "target": target,
                    "met": med[key] / med[ms] >= target and diff <= TOLERANCE,
                    "max_abs_diff": diff,
                }
    if "mechscope AtP heads_by_pos" in med:
        ratio = med["mechscope AtP heads_by_pos"] / med["hf forward+backward"]
        out["atp"] = {"ratio_to_forward_backward": ratio, "target": ATP_TARGET, "met": ratio <= ATP_TARGET}
    return out


def metadata(args: argparse.Namespace) -> dict[str, Any]:
    import transformers

    versions = {
        "mechscope": mechscope.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        from importlib.metadata import version

        versions["transformer-lens"] = version("transformer-lens")
    except Exception:
        versions["transformer-lens"] = None
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/bench_patching.py" + (" --quick" if args.quick else f" --reps {args.reps}"),
        "threads": torch.get_num_threads(),
        "cpu": cpu,
        "platform": platform.platform(),
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    report = {"meta": metadata(args), "results": run(args)}
    print(json.dumps(report["results"], indent=2, default=float))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=float) + "\n")
    os.replace(tmp, args.out)
    wang = report["results"]["wang"]
    failed = [k for k, v in wang.items() if isinstance(v, dict) and "met" in v and not v["met"]]
    print("targets met" if not failed else f"targets NOT met: {failed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
