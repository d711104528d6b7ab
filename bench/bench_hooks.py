"""Hook overhead of mechscope, TransformerLens and nnsight against a plain Hugging Face forward.

What is measured
----------------
One GPT-2-small-shaped model (``GPT2Config()`` defaults: 12 layers, d_model 768, 12 heads,
vocab 50257, 1024 positions), randomly initialised under ``torch.manual_seed(0)``, fp32, eval
mode, on the CPU, fed 8 x 128 random tokens (``--batch``/``--seq`` change that, and then the
output file's name). Nothing is downloaded. Variants:

* ``hf``: ``hf_model(input_ids=toks)`` -- the baseline every ratio is relative to -- and, for
  reference, ``hf_model(input_ids=toks, use_cache=False)`` (what mechscope itself calls);
* mechscope: a plain call, ``run_with_cache`` of the 12 ``hook_resid_pre``,
  ``run_with_cache()`` of every default hook (``names=None``: all but scores/pattern/result)
  and, to compare like with like, of every hook but ``hook_result`` (the set TransformerLens
  records: its ``run_with_cache()`` always includes attention scores and patterns);
* TransformerLens 3.9 (the last release with both model classes), both ways, each timed on
  its forward, ``run_with_cache`` with a ``names_filter`` of the 12 ``hook_resid_pre`` and
  ``run_with_cache()`` of everything (which always includes attention scores and patterns):

  - ``HookedTransformer`` built from the same HF weights offline, as ``bench_patching.py``
    builds it: ``HookedTransformerConfig(n_layers=12, d_model=768, n_heads=12, d_head=64,
    d_mlp=3072, n_ctx=1024, d_vocab=50257, act_fn="gelu_new", normalization_type="LN")``, then
    ``load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=False,
    center_writing_weights=False, center_unembed=False)``. It is deprecated in 3.9 (the
    ``DeprecationWarning`` is suppressed) and gone in 4.x; its attention is always explicit;
  - a ``TransformerBridge`` built with ``build_bridge_from_module`` around a copy of the same
    HF model (default bridge mode, raw HF weights; the class TransformerLens 4.x keeps);

* nnsight 0.8.1: ``NNsight`` around a copy of the same HF model; a trace saving the inputs of
  the 12 blocks (and the logits) and a trace that saves nothing.

The bridge and nnsight wrap *copies* of the model because both instrument the module tree
they are given, and the baseline must stay an uninstrumented HF model (``HookedTransformer``
has its own parameters, loaded from the state dict). A missing peer is reported and skipped.

How
---
Before timing, every variant is checked against HF: mechscope's logits must be bit-identical
(``torch.equal``) and its ``hook_resid_pre`` cache must equal ``output_hidden_states`` 0..11;
nnsight's saved block inputs and logits must equal the same tensors. Neither TransformerLens
class is bit-identical to HF (max |diff| of a few 1e-6), and mechscope computes attention step
by step when scores/patterns are requested, so those are compared with a tolerance (``ATOL``):
the logits of every TransformerLens call and its 12 cached ``hook_resid_pre``.
Then, after a warm-up round (on top of the 1-3 calls per variant the checks already made),
each round runs every variant once in a freshly shuffled order (interleaved, so drift in
machine load hits all variants alike), for ``--reps`` rounds (default 12: about 6 minutes on
2 cores). A variant's time is its median over rounds; its ratio is that median over the HF
median. Process CPU time and minor page faults are recorded too, as cross-checks on a shared
machine. Everything runs under ``torch.no_grad()``, with torch's intra-op threads pinned to
the CPUs this process may use. Results go to stdout and to ``bench/results/hooks.json``.

Run: ``make bench`` or ``.venv/bin/python bench/bench_hooks.py [--reps N] [--quick]``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import json
import os
import platform
import random
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

N_LAYERS = 12
BATCH, SEQ = 8, 128
SEED = 0
RESULTS = Path(__file__).resolve().parent / "results"
RESID_PRE = tuple(f"blocks.{i}.hook_resid_pre" for i in range(N_LAYERS))
HF = "hf: plain forward"
HF_NO_KV = "hf: use_cache=False"
MS_PLAIN = "mechscope: no hooks"
MS_RESID = "mechscope: cache 12 resid_pre"
MS_ALL = "mechscope: cache all (no patterns)"
MS_LIKE_TL = "mechscope: cache all + scores/pattern"
TARGETS = {MS_PLAIN: 1.02, MS_RESID: 1.05, MS_ALL: 1.5}  # set for the default 8 x 128 inputs only
ATOL = 1e-4  # where attention is recomputed explicitly: allow fp32 reordering noise only


@dataclass(frozen=True)
class Variant:
    """One timed call."""

    name: str
    group: str
    fn: Callable[[], Any]


@dataclass
class Peer:
    """A library under test: how it was set up, what its checks found, what it times."""

    name: str
    version: str | None = None
    status: str = "ok"
    how: str = ""
    checks: dict[str, Any] = field(default_factory=dict)
    variants: list[Variant] = field(default_factory=list)


# ---------------------------------------------------------------- setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=None, help="interleaved rounds (default 12; 3 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up rounds, every variant once (default 1)")
    p.add_argument("--quick", action="store_true", help="smoke run: few rounds, results to hooks.quick.json")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: CPUs this process may use)"
    )
    p.add_argument("--out", type=Path, default=None, help="JSON output (default bench/results/hooks.json)")
    p.add_argument("--no-peers", action="store_true", help="skip TransformerLens and nnsight")
    p.add_argument("--batch", type=int, default=BATCH, help=f"batch size (default {BATCH})")
    p.add_argument("--seq", type=int, default=SEQ, help=f"tokens per row (default {SEQ})")
    args = p.parse_args(argv)
    args.reps = args.reps or (3 if args.quick else 12)
    args.warmup = args.warmup if args.warmup is not None else 1
    shape = "" if (args.batch, args.seq) == (BATCH, SEQ) else f".{args.batch}x{args.seq}"
    args.out = args.out or RESULTS / f"hooks{shape}{'.quick' if args.quick else ''}.json"
    return args


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_hf(batch: int, seq: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The GPT-2-small-shaped HF model (random init, eval, fp32) and ``batch`` x ``seq`` tokens."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(SEED)
    config = GPT2Config()
    model = GPT2LMHeadModel(config).eval().to(torch.float32)
    toks = torch.randint(0, config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(SEED))
    return model, toks


def hf_reference(hf: torch.nn.Module, toks: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """HF's logits and the residual stream entering each block (hidden_states 0..11)."""
    out = hf(input_ids=toks, output_hidden_states=True)
    return out.logits, list(out.hidden_states[:N_LAYERS])


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


