"""Benchmark: one full TopK SAE training step on CPU (mechscope vs SAELens vs dense PyTorch).

Setup (the issue's): d_in = 768, d_sae = 12,288, k = 32, batch 4,096 tokens, fp32, CPU,
``torch.set_num_threads(2)``. A full step is forward, AuxK, backward, optimiser step,
decoder normalisation and the dead-latent bookkeeping. Every candidate sees the same
batches and the same fixed dead mask; two scenarios, 1% and 10% of the latents dead
(``--dead-fractions``), so AuxK runs (with ``k_aux = min(d_in/2, n_dead)``).

Candidates, timed in interleaved rounds (the order rotates each round), medians reported:

* ``mechscope``: ``make_dictionary(topk)`` and the trainer's protocol (``training_forward``,
  ``backward``, ``before_optimizer_step``, fused Adam, ``zero_grad``, ``after_step``, dead
  counters);
* ``saelens``: SAELens's ``TopKTrainingSAE`` with its defaults (AuxK coefficient 1,
  ``rescale_acts_by_decoder_norm``) driven exactly as ``SAETrainer._train_step`` does it
  (firing statistics, backward, ``clip_grad_norm_(1.0)``, its Adam, ``zero_grad``);
  needs ``bench/.venv-saelens`` (``bench/setup_saelens.sh``), skipped elsewhere;
* ``dense``: the same algorithm as mechscope in plain dense PyTorch autograd (dense codes,
  dense AuxK, ``torch.optim.Adam`` defaults);
* ``matmul``: the encoder matmul ``[4096, 768] @ [768, 12288]`` alone, the floor.

Run (inside the SAELens venv, with mechscope installed there with ``--no-deps -e .``)::

    bench/setup_saelens.sh
    bench/.venv-saelens/bin/python bench/bench_sae_step.py --reps 5

``--profile`` prints a breakdown of the mechscope step instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mechscope.dictionary import DictionaryConfig, make_dictionary

D_IN, D_SAE, K, BATCH = 768, 12288, 32, 4096
LR = 1e-4


def _batches(n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # activation-like data: a shared offset plus anisotropic noise
    offset = torch.randn(D_IN, generator=g)
    scale = torch.rand(D_IN, generator=g) + 0.5
    return [offset + scale * torch.randn(BATCH, D_IN, generator=g) for _ in range(n)]


def _dead_mask(fraction: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    mask = torch.zeros(D_SAE, dtype=torch.bool)
    mask[torch.randperm(D_SAE, generator=g)[: round(fraction * D_SAE)]] = True
    return mask


def setup_mechscope(batches: list[torch.Tensor], dead: torch.Tensor) -> Callable[[int], float]:
    torch.manual_seed(0)
    d = make_dictionary(DictionaryConfig("topk", d_in=D_IN, d_sae=D_SAE, k=K))
    opt = torch.optim.Adam([p for p in d.parameters() if p.requires_grad], lr=LR, fused=True)
    since = torch.zeros(D_SAE, dtype=torch.int64)
    since[dead] = 10**9  # the fixed dead set stays dead unless it fires

    def step(i: int) -> float:
        nonlocal since
        x = batches[i % len(batches)]
        out = d.training_forward(x, x, dead_mask=dead)
        out.loss.backward()
        d.before_optimizer_step()
        opt.step()
        opt.zero_grad(set_to_none=True)
        d.after_step()
        since = torch.where(out.fired, 0, since + BATCH)
        return float(out.loss.detach())

    return step


def setup_dense(batches: list[torch.Tensor], dead: torch.Tensor) -> Callable[[int], float]:
    """The mechscope algorithm (TopK, variance-normalised AuxK, unit decoder) in dense autograd."""
    torch.manual_seed(0)
    d = make_dictionary(DictionaryConfig("topk", d_in=D_IN, d_sae=D_SAE, k=K))
    params = [d.W_enc, d.b_enc, d.W_dec, d.b_dec]
    opt = torch.optim.Adam(params, lr=LR)
    k_aux = min(D_IN // 2, int(dead.sum()))

    def step(i: int) -> float:
        x = batches[i % len(batches)]
        h = (x - d.b_dec) @ d.W_enc + d.b_enc  # [n, d_sae]
        v, idx = h.topk(K, dim=1, sorted=False)
        f = torch.zeros_like(h).scatter(1, idx, v.relu())
        y_hat = f @ d.W_dec + d.b_dec
        loss = (x - y_hat).pow(2).sum(-1).mean()
        e = (x - y_hat).detach()
        va, ia = torch.where(dead, h, -torch.inf).topk(k_aux, dim=1, sorted=False)
        z = torch.zeros_like(h).scatter(1, ia, va.relu())
        aux = (e - z @ d.W_dec).pow(2).sum() / (e - e.mean(0)).pow(2).sum()
        loss = loss + aux / 32
        loss.backward()
        with torch.no_grad():
            g = d.W_dec.grad
            assert g is not None
            g -= (g * d.W_dec).sum(1, keepdim=True) * d.W_dec
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            d.W_dec /= d.W_dec.norm(dim=1, keepdim=True)
            _ = (f > 0).any(0)
        return float(loss.detach())

    return step


def setup_saelens(batches: list[torch.Tensor], dead: torch.Tensor) -> Callable[[int], float]:
    """SAELens's TopK training SAE, stepped as ``SAETrainer._train_step`` steps it."""
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, dtype="float32", device="cpu"))
    opt = torch.optim.Adam(sae.parameters(), lr=LR, betas=(0.9, 0.999))  # as SAETrainer builds it
    since = torch.zeros(D_SAE)
    act_freq = torch.zeros(D_SAE)

    def step(i: int) -> float:
        nonlocal since
        x = batches[i % len(batches)]
        sae.train()
        out = sae.training_forward_pass(
            step_input=TrainStepInput(
                sae_in=x, dead_neuron_mask=dead, coefficients={}, n_training_steps=i, is_logging_step=False
            )
        )
        with torch.no_grad():  # SAETrainer's firing statistics
            firing = out.feature_acts.bool().float()
            did_fire = firing.sum(-2).bool()
            since += 1
            since[did_fire] = 0
            act_freq.add_(firing.sum(0))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return float(out.loss.detach())

    return step


