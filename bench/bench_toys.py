"""Toy models: training-step speed against TransformerLens, and train/analyse times of each toy.

What is measured
----------------
1. **Training step, side by side.** One full optimiser step (forward, float64 cross-entropy,
   backward, AdamW) of

   * the modular-addition recipe (Nanda et al.: p = 113, 1 layer, d_model 128, 4 heads,
     d_mlp 512, ReLU, no LayerNorm, full batch of the 3,830 training pairs): mechscope's
     trainer path (``last_logits``: only what the last position's logits need) against the
     TransformerLens ``HookedTransformer`` Nanda et al. trained (same config, biases frozen
     at zero as in their notebook, logits of the last position);
   * the induction recipe (2 layers, attention-only, d_model 64, 2 heads, batch 64 x 48
     tokens): mechscope's toy transformer against a ``HookedTransformer`` with the same shape
     (``attn_only=True``, ``normalization_type=None``).

   Each round runs every variant for ``--steps`` steps in a shuffled order; a variant's time is
   its minimum over ``--rounds`` rounds (other processes only ever add time).
2. **Analysis times** on the committed checkpoints: ``analyze_modular``,
   ``write_modular_report`` (with plots), ``analyze_induction``, ``write_induction_report``,
   and ``check_compiled`` (500 inputs) for each compiled model.
3. **TMS training**: ``train_superposition(TMSConfig())`` (every sparsity and seed) end to end.
4. **Full training runs** are long (induction about 20 s, modular addition about 20 minutes):
   their wall times are read from the committed ``training.json`` files, written by the run
   that produced the checkpoints; ``--retrain-induction`` times a fresh induction run too.

Run: ``.venv/bin/python bench/bench_toys.py [--rounds R] [--steps S]``; results go to stdout
and ``bench/results/toys.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mechscope import load_model
from mechscope.toys import TMSConfig, train_superposition
from mechscope.toys.compiled import COMPILED
from mechscope.toys.compiled_report import check_compiled
from mechscope.toys.induction import InductionRecipe, analyze_induction, repeated_sequences, train_induction
from mechscope.toys.induction_plots import write_induction_report
from mechscope.toys.modular import ModularRecipe, all_pairs, answer_loss, split
from mechscope.toys.modular_analysis import analyze_modular
from mechscope.toys.modular_plots import write_modular_report
from mechscope.toys.registry import PACKAGED
from mechscope.toys.train import next_token_loss
from mechscope.toys.transformer import build

Step = Callable[[], None]


def _adamw(params, recipe_lr: float, wd: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        [p for p in params if p.requires_grad], lr=recipe_lr, weight_decay=wd, betas=betas
    )


def modular_steps() -> dict[str, Step]:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    r = ModularRecipe()
    tokens, answers = all_pairs(r.p)
    train_idx, _ = split(r)
    x, y = tokens[train_idx], answers[train_idx]
    ours = build(r.spec(), seed=0).train()
    opt_ours = _adamw(ours.parameters(), r.lr, r.weight_decay, r.betas)
    cfg = HookedTransformerConfig(
        n_layers=1, n_heads=4, d_model=128, d_head=32, d_mlp=512, act_fn="relu", normalization_type=None,
        d_vocab=r.p + 1, d_vocab_out=r.p, n_ctx=3, init_weights=True, seed=0, device="cpu",
    )  # fmt: skip
    tl = HookedTransformer(cfg)
    for name, p in tl.named_parameters():
        if "b_" in name:
            p.requires_grad_(False)
    opt_tl = _adamw(tl.parameters(), r.lr, r.weight_decay, r.betas)

    def step_ours() -> None:
        loss = answer_loss(ours, x, y, r.p)
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        opt_ours.step()

    def step_tl() -> None:
        logits = tl(x)[:, -1].double()
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt_tl.zero_grad(set_to_none=True)
        loss.backward()
        opt_tl.step()

    return {"modular/mechscope": step_ours, "modular/TL HookedTransformer": step_tl}


def induction_steps() -> dict[str, Step]:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    r = InductionRecipe()
    gen = torch.Generator().manual_seed(0)
    batch = repeated_sequences(r, r.batch, gen)[0]
    ours = build(r.spec(), seed=0).train()
    opt_ours = _adamw(ours.parameters(), r.lr, r.weight_decay, (0.9, 0.99))
    cfg = HookedTransformerConfig(
        n_layers=2, n_heads=r.n_heads, d_model=r.d_model, d_head=r.d_model // r.n_heads, attn_only=True,
        normalization_type=None, d_vocab=r.d_vocab, n_ctx=r.n_ctx, init_weights=True, seed=0, device="cpu",
    )  # fmt: skip
    tl = HookedTransformer(cfg)
    opt_tl = _adamw(tl.parameters(), r.lr, r.weight_decay, (0.9, 0.99))

    def step(
        model: torch.nn.Module, opt: torch.optim.Optimizer, logits_of: Callable[[], torch.Tensor]
    ) -> None:
        loss = next_token_loss(logits_of(), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return {
        "induction/mechscope": lambda: step(ours, opt_ours, lambda: ours(input_ids=batch).logits),
        "induction/TL HookedTransformer": lambda: step(tl, opt_tl, lambda: tl(batch)),
    }


def time_steps(variants: dict[str, Step], steps: int, rounds: int) -> dict[str, float]:
    """Seconds per step: the minimum over rounds of the mean over ``steps`` steps."""
    for fn in variants.values():  # warm-up
        fn()
    best = {k: float("inf") for k in variants}
    names = list(variants)
    for _ in range(rounds):
        random.shuffle(names)
        for name in names:
            t0 = time.perf_counter()
            for _ in range(steps):
                variants[name]()
            best[name] = min(best[name], (time.perf_counter() - t0) / steps)
    return best


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def analysis_times() -> dict[str, float]:
    out: dict[str, float] = {}
    modular = load_model("toy/modular_addition", device="cpu")
    induction = load_model("toy/induction", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        out["analyze_modular"] = timed(lambda: analyze_modular(modular))
        out["write_modular_report (with plots)"] = timed(
            lambda: write_modular_report(modular, Path(tmp) / "m")
        )
        out["analyze_induction"] = timed(lambda: analyze_induction(induction))
        out["write_induction_report (with plots)"] = timed(
            lambda: write_induction_report(induction, Path(tmp) / "i")
        )
    for name, make in COMPILED.items():
        model, truth = make()
        out[f"check_compiled {name} (500 inputs)"] = timed(
            lambda m=model, t=truth: check_compiled(m, t, n=500)
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--retrain-induction", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    random.seed(0)
    results: dict[str, object] = {
        "machine": {
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
    }
    step = time_steps({**modular_steps(), **induction_steps()}, args.steps, args.rounds)
    results["step_seconds"] = step
    results["step_ratio_tl_over_mechscope"] = {
        toy: step[f"{toy}/TL HookedTransformer"] / step[f"{toy}/mechscope"]
        for toy in ("modular", "induction")
    }
    results["analysis_seconds"] = analysis_times()
    results["tms_train_seconds"] = timed(lambda: train_superposition(TMSConfig(), progress=False))
    results["committed_train_seconds"] = {
        name: json.loads((PACKAGED / name / "training.json").read_text())["seconds"]
        for name in ("induction", "modular_addition")
    }
    if args.retrain_induction:
        results["induction_retrain_seconds"] = timed(lambda: train_induction(progress=False))
    print(json.dumps(results, indent=2))
    out = Path(__file__).parent / "results" / "toys.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