# ---------------------------------------------------------------- libraries


def not_result(name: str) -> bool:
    """Every hook but ``attn.hook_result``: what TransformerLens's ``run_with_cache()`` records."""
    return not name.endswith("attn.hook_result")


def mechscope_checks(
    model: Any, toks: torch.Tensor, ref: tuple[torch.Tensor, list[torch.Tensor]]
) -> dict[str, Any]:
    """Bit-identical logits for every timed call; the resid_pre cache equals HF's hidden states."""
    logits, hidden = ref
    logits_r, cache_r = model.run_with_cache(toks, names=list(RESID_PRE))
    logits_a, cache_a = model.run_with_cache(toks)
    logits_t, cache_t = model.run_with_cache(toks, names=not_result)
    same_resid = lambda cache: all(torch.equal(cache[n], h) for n, h in zip(RESID_PRE, hidden))  # noqa: E731
    return {
        "logits_equal_hf": torch.equal(model(toks), logits),
        "cache_resid_pre_logits_equal_hf": torch.equal(logits_r, logits),
        "cache_all_logits_equal_hf": torch.equal(logits_a, logits),
        # Scores/patterns need attention computed step by step instead of the SDPA kernel, so
        # these logits match HF to fp32 rounding only (on-demand sites carry no bit-identity claim).
        "cache_like_tl_logits_max_abs_diff_vs_hf": max_diff(logits_t, logits),
        "cache_like_tl_logits_within_atol": max_diff(logits_t, logits) <= ATOL,
        "resid_pre_equal_hidden_states_0_11": same_resid(cache_r),
        "cache_all_resid_pre_equal_hidden_states": same_resid(cache_a),
        "cache_all_entries": len(cache_a),
        "cache_all_has_patterns": any(n.endswith(("hook_pattern", "hook_attn_scores")) for n in cache_a),
        "cache_like_tl_entries": len(cache_t),
        "hook_points": len(model.hook_names),
        "uninstalled_after_runs": all("forward" not in b.__dict__ for b in model.hf_model.transformer.h),
    }