def setup_matmul(batches: list[torch.Tensor], dead: torch.Tensor) -> Callable[[int], float]:
    W = torch.randn(D_IN, D_SAE) / D_IN**0.5

    def step(i: int) -> float:
        return float((batches[i % len(batches)] @ W)[0, 0])

    return step


SETUPS = {
    "mechscope": setup_mechscope,
    "saelens": setup_saelens,
    "dense": setup_dense,
    "matmul": setup_matmul,
}


def _available(name: str) -> bool:
    if name != "saelens":
        return True
    try:
        import sae_lens  # noqa: F401
    except ImportError:
        return False
    return True


def run_scenario(names: list[str], reps: int, warmup: int, dead_fraction: float) -> dict:
    """Interleaved timing of the candidates on one dead-latent fraction."""
    batches = _batches(2, seed=0)
    dead = _dead_mask(dead_fraction, seed=0)
    steps = {n: SETUPS[n](batches, dead) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    losses: dict[str, list[float]] = {n: [] for n in names}
    for n in names:
        for i in range(warmup):
            steps[n](i)
    for r in range(reps):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            loss = steps[n](warmup + r)
            times[n].append(time.perf_counter() - t0)
            losses[n].append(loss)
        print(
            f"dead {dead_fraction:.0%} round {r + 1}/{reps}: "
            + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in names),
            flush=True,
        )
    del steps
    med = {n: statistics.median(times[n]) for n in names}
    ratios = {}
    if "mechscope" in med and "saelens" in med:
        ratios["mechscope_vs_saelens_tokens_per_s"] = med["saelens"] / med["mechscope"]
    if "mechscope" in med and "dense" in med:
        ratios["mechscope_vs_dense_tokens_per_s"] = med["dense"] / med["mechscope"]
    if "mechscope" in med and "matmul" in med:
        ratios["mechscope_step_over_encoder_matmul"] = med["mechscope"] / med["matmul"]
    return {
        "dead_fraction": dead_fraction,
        "n_dead": int(dead.sum()),
        "k_aux": min(D_IN // 2, int(dead.sum())),
        "seconds": times,
        "median_seconds": med,
        "tokens_per_second": {n: BATCH / med[n] for n in names},
        "losses": losses,
        "ratios": ratios,
    }


def run(names: list[str], reps: int, warmup: int, dead_fractions: list[float]) -> dict:
    torch.set_num_threads(2)
    load_before = os.getloadavg()
    scenarios = {f"dead_{f:g}": run_scenario(names, reps, warmup, f) for f in dead_fractions}
    return {
        "setup": {
            "d_in": D_IN,
            "d_sae": D_SAE,
            "k": K,
            "batch_tokens": BATCH,
            "dtype": "float32",
            "threads": torch.get_num_threads(),
            "reps": reps,
            "warmup": warmup,
            "lr": LR,
        },
        "environment": {**_environment(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "scenarios": scenarios,
    }


def _environment() -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()}
    try:
        with open("/proc/cpuinfo") as fh:
            env["cpu"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    try:
        import sae_lens

        env["sae_lens"] = sae_lens.__version__
    except ImportError:
        env["sae_lens"] = None
    return env


def profile(reps: int, dead_fraction: float) -> None:
    """Time the pieces of the mechscope step (forward, backward, optimiser, decoder upkeep)."""
    torch.set_num_threads(2)
    batches = _batches(2, seed=0)
    dead = _dead_mask(dead_fraction, seed=0)
    torch.manual_seed(0)
    d = make_dictionary(DictionaryConfig("topk", d_in=D_IN, d_sae=D_SAE, k=K))
    opt = torch.optim.Adam([p for p in d.parameters() if p.requires_grad], lr=LR, fused=True)
    parts: dict[str, list[float]] = {}

    def tick(name: str, t0: float) -> float:
        t1 = time.perf_counter()
        parts.setdefault(name, []).append(t1 - t0)
        return t1

    for i in range(reps + 1):
        x = batches[i % 2]
        t = time.perf_counter()
        out = d.training_forward(x, x, dead_mask=dead)
        t = tick("training_forward", t)
        out.loss.backward()
        t = tick("backward", t)
        d.before_optimizer_step()
        t = tick("before_optimizer_step", t)
        opt.step()
        t = tick("adam", t)
        opt.zero_grad(set_to_none=True)
        d.after_step()
        tick("zero_grad+after_step", t)
    print(f"dead fraction {dead_fraction}")
    for name, ts in parts.items():
        print(f"  {name:24s} {1000 * statistics.median(ts[1:]):8.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--dead-fractions", type=float, nargs="+", default=[0.01, 0.1])
    ap.add_argument("--only", nargs="*", default=list(SETUPS), help="subset of candidates")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sae_step.json")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    if args.profile:
        for f in args.dead_fractions:
            profile(args.reps, f)
        return
    names = [n for n in args.only if _available(n)]
    result = run(names, args.reps, args.warmup, args.dead_fractions)
    for key, sc in result["scenarios"].items():
        print(key, json.dumps({k: sc[k] for k in ("median_seconds", "ratios")}, indent=2))
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
