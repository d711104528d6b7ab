"""Evaluating a dictionary on a model: reconstruction, sparsity, and the model's loss with it spliced in.

Method (definitions in ``docs/sae-evaluation.md``; ``n`` = counted tokens, rows ``y`` are
targets ``[n, d_out]``, ``y_hat`` reconstructions, ``f`` codes ``[n, d_sae]``):

1. Tokens: ``[n_ctx, ctx_len]`` ids (a tensor, or the first ``n_ctx`` contexts of a
   :class:`~mechscope.data.TokenStream`). A mask ``[n_ctx, ctx_len]`` marks the counted
   positions; by default every position except BOS tokens.
2. Pass 1 (stops after the output site): the mean activation at the output site over the
   counted positions, for the mean-ablation baseline.
3. Pass 2, per batch: a clean run recording the input and output sites, then three runs
   with the output site replaced at the counted positions by the dictionary's reconstruction,
   by zeros, and by the pass-1 mean.
4. Reconstruction metrics accumulate over all counted tokens (float64): MSE, FVU with the
   variance about the evaluation-set mean, cosine similarity, L0, firing counts.
5. LM metrics over counted positions ``t`` (predicting token ``t+1``): CE of every run, CE
   recovered against both baselines, delta LM loss, and ``KL(clean || run)``.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._fs import atomic_write_bytes
from ..errors import MechscopeError
from .base import Dictionary
from .splice import apply, ce_kl, flat_site, log_probs, replace_at, sites
from .store_mask import MaskConfig, keep_mask, special_ids, token_keep

DENSE_THRESHOLD = 0.1
"""A latent is *dense* when it fires on more than this fraction of counted tokens."""
COS_EPS = 1e-12
"""Floor of ``||y|| * ||y_hat||`` in the cosine similarity (a zero vector gives cosine 0)."""


class ReconstructionStats:
    """Streaming sums for the reconstruction metrics (exact merge across batches, float64)."""

    def __init__(self, d_out: int, d_sae: int) -> None:
        self.n = 0
        self.sq_err = 0.0
        self.mean = torch.zeros(d_out, dtype=torch.float64)
        self.m2 = torch.zeros(d_out, dtype=torch.float64)  # sum of squared deviations, per dim
        self.cos_sum = 0.0
        self.l0_sum = 0
        self.fired = torch.zeros(d_sae, dtype=torch.int64)

    def update(self, y: Tensor, y_hat: Tensor, codes: Tensor) -> None:
        """Add rows ``y``, ``y_hat`` ``[m, d_out]`` and ``codes`` ``[m, d_sae]``."""
        m = y.shape[0]
        if m == 0:
            return
        y64, yh64 = y.detach().double().cpu(), y_hat.detach().double().cpu()
        self.sq_err += float((y64 - yh64).pow(2).sum())
        mb = y64.mean(0)
        m2b = (y64 - mb).pow(2).sum(0)
        delta, n_new = mb - self.mean, self.n + m
        self.mean += delta * (m / n_new)
        self.m2 += m2b + delta.pow(2) * (self.n * m / n_new)  # Chan et al. pairwise update
        self.n = n_new
        norms = (y64.norm(dim=-1) * yh64.norm(dim=-1)).clamp_min(COS_EPS)
        self.cos_sum += float(((y64 * yh64).sum(-1) / norms).sum())
        active = codes.detach().cpu() != 0
        self.l0_sum += int(active.sum())
        self.fired += active.sum(0)


class LMStats:
    """Sums of next-token CE (clean and each variant) and of KL(clean || variant)."""

    def __init__(self, variants: tuple[str, ...]) -> None:
        self.count = 0
        self.ce_clean = 0.0
        self.ce = dict.fromkeys(variants, 0.0)
        self.kl = dict.fromkeys(variants, 0.0)

    def update(self, tokens: Tensor, sel: Tensor, logp_clean: Tensor, logp: dict[str, Tensor]) -> None:
        """Add one batch: ``sel`` ``[batch pos-1]`` selects the counted predictions."""
        ce, _, count = ce_kl(logp_clean, logp_clean, tokens, sel)
        self.ce_clean += ce
        self.count += count
        for name, lp in logp.items():
            ce_v, kl_v, _ = ce_kl(logp_clean, lp, tokens, sel)
            self.ce[name] += ce_v
            self.kl[name] += kl_v


@dataclass(frozen=True)
class EvalResult:
    """Every metric of one evaluation (definitions in ``docs/sae-evaluation.md``)."""

    n_tokens: int
    """Counted tokens (masked-in positions) the reconstruction metrics average over."""
    mse: float
    """Mean squared error per element: ``sum ||y - y_hat||^2 / (n d_out)``."""
    mse_per_token: float
    """Mean squared L2 error per token: ``sum ||y - y_hat||^2 / n`` (what training minimises)."""
    fvu: float
    """Fraction of variance unexplained: ``sum ||y - y_hat||^2 / sum ||y - mean(y)||^2``."""
    explained_variance: float
    """``1 - fvu``."""
    cosine_similarity: float
    """Mean over tokens of ``y . y_hat / (||y|| ||y_hat||)``."""
    l0: float
    """Mean number of non-zero codes per token."""
    dead_fraction: float
    """Fraction of latents that never fire on the counted tokens."""
    dense_fraction: float
    """Fraction of latents firing on more than ``dense_threshold`` of the counted tokens."""
    dense_threshold: float
    """Firing-frequency threshold of ``dense_fraction``."""
    density_edges: tuple[float, ...]
    """Bin edges of the feature-density histogram, in log10(firing frequency)."""
    density_counts: tuple[int, ...]
    """Latents per bin (dead latents, frequency 0, are not in any bin)."""
    n_lm_tokens: int = 0
    """Counted next-token predictions of the LM metrics (0 when they were not computed)."""
    ce_clean: float = math.nan
    """Mean next-token CE of the unmodified model."""
    ce_sae: float = math.nan
    """Mean CE with the dictionary's reconstruction spliced in at the output site."""
    ce_zero: float = math.nan
    """Mean CE with the output site zero-ablated."""
    ce_mean: float = math.nan
    """Mean CE with the output site replaced by its mean over the evaluation set."""
    ce_recovered_zero: float = math.nan
    """``(ce_zero - ce_sae) / (ce_zero - ce_clean)``."""
    ce_recovered_mean: float = math.nan
    """``(ce_mean - ce_sae) / (ce_mean - ce_clean)``."""
    delta_lm_loss: float = math.nan
    """``ce_sae - ce_clean``."""
    kl_sae: float = math.nan
    """Mean ``KL(p_clean || p_sae)`` per counted prediction, in nats."""
    kl_zero: float = math.nan
    """Mean ``KL(p_clean || p_zero)``."""
    kl_mean: float = math.nan
    """Mean ``KL(p_clean || p_mean)``."""
    info: dict[str, Any] = field(default_factory=dict)
    """What was evaluated: hooks, architecture, model, token counts, masking."""
    feature_frequency: Tensor | None = field(default=None, compare=False, repr=False)
    """``[d_sae]`` firing frequency of every latent (not part of :meth:`as_dict`)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-able dict of every metric (NaN for metrics not computed becomes None)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "feature_frequency":
                continue
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def summary(self) -> str:
        """One line with the headline numbers."""
        s = f"FVU {self.fvu:.4f}  L0 {self.l0:.1f}  dead {self.dead_fraction:.1%}  cos {self.cosine_similarity:.3f}"
        if self.n_lm_tokens:
            s += (
                f"  CE recovered {self.ce_recovered_zero:.3f} (zero) / {self.ce_recovered_mean:.3f} (mean)"
                f"  dLM {self.delta_lm_loss:+.4f}  KL {self.kl_sae:.4f}"
            )
        return s


def density_histogram(frequency: Tensor, n_tokens: int, n_bins: int = 40) -> tuple[list[float], list[int]]:
    """Histogram of ``log10`` firing frequency of the latents that fire.

    Edges run evenly from ``min(floor(log10(1 / n_tokens)), -1)`` (the rarest possible
    non-zero frequency) to 0; a value on an inner edge goes to the bin on its right, and 0
    (always firing) to the last bin.
    """
    lo = min(math.floor(math.log10(1.0 / max(n_tokens, 1))), -1)
    edges = torch.linspace(lo, 0.0, n_bins + 1, dtype=torch.float64)
    alive = frequency[frequency > 0].double()
    idx = torch.bucketize(alive.log10(), edges, right=True) - 1  # bin i: edges[i] <= v < edges[i+1]
    counts = torch.bincount(idx.clamp(0, n_bins - 1), minlength=n_bins)
    return [float(e) for e in edges], [int(c) for c in counts]


def reconstruction_result(
    stats: ReconstructionStats, dense_threshold: float = DENSE_THRESHOLD, n_bins: int = 40
) -> dict[str, Any]:
    """The reconstruction and sparsity fields of :class:`EvalResult` from accumulated sums."""
    n = stats.n
    if n == 0:
        raise MechscopeError("no tokens were counted (is every position masked out?)")
    total_var = float(stats.m2.sum())
    fvu = stats.sq_err / total_var if total_var > 0 else math.nan
    freq = stats.fired.double() / n
    edges, counts = density_histogram(freq, n, n_bins)
    return {
        "n_tokens": n,
        "mse": stats.sq_err / (n * stats.mean.numel()),
        "mse_per_token": stats.sq_err / n,
        "fvu": fvu,
        "explained_variance": 1.0 - fvu,
        "cosine_similarity": stats.cos_sum / n,
        "l0": stats.l0_sum / n,
        "dead_fraction": float((freq == 0).double().mean()),
        "dense_fraction": float((freq > dense_threshold).double().mean()),
        "dense_threshold": dense_threshold,
        "density_edges": tuple(edges),
        "density_counts": tuple(counts),
        "feature_frequency": freq.float(),
    }


def lm_result(stats: LMStats) -> dict[str, Any]:
    """The LM fields of :class:`EvalResult` from accumulated sums."""
    c = stats.count
    if c == 0:
        return {}
    ce_clean = stats.ce_clean / c
    ce = {k: v / c for k, v in stats.ce.items()}
    kl = {k: v / c for k, v in stats.kl.items()}

    def recovered(baseline: float) -> float:
        gap = baseline - ce_clean
        return (baseline - ce["sae"]) / gap if gap != 0 else math.nan

    return {
        "n_lm_tokens": c,
        "ce_clean": ce_clean,
        "ce_sae": ce["sae"],
        "ce_zero": ce["zero"],
        "ce_mean": ce["mean"],
        "ce_recovered_zero": recovered(ce["zero"]),
        "ce_recovered_mean": recovered(ce["mean"]),
        "delta_lm_loss": ce["sae"] - ce_clean,
        "kl_sae": kl["sae"],
        "kl_zero": kl["zero"],
        "kl_mean": kl["mean"],
    }


# -- running on a model -----------------------------------------------------------------------


def _tokens(source: Any, n_ctx: int | None) -> Tensor:
    if isinstance(source, Tensor):
        tokens = source if n_ctx is None else source[:n_ctx]
    elif hasattr(source, "take"):  # a TokenStream
        tokens = source.take(n_ctx if n_ctx is not None else 64)
    else:
        raise MechscopeError("source_or_tokens must be a [n_ctx, ctx_len] token tensor or a TokenStream")
    if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32) or tokens.shape[1] < 2:
        raise MechscopeError(f"tokens must be integer ids [n_ctx, ctx_len >= 2], got {tuple(tokens.shape)}")
    return tokens.long()


def token_mask(
    model: Any,
    d: Dictionary,
    tokens: Tensor,
    *,
    exclude_bos: bool = True,
    exclude_special: bool = False,
    outlier_factor: float | None = None,
    batch_size: int = 8,
) -> Tensor:
    """``[n_ctx, ctx_len]`` bool: the counted positions, under the activation store's rules.

    The same rules as a harvest's :class:`~mechscope.dictionary.store.MaskConfig`: BOS tokens
    (``exclude_bos``), every special token (``exclude_special``), and tokens whose norm at the
    input or output site exceeds ``outlier_factor`` times their context's median norm.
    """
    rules = MaskConfig(bos=exclude_bos, special=exclude_special, outlier_factor=outlier_factor)
    tokenizer = getattr(model, "tokenizer", None)
    drop = special_ids(tokenizer, rules) if tokenizer is not None else []
    if outlier_factor is None:
        return token_keep(tokens, drop)
    names = list(dict.fromkeys(sites(d)))
    parts = []
    for i in range(0, tokens.shape[0], batch_size):
        tok = tokens[i : i + batch_size]
        _, cache = model.run_with_cache(tok, names=names, return_logits=False)
        acts = {n: flat_site(cache[n], cache[n].shape[2:].numel(), n).cpu() for n in names}
        parts.append(keep_mask(tok, acts, rules, drop))
    return torch.cat(parts)


def _output_mean(model: Any, d: Dictionary, tokens: Tensor, mask: Tensor, batch_size: int) -> Tensor:
    """``[d_out]`` mean activation at the output site over the masked-in positions (float64)."""
    _, out_site = sites(d)
    total = torch.zeros(d.config.out_dim, dtype=torch.float64)
    count = 0
    for i in range(0, tokens.shape[0], batch_size):
        tok, m = tokens[i : i + batch_size], mask[i : i + batch_size]
        _, cache = model.run_with_cache(tok, names=[out_site], return_logits=False)
        act = flat_site(cache[out_site], d.config.out_dim, out_site)[m.to(cache[out_site].device)]
        total += act.double().sum(0).cpu()
        count += act.shape[0]
    return total / max(count, 1)


def _eval_batch(
    model: Any,
    d: Dictionary,
    tok: Tensor,
    m: Tensor,
    out_mean: Tensor | None,
    recon: ReconstructionStats,
    lm: LMStats | None,
) -> None:
    """One batch of pass 2: clean run, metrics, and the spliced/ablated runs."""
    in_site, out_site = sites(d)
    logits, cache = model.run_with_cache(
        tok, names=list(dict.fromkeys([in_site, out_site])), return_logits=lm is not None
    )
    x = flat_site(cache[in_site], d.config.d_in, in_site)  # [b pos d_in]
    y = flat_site(cache[out_site], d.config.out_dim, out_site)  # [b pos d_out]
    y_hat, codes = apply(d, x.reshape(-1, x.shape[-1]))
    y_hat = y_hat.reshape(*y.shape[:2], -1)
    codes = codes.reshape(*y.shape[:2], -1)
    md = m.to(y.device)
    recon.update(y[md], y_hat[md], codes[md])
    if lm is None or logits is None:
        return
    logp_clean = log_probs(logits)
    del logits
    runs = {"sae": replace_at(md, y_hat), "zero": replace_at(md, 0.0)}
    if out_mean is not None:
        runs["mean"] = replace_at(md, out_mean)
    logp = {
        name: log_probs(model.run_with_hooks(tok, fwd_hooks=[(out_site, fn)])) for name, fn in runs.items()
    }
    lm.update(tok, m[:, :-1], logp_clean, logp)


def _tqdm(it: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(it, desc="evaluating dictionary", unit="batch")


def evaluate_dictionary(
    model: Any,
    d: Dictionary,
    source_or_tokens: Any,
    *,
    n_ctx: int | None = None,
    batch_size: int = 8,
    mask: Tensor | None = None,
    exclude_bos: bool = True,
    exclude_special: bool = False,
    outlier_factor: float | None = None,
    lm_metrics: bool = True,
    dense_threshold: float = DENSE_THRESHOLD,
    n_bins: int = 40,
    progress: bool = False,
) -> EvalResult:
    """Evaluate ``d`` on ``model`` over ``source_or_tokens`` (see the module docstring).

    ``source_or_tokens``: ``[n_ctx, ctx_len]`` token ids, or a ``TokenStream`` (its first
    ``n_ctx`` contexts, default 64). The counted positions follow the activation store's
    masking rules (:func:`token_mask`: BOS by default, optionally every special token and
    high-norm outliers); ``mask`` ``[n_ctx, ctx_len]`` (bool) replaces them.
    ``lm_metrics=False`` skips the CE/KL runs (reconstruction metrics only). ``progress``:
    True shows a tqdm bar.
    """
    tokens = _tokens(source_or_tokens, n_ctx)
    in_site, out_site = sites(d)
    custom_mask = mask is not None
    if mask is None:
        with torch.no_grad():
            mask = token_mask(
                model, d, tokens, exclude_bos=exclude_bos, exclude_special=exclude_special,
                outlier_factor=outlier_factor, batch_size=batch_size,
            )  # fmt: skip
    elif mask.shape != tokens.shape:
        raise MechscopeError(f"mask {tuple(mask.shape)} must have the tokens' shape {tuple(tokens.shape)}")
    mask = mask.to(torch.bool).cpu()
    recon = ReconstructionStats(d.config.out_dim, d.config.d_sae)
    lm = LMStats(("sae", "zero", "mean")) if lm_metrics else None
    starts: Any = range(0, tokens.shape[0], batch_size)
    if progress:
        starts = _tqdm(starts)
    was_training = d.training
    d.eval()  # restored below: the caller's module is left as it was
    try:
        with torch.no_grad():
            out_mean = _output_mean(model, d, tokens, mask, batch_size) if lm_metrics else None
            for i in starts:
                _eval_batch(
                    model, d, tokens[i : i + batch_size], mask[i : i + batch_size], out_mean, recon, lm
                )
    finally:
        d.train(was_training)
    fields = reconstruction_result(recon, dense_threshold, n_bins)
    if lm is not None:
        fields.update(lm_result(lm))
    info = {
        "hook_name": in_site,
        "hook_name_out": out_site,
        "architecture": d.config.architecture,
        "d_in": d.config.d_in,
        "d_sae": d.config.d_sae,
        "model": str(getattr(getattr(model, "cfg", None), "name", "") or d.config.model_name),
        "n_ctx": int(tokens.shape[0]),
        "ctx_len": int(tokens.shape[1]),
        "masked_positions": int((~mask).sum()),
        "mask": "custom"
        if custom_mask
        else {"bos": exclude_bos, "special": exclude_special, "outlier_factor": outlier_factor},
    }
    return EvalResult(**fields, info=info)


def plot_density(result: EvalResult, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Write the feature-density histogram as a PNG (matplotlib, Agg backend), atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    edges, counts = list(result.density_edges), list(result.density_counts)
    fig = Figure(figsize=(6.4, 3.6), dpi=110)
    ax = fig.add_subplot()
    ax.stairs(counts, edges, fill=True, color="#3b6ea8")
    ax.set_xlabel("log10 firing frequency")
    ax.set_ylabel("latents")
    sub = f"dead {result.dead_fraction:.1%}, dense {result.dense_fraction:.1%}"
    ax.set_title(title or f"Feature density over {result.n_tokens} tokens; {sub}", fontsize=10)
    ax.axvline(math.log10(result.dense_threshold), color="#b44", linestyle="--", linewidth=1)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())