def setup_mechscope(
    hf: torch.nn.Module, toks: torch.Tensor, ref: tuple[torch.Tensor, list[torch.Tensor]]
) -> Peer:
    """mechscope wraps the baseline model itself (it installs nothing outside a hooked call)."""
    import mechscope

    model = mechscope.wrap(hf)
    names = list(RESID_PRE)
    return Peer(
        name="mechscope",
        version=mechscope.__version__,
        how="mechscope.wrap(hf_model) on the baseline model object itself",
        checks=mechscope_checks(model, toks, ref),
        variants=[
            Variant(MS_PLAIN, "mechscope", lambda: model(toks)),
            Variant(MS_RESID, "mechscope", lambda: model.run_with_cache(toks, names=names)),
            Variant(MS_ALL, "mechscope", lambda: model.run_with_cache(toks)),
            Variant(MS_LIKE_TL, "mechscope", lambda: model.run_with_cache(toks, names=not_result)),
        ],
    )


TL_HT = "TL HookedTransformer"
TL_BRIDGE = "TL TransformerBridge"


def tl_version() -> str | None:
    """The installed TransformerLens version, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformer-lens")
    except PackageNotFoundError:
        return None


def tl_checks(
    model: Any, toks: torch.Tensor, ref: tuple[torch.Tensor, list[torch.Tensor]]
) -> tuple[dict[str, Any], list[str]]:
    """Either TransformerLens class against HF, within ``ATOL``; also returns the resid_pre names."""
    logits, hidden = ref
    names = list(RESID_PRE)
    _, cache_r = model.run_with_cache(toks, names_filter=names)
    logits_a, cache_a = model.run_with_cache(toks)
    resid_diff = max(max_diff(cache_r[n], h) for n, h in zip(RESID_PRE, hidden))
    logits_diff = max(max_diff(model(toks), logits), max_diff(logits_a, logits))
    checks = {
        "logits_max_abs_diff_vs_hf": logits_diff,
        "resid_pre_max_abs_diff_vs_hidden_states": resid_diff,
        "within_atol": max(resid_diff, logits_diff) <= ATOL,
        "atol": ATOL,
        "cache_resid_pre_entries": len(cache_r),
        "cache_all_entries": len(cache_a),
        "cache_all_has_patterns": any(n.endswith("hook_pattern") for n in cache_a),
    }
    return checks, names


def tl_variants(label: str, group: str, model: Any, toks: torch.Tensor, names: list[str]) -> list[Variant]:
    """The three timed calls, identical for both TransformerLens classes."""
    return [
        Variant(f"{label}: forward", group, lambda: model(toks)),
        Variant(
            f"{label}: cache 12 resid_pre", group, lambda: model.run_with_cache(toks, names_filter=names)
        ),
        Variant(f"{label}: cache all (with patterns)", group, lambda: model.run_with_cache(toks)),
    ]


def setup_tl_hooked(
    hf: torch.nn.Module, toks: torch.Tensor, ref: tuple[torch.Tensor, list[torch.Tensor]]
) -> Peer:
    """TransformerLens's ``HookedTransformer``, built from the HF state dict (offline)."""
    peer = Peer(name=TL_HT)
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
        from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
    except ImportError as e:
        peer.status = f"not available ({e})"
        return peer
    peer.version = tl_version()
    peer.how = (
        "HookedTransformer(HookedTransformerConfig(n_layers=12, d_model=768, n_heads=12, d_head=64, "
        "d_mlp=3072, n_ctx=1024, d_vocab=50257, act_fn='gelu_new', normalization_type='LN')), then "
        "load_and_process_state_dict(convert_gpt2_weights(hf_model, cfg), fold_ln=False, "
        "center_writing_weights=False, center_unembed=False): the same weights, unprocessed, no download "
        "(as bench_patching.py builds it). Deprecated in TransformerLens 3.9 (its DeprecationWarning is "
        "suppressed); removed in 4.x. Its attention is always explicit (scores and pattern computed)."
    )
    cfg = HookedTransformerConfig(
        n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, n_ctx=1024, d_vocab=50257,
        act_fn="gelu_new", normalization_type="LN",
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ht = HookedTransformer(cfg)
    ht.load_and_process_state_dict(
        convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False, center_unembed=False
    )
    ht.eval()
    peer.checks, names = tl_checks(ht, toks, ref)
    peer.variants = tl_variants(TL_HT, "transformer_lens_hooked", ht, toks, names)
    return peer


def setup_tl_bridge(
    hf: torch.nn.Module, toks: torch.Tensor, ref: tuple[torch.Tensor, list[torch.Tensor]]
) -> Peer:
    """TransformerLens's ``TransformerBridge`` around a copy of the HF model (offline)."""
    peer = Peer(name=TL_BRIDGE)
    try:
        from transformer_lens.model_bridge.sources import build_bridge_from_module
    except ImportError as e:
        peer.status = f"not available ({e})"
        return peer
    peer.version = tl_version()
    peer.how = (
        "transformer_lens.model_bridge.sources.build_bridge_from_module(copy.deepcopy(hf_model), "
        "'GPT2LMHeadModel', hf_config=...): the bridge over the same weights, no download "
        "(boot_transformers would fetch a tokenizer). Default bridge mode (raw HF weights, "
        "no enable_compatibility_mode weight folding). The only class TransformerLens 4.x keeps."
    )
    twin = copy.deepcopy(hf)
    bridge = build_bridge_from_module(twin, "GPT2LMHeadModel", hf_config=twin.config)
    peer.checks, names = tl_checks(bridge, toks, ref)
    peer.checks["attn_implementation"] = getattr(twin.config, "_attn_implementation", None)
    peer.variants = tl_variants(TL_BRIDGE, "transformer_lens_bridge", bridge, toks, names)
    return peer


def nnsight_trace(model: Any, toks: torch.Tensor, save_blocks: bool) -> Any:
    """One nnsight trace; with ``save_blocks`` it saves the 12 block inputs and the logits."""
    import nnsight

    if not save_blocks:
        with model.trace(input_ids=toks):
            pass
        return None
    with model.trace(input_ids=toks):
        saved = nnsight.save([model.transformer.h[i].input for i in range(N_LAYERS)])
        logits = nnsight.save(model.output.logits)
    return logits, saved


def setup_nnsight(
    hf: torch.nn.Module, toks: torch.Tensor, ref: tuple[torch.Tensor, list[torch.Tensor]]
) -> Peer:
    """nnsight 0.8: ``NNsight`` around a copy of the HF model (it instruments the tree it wraps)."""
    peer = Peer(name="nnsight")
    try:
        import nnsight
    except ImportError as e:
        peer.status = f"not installed ({e})"
        return peer
    peer.version = nnsight.__version__
    peer.how = (
        "nnsight.NNsight(copy.deepcopy(hf_model)) (LanguageModel, deprecated in 0.8, cannot be built "
        "from a model object without a tokenizer); "
        "trace(input_ids=toks) saving model.transformer.h[i].input for i < 12 plus output.logits, "
        "and an empty trace"
    )
    model = nnsight.NNsight(copy.deepcopy(hf))
    logits, hidden = ref
    out_logits, saved = nnsight_trace(model, toks, save_blocks=True)
    peer.checks = {
        "logits_equal_hf": torch.equal(out_logits, logits),
        "block_inputs_equal_hidden_states_0_11": all(torch.equal(s, h) for s, h in zip(saved, hidden)),
        "saved_block_inputs": len(saved),
    }
    peer.variants = [
        Variant("nnsight: trace, no saves", "nnsight", lambda: nnsight_trace(model, toks, save_blocks=False)),
        Variant("nnsight: trace, save 12 block inputs", "nnsight", lambda: nnsight_trace(model, toks, True)),
    ]
    return peer


# ---------------------------------------------------------------- timing


Timings = dict[str, dict[str, list[float]]]
"""``{"wall" | "cpu" | "minflt": {variant: [seconds (or page faults) per round]}}``."""


def time_interleaved(variants: list[Variant], reps: int, warmup: int, seed: int = SEED) -> Timings:
    """Wall and CPU seconds and minor page faults per call; each round runs every variant once, shuffled."""
    for _ in range(warmup):
        for v in variants:
            v.fn()
    rng = random.Random(seed)
    order = list(variants)
    times: Timings = {k: {v.name: [] for v in variants} for k in ("wall", "cpu", "minflt")}
    start = time.perf_counter()
    for r in range(reps):
        rng.shuffle(order)
        for v in order:
            gc.collect()  # outside the timed region, so no variant pays for another's garbage
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            c0, t0 = time.process_time(), time.perf_counter()
            out = v.fn()
            t1, c1 = time.perf_counter(), time.process_time()
            times["minflt"][v.name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            del out
            times["wall"][v.name].append(t1 - t0)
            times["cpu"][v.name].append(c1 - c0)
        elapsed, hf_ms = time.perf_counter() - start, 1e3 * times["wall"][HF][-1]
        print(f"  round {r + 1}/{reps} done ({elapsed:.0f} s; hf {hf_ms:.0f} ms)", flush=True)
    return times


def quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def summarize(variants: list[Variant], times: Timings, targets: dict[str, float]) -> list[dict[str, Any]]:
    """Per-variant medians and ratios to the HF median (plus the median of per-round ratios)."""
    wall, cpu = times["wall"], times["cpu"]
    hf_med, hf_cpu = statistics.median(wall[HF]), statistics.median(cpu[HF])
    rows = []
    for v in variants:
        ts = wall[v.name]
        med = statistics.median(ts)
        p25, p75 = quartiles(ts)
        target = targets.get(v.name)
        rows.append(
            {
                "variant": v.name,
                "group": v.group,
                "median_ms": 1e3 * med,
                "p25_ms": 1e3 * p25,
                "p75_ms": 1e3 * p75,
                "min_ms": 1e3 * min(ts),
                "ratio_to_hf": med / hf_med,
                "paired_ratio_median": statistics.median(t / h for t, h in zip(ts, wall[HF])),
                "cpu_median_ms": 1e3 * statistics.median(cpu[v.name]),
                "cpu_ratio_to_hf": statistics.median(cpu[v.name]) / hf_cpu,
                "minor_page_faults_median": statistics.median(times["minflt"][v.name]),
                "target": target,
                "passed": None if target is None else med / hf_med <= target,
                "times_ms": [round(1e3 * t, 2) for t in ts],
                "cpu_times_ms": [round(1e3 * t, 2) for t in cpu[v.name]],
            }
        )
    return rows


# ---------------------------------------------------------------- output


def print_table(rows: list[dict[str, Any]], peers: list[Peer]) -> None:
    header = (
        f"{'variant':<48} {'median ms':>9} {'IQR ms':>11} {'x HF':>6} {'paired':>6} {'cpu x':>6} "
        f"{'target':>6}  result"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        nd = 1 if r["median_ms"] < 100 else 0  # small inputs: show tenths of a millisecond
        iqr = f"{r['p25_ms']:.{nd}f}-{r['p75_ms']:.{nd}f}"
        target = f"<={r['target']:.2f}" if r["target"] else ""
        result = "" if r["passed"] is None else ("PASS" if r["passed"] else "FAIL")
        print(
            f"{r['variant']:<48} {r['median_ms']:>9.{nd}f} {iqr:>11} {r['ratio_to_hf']:>6.3f} "
            f"{r['paired_ratio_median']:>6.3f} {r['cpu_ratio_to_hf']:>6.3f} {target:>6}  {result}"
        )
    for p in peers:
        if p.status != "ok":
            print(f"{p.name}: {p.status}")
    print(
        "x HF = variant median / HF median (the headline number); paired = median over rounds of "
        "variant/HF in that round;\ncpu x = the same ratio for process CPU time (all threads), "
        "less sensitive to other processes on the machine."
    )


def print_checks(peers: list[Peer]) -> None:
    for p in peers:
        print(f"\n{p.name}{' ' + p.version if p.version else ''}: {p.status}")
        if p.how:
            print(f"  setup: {p.how}")
        for k, v in p.checks.items():
            print(f"  {k}: {v}")


def failed_checks(peer: Peer) -> list[str]:
    """Checks that would make timing this peer meaningless (a boolean check that came out False)."""
    return [k for k, v in peer.checks.items() if v is False and k != "cache_all_has_patterns"]


def setup_peer(
    setup: Callable[..., Peer], name: str, hf: torch.nn.Module, toks: torch.Tensor, ref: Any
) -> Peer:
    """Run one peer's setup; a peer that breaks or fails its checks is reported, not timed."""
    try:
        peer = setup(hf, toks, ref)
    except Exception as e:  # a peer's own bug or API change must not sink the whole benchmark
        return Peer(name=name, status=f"failed during setup: {type(e).__name__}: {e}")
    if failed_checks(peer):
        peer.status = "checks failed, not timed: " + ", ".join(failed_checks(peer))
        peer.variants = []
    return peer


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic write: a temp file in the same directory, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def metadata(
    args: argparse.Namespace, threads: int, peers: list[Peer], load_before: tuple[float, ...]
) -> dict[str, Any]:
    import transformers

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick,
        "reps": args.reps,
        "warmup": args.warmup,
        "torch_threads": threads,
        "usable_cpus": usable_cpus(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "versions": {p.name: p.version for p in peers},
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "model": "GPT2LMHeadModel(GPT2Config()), random init seed 0, fp32, eval, cpu, attn sdpa",
        "inputs": f"{args.batch} x {args.seq} random tokens",
    }


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = args.threads or usable_cpus()
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU: {cpu_model()}, "
        f"inputs {args.batch} x {args.seq}, loadavg {load_before}"
    )
    with torch.no_grad():
        hf, toks = build_hf(args.batch, args.seq)
        ref = hf_reference(hf, toks)
        peers = [setup_mechscope(hf, toks, ref)]
        if failed_checks(peers[0]):
            print_checks(peers)
            print("\nmechscope correctness checks failed, not timing: " + ", ".join(failed_checks(peers[0])))
            return 1
        if not args.no_peers:
            peers.append(setup_peer(setup_tl_hooked, TL_HT, hf, toks, ref))
            peers.append(setup_peer(setup_tl_bridge, TL_BRIDGE, hf, toks, ref))
            peers.append(setup_peer(setup_nnsight, "nnsight", hf, toks, ref))
        print_checks(peers)
        variants = [
            Variant(HF, "hf", lambda: hf(input_ids=toks)),
            Variant(HF_NO_KV, "hf", lambda: hf(input_ids=toks, use_cache=False)),
            *(v for p in peers for v in p.variants),
        ]
        print(f"\ntiming {len(variants)} variants x {args.reps} interleaved rounds ({args.warmup} warm-up)")
        times = time_interleaved(variants, args.reps, args.warmup)
    default_shape = (args.batch, args.seq) == (BATCH, SEQ)
    rows = summarize(variants, times, TARGETS if default_shape else {})
    print_table(rows, peers)
    if not default_shape:
        print(f"(targets apply to the default {BATCH} x {SEQ} inputs only; not judged here)")
    payload = {
        "meta": metadata(args, threads, peers, load_before),
        "peers": {
            p.name: {"version": p.version, "status": p.status, "how": p.how, "checks": p.checks}
            for p in peers
        },
        "results": rows,
    }
    write_json(args.out, payload)
    print(f"\nloadavg before {load_before}, after {payload['meta']['loadavg_after']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
