"""Harvesting throughput on SmolLM2-135M: activations to disk against plain forward passes.

What is measured
----------------
The real SmolLM2-135M (``mechscope.load_model("smollm2-135m")``, fp32, CPU), fed the stdlib
corpus packed into ``--ctx-len`` 128-token contexts (BOS policy ``bos``), ``--batch`` 32
contexts per forward pass, ``--tokens`` 4,096 tokens in all (about 2 minutes on 2 cores). The hook is
``blocks.15.hook_resid_pre``: the residual stream after exactly 15 of the 30 blocks, the
middle of the network (the same tensor as ``blocks.14.hook_resid_post``; resid_pre is the
name SAELens's residual SAEs use). Variants, over the same tokens:

* ``plain_stopped``: HF's own ``LlamaModel`` forward over the first 15 blocks only (its
  ``config.num_hidden_layers`` set to 15 for the call, so its loop runs ``layers[:15]``; the
  final norm is the only extra work). This is the floor: the least work that yields the
  activations. Tokens are pre-packed; no masking, nothing written.
* ``plain_full``: the full HF causal-LM forward (30 blocks and the 49,152-way unembedding),
  what a harvest without early stopping would pay.
* ``hooked_stopped``: ``run_with_cache(names=[hook], stop_at_layer=15, return_logits=False)``
  on the pre-packed tokens, nothing written (separates hook cost from storage cost).
* ``harvest``: ``mechscope.dictionary.store.harvest`` end to end into a fresh store:
  tokenising and packing the documents, the stopped forward, BOS masking, shards of 16,384
  rows serialised to safetensors, sha256, atomic writes, manifest.

Each round runs every variant once in a freshly shuffled order (interleaved, so drift in
machine load hits all alike) after a warm-up, for ``--rounds`` 5 rounds. A variant's time is
its best (minimum) over the rounds: on a shared machine other processes only ever add
time, so the minimum is the closest to the undisturbed cost. Medians and process CPU times
are recorded too, as cross-checks. Throughput is input tokens per second (for ``harvest`` too: masked BOS tokens
count as processed).

Peak memory is the resident-set high-water mark, ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
(kilobytes on Linux), of fresh child processes that load the model and harvest
1, 4 and 8 times ``--tokens`` tokens (shards of 4,096 rows); it includes the Python
interpreter, torch and the model, and in practice it is set by loading the model. So the
child also resets the kernel's peak counter after loading (``/proc/self/clear_refs``, Linux)
and reads ``VmHWM`` after harvesting: the peak of the harvest phase alone. Peaks that do not grow with the token count show that memory is
bounded by the shard size and the forward batch (they wobble by about 100 MB with the C
allocator's fragmentation, in either direction).

Run: ``.venv/bin/python bench/bench_harvest.py [--tokens N] [--rounds R]``; results go to
stdout and ``bench/results/harvest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import mechscope
from mechscope.data import TokenStream, stdlib_documents
from mechscope.dictionary.store import harvest

HOOK = "blocks.15.hook_resid_pre"
STOP = 15


def _vm_hwm_mb() -> float | None:
    """``VmHWM`` (peak RSS since the last reset) from ``/proc/self/status``, in MB; None if unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_child(n_tokens: int, ctx_len: int, batch: int) -> None:
    """Child mode: load, harvest ``n_tokens``, print RSS high-water marks as JSON."""
    model = mechscope.load_model("smollm2-135m", device="cpu")
    after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:  # reset the kernel's peak-RSS counter (VmHWM) so the harvest's own peak can be read
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    stream = TokenStream(stdlib_documents(), model, ctx_len=ctx_len)
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        store = harvest(model, stream, [HOOK], d, n_tokens=n_tokens, batch_size=batch, shard_tokens=4096,
                        progress=False)  # fmt: skip
        rows = store.n_tokens
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n_tokens": n_tokens, "rows": rows, "rss_after_load_mb": after_load / 1024,
                      "rss_peak_mb": peak / 1024,
                      "harvest_phase_peak_mb": _vm_hwm_mb() if reset else None}))  # fmt: skip


