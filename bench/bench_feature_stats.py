"""Feature statistics over 200k tokens of SmolLM2-135M for a 4,608-latent SAE, against harvesting alone.

What is measured
----------------
The real SmolLM2-135M (fp32, CPU), the offline stdlib corpus packed into 128-token contexts (BOS
first), a TopK SAE with 4,608 latents and k = 32 at ``blocks.15.hook_resid_pre`` (the middle of
30 blocks). The dictionary is ``--sae`` (e.g. the demo's, ``runs/demo-*/sae/dictionaries/topk``);
without it a seeded random TopK of the same shape is used (same k, so the same number of active
latents per token: the cost is the same, the examples are not meaningful).

1. **Harvest:** the forward pass stopped at the hook for every batch of 8 contexts, the
   activations copied out (what ``mechscope harvest`` does before writing shards).
2. **Statistics pass:** :func:`mechscope.features.feature_stats` over the same batches
   (forward to the hook, encode, density, histogram, top-k, reservoirs with per-token windows,
   random windows, co-occurrence), then writing the Parquet tables (timed separately).

Each runs in its own subprocess so its peak resident memory (``ru_maxrss``) is its own; the
tokenisation is done before the clock starts. Target: statistics pass <= 1.3x the harvest.

No peer runs side by side: SAEDashboard 0.8 (the maintained sae_vis) needs transformer-lens < 3
and transformers < 4.57, which cannot share an environment with mechscope's pins; its runner
also computes features in chosen batches rather than all latents in one pass.

Run: ``.venv/bin/python bench/bench_feature_stats.py [--tokens 200000] [--sae DIR]``; results go
to stdout and ``bench/results/feature_stats.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HOOK = "blocks.15.hook_resid_pre"
CTX, BATCH = 128, 8


def _dictionary(sae: str | None):  # type: ignore[no-untyped-def]
    import torch

    from mechscope.dictionary import DictionaryConfig
    from mechscope.dictionary.io import load_dictionary
    from mechscope.dictionary.registry import make_dictionary

    if sae:
        return load_dictionary(sae)
    torch.manual_seed(0)
    return make_dictionary(DictionaryConfig("topk", d_in=576, d_sae=4608, k=32, hook_name=HOOK)).eval()


def child(mode: str, tokens: int, sae: str | None, out: str) -> None:
    """One measured pass; prints a JSON line."""
    import torch

    from mechscope import load_model
    from mechscope.features import StatsConfig, feature_stats
    from mechscope.pipeline.features_job import corpus_stream

    torch.set_grad_enabled(False)
    model = load_model("smollm2-135m", device="cpu")
    dic = _dictionary(sae)
    n_ctx = -(-tokens // CTX)
    batches = [b for _, b in corpus_stream(model, "stdlib", CTX).batches(BATCH, 0, n_ctx)]
    t0 = time.perf_counter()
    save_s, pass_rss = 0.0, 0.0
    if mode == "harvest":
        kept = []
        for b in batches:
            _, cache = model.run_with_cache(b, names=[HOOK], return_logits=False)
            kept.append(cache[HOOK].reshape(-1, cache[HOOK].shape[-1]).to(torch.float16))  # shard dtype
        seconds = time.perf_counter() - t0
        pass_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    else:
        stats = feature_stats(model, dic, batches, StatsConfig(skip_first=1))
        seconds = time.perf_counter() - t0
        pass_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t1 = time.perf_counter()
        stats.save(out, model)
        save_s = time.perf_counter() - t1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    print(json.dumps({"mode": mode, "tokens": n_ctx * CTX, "seconds": seconds, "save_seconds": save_s,
                      "peak_rss_mib": rss, "peak_rss_pass_mib": pass_rss}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument(
        "--sae", default=None, help="dictionary directory (default: a random TopK of the same shape)"
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="/tmp/mechscope-bench-feature-stats")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.tokens, args.sae, args.out)
        return
    rows = {}
    for mode in ("harvest", "stats"):
        cmd = [sys.executable, __file__, "--child", mode, "--tokens", str(args.tokens), "--out", args.out]
        cmd += ["--sae", args.sae] if args.sae else []
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[mode] = json.loads(res.stdout.strip().splitlines()[-1])
        r = rows[mode]
        print(f"{mode:>8}: {r['tokens']} tokens in {r['seconds']:.1f} s ({r['tokens'] / r['seconds']:.0f} tok/s), "
              f"peak RSS {r['peak_rss_pass_mib']:.0f} MiB"
              + (f", tables written in {r['save_seconds']:.1f} s (peak RSS then {r['peak_rss_mib']:.0f} MiB)"
                 if mode == "stats" else ""))  # fmt: skip
    ratio = rows["stats"]["seconds"] / rows["harvest"]["seconds"]
    with_save = (rows["stats"]["seconds"] + rows["stats"]["save_seconds"]) / rows["harvest"]["seconds"]
    print(
        f"statistics pass / harvest: {ratio:.2f}x (with writing the tables: {with_save:.2f}x; target <= 1.3x)"
    )
    result = {"rows": rows, "ratio": ratio, "ratio_with_save": with_save, "hook": HOOK, "d_sae": 4608,
              "sae": args.sae or "random TopK k=32", "machine": platform.platform(),
              "command": " ".join(sys.argv)}  # fmt: skip
    out = Path(__file__).parent / "results" / "feature_stats.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