def _measure_rss(n_tokens: int, ctx_len: int, batch: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(n_tokens), "--ctx-len", str(ctx_len), "--batch", str(batch)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _variants(model, stream, tokens: torch.Tensor, batch: int, n_tokens: int) -> dict:
    hf = model.hf_model
    batches = tokens.split(batch)

    def plain_stopped() -> None:
        full = hf.config.num_hidden_layers
        hf.config.num_hidden_layers = STOP
        try:
            for b in batches:
                hf.model(input_ids=b, use_cache=False)
        finally:
            hf.config.num_hidden_layers = full

    def plain_full() -> None:
        for b in batches:
            hf(input_ids=b, use_cache=False)

    def hooked_stopped() -> None:
        for b in batches:
            model.run_with_cache(b, names=[HOOK], stop_at_layer=STOP, return_logits=False)

    def run_harvest() -> None:
        with tempfile.TemporaryDirectory() as d:
            harvest(model, stream, [HOOK], d, n_tokens=n_tokens, batch_size=batch, shard_tokens=16384,
                    progress=False)  # fmt: skip

    return {"plain_stopped": plain_stopped, "plain_full": plain_full, "hooked_stopped": hooked_stopped,
            "harvest": run_harvest}  # fmt: skip


def _check(model, stream, tokens: torch.Tensor, batch: int) -> None:
    """The harvested rows equal HF's own hidden state after 15 blocks (BOS rows dropped)."""
    with tempfile.TemporaryDirectory() as d:
        n = batch * tokens.shape[1]
        store = harvest(model, stream, [HOOK], d, n_tokens=n, batch_size=batch, progress=False)
        got = store.tensors()[HOOK]
    out = model.hf_model(input_ids=tokens[:batch], output_hidden_states=True, use_cache=False)
    ref = out.hidden_states[STOP][:, 1:].reshape(-1, got.shape[1])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--ctx-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "harvest.json")
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    if args.rss_child is not None:
        _rss_child(args.rss_child, args.ctx_len, args.batch)
        return
    load_before = os.getloadavg()
    n_tokens = args.tokens // args.ctx_len * args.ctx_len
    # Before this process loads the model: Linux carries the RSS high-water mark of the
    # forked parent image into the child across exec, so a big parent would mask the child's.
    rss = [_measure_rss(n, args.ctx_len, args.batch) for n in (n_tokens, 4 * n_tokens, 8 * n_tokens)]
    model = mechscope.load_model("smollm2-135m", device="cpu")
    stream = TokenStream(stdlib_documents(), model, ctx_len=args.ctx_len)
    n_ctx = args.tokens // args.ctx_len
    n_tokens = n_ctx * args.ctx_len
    tokens = stream.take(n_ctx)
    variants = _variants(model, stream, tokens, args.batch, n_tokens)
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    with torch.no_grad():
        _check(model, stream, tokens, args.batch)
        for name in variants:  # warm-up on a short prefix
            if name != "harvest":
                _variants(model, stream, tokens[: args.batch], args.batch, args.batch * args.ctx_len)[name]()
        rng = random.Random(0)
        for r in range(args.rounds):
            order = list(variants)
            rng.shuffle(order)
            for name in order:
                t0, c0 = time.perf_counter(), time.process_time()
                variants[name]()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
            print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: n_tokens / v for k, v in best.items()}
    cpu_best = {k: min(v) for k, v in cpu.items()}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "setup": {
            "model": "smollm2-135m",
            "hook": HOOK,
            "blocks_run": STOP,
            "ctx_len": args.ctx_len,
            "batch_contexts": args.batch,
            "tokens": n_tokens,
            "rounds": args.rounds,
            "dtype": "float32",
            "device": "cpu",
            "corpus": "stdlib",
            "mask": "bos",
        },
        "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()},
        "seconds": times,
        "best_seconds": best,
        "median_seconds": med,
        "tokens_per_s_median": {k: n_tokens / v for k, v in med.items()},
        "tokens_per_s": tps,
        "cpu_seconds": cpu,
        "best_cpu_seconds": cpu_best,
        "ratio_harvest_to_plain_stopped_cpu_time": cpu_best["plain_stopped"] / cpu_best["harvest"],
        "ratio_harvest_to_plain_stopped": tps["harvest"] / tps["plain_stopped"],
        "ratio_harvest_to_plain_full": tps["harvest"] / tps["plain_full"],
        "ratio_hooked_to_plain_stopped": tps["hooked_stopped"] / tps["plain_stopped"],
        "peak_rss": rss,
    }
    for k, v in tps.items():
        print(f"{k:>15}: {v:8.0f} tok/s  (best {best[k]:.2f} s, median {med[k]:.2f} s)")
    print(f"harvest / plain stopped forward: {result['ratio_harvest_to_plain_stopped']:.3f}x")
    print(f"harvest / plain full forward:    {result['ratio_harvest_to_plain_full']:.3f}x")
    for r in rss:
        print(
            f"peak RSS harvesting {r['n_tokens']} tokens: {r['rss_peak_mb']:.0f} MB (after load {r['rss_after_load_mb']:.0f} MB)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
