"""Feature statistics for every latent of a dictionary, in one streaming pass over contexts.

For each batch of contexts ``[batch, ctx]``: run the model up to the dictionary's hook (the
forward stops there), encode, and update, for every latent ``i``:

1. **density**: tokens where ``f_i > 0``, over all tokens seen;
2. **histogram**: counts of ``log10 f_i`` (active tokens) in fixed bins;
3. **top-k**: the ``top_k`` largest activations and where they are (kept with ``torch.topk`` on
   the running top-k plus the batch, so memory is ``d_sae x top_k``);
4. **quantile samples**: a reservoir of ``reservoir`` active ``(activation, location)`` pairs
   per latent (each active token is kept with equal probability, seeded); at the end the
   reservoir is sorted and cut into ``n_quantiles`` **equal-count** bins, ``per_quantile``
   examples drawn from each (the bins' edges are kept, to mark them on the histogram);
5. **co-occurrence**: how often two latents fire on the same token (from each token's active
   latents, so the cost follows the active count, not ``d_sae²`` per token).

Every example keeps the latent's activation on each token of a window of ``window`` tokens either
side (gathered from the batch when the example enters the top-k or the reservoir, so no second
pass is needed), and the contexts' tokens are kept (``int32``) to decode the windows. A seeded
reservoir of ``n_random`` **random windows** keeps every latent's activations on them: the
held-out, mostly non-firing contexts that scoring and validation need. **Logit effects** are ``W_dec @ W_U`` (the decoder direction through the
unembedding, final norm left out): the tokens each latent promotes and suppresses most.

Saved as Parquet tables, queryable with DuckDB: ``features.parquet``, ``examples.parquet``,
``histogram.parquet``, ``cooccurrence.parquet``, ``random.parquet`` (the random windows) and
``random_activations.parquet`` (their non-zero activations, one row per latent and token), plus
``meta.json``, written last: a directory without it is not an artifact.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._fs import atomic_write_json
from .._version import __version__
from ..dictionary.base import Dictionary
from ..errors import MechscopeError
from ..models import HookedModel

SCHEMA_VERSION = 2
"""Version of the artifact's tables (2: per-token activations in every example, random windows)."""

BINS = torch.linspace(-4.0, 2.0, 31)
"""Edges of the ``log10 activation`` histogram (activations from 1e-4 to 100)."""


@dataclass(frozen=True)
class StatsConfig:
    """What the pass keeps."""

    top_k: int = 20
    """Max-activating examples per latent."""
    window: int = 8
    """Tokens kept either side of each example."""
    n_quantiles: int = 5
    """Equal-count activation quantiles to sample from."""
    per_quantile: int = 3
    """Examples per quantile."""
    reservoir: int = 200
    """Active tokens kept per latent for the quantile samples."""
    cooccurrence_top: int = 5
    """Co-occurring latents kept per latent."""
    logit_top: int = 10
    """Promoted and suppressed tokens kept per latent."""
    cosine_top: int = 5
    """Nearest latents by decoder cosine kept per latent (0: not computed)."""
    skip_first: int = 0
    """Positions at the start of every context read as silent (1 with a BOS first: an attention sink
    whose activations are outliers); they are left out of the density's denominator."""
    n_random: int = 100
    """Random windows kept with every latent's activations (held-out contexts for scoring)."""
    seed: int = 0
    """Seed of the reservoir sampling."""

    @property
    def width(self) -> int:
        """Tokens per example window: ``2 * window + 1``."""
        return 2 * self.window + 1


@dataclass
class FeatureStats:
    """The accumulated statistics (see the module docstring)."""

    config: StatsConfig
    hook: str
    n_tokens: int
    n_skipped: int
    counts: Tensor  # [d_sae] long
    sums: Tensor  # [d_sae] float64: activation sums (active tokens)
    hist: Tensor  # [d_sae, bins] long
    top_vals: Tensor  # [d_sae, top_k]
    top_locs: Tensor  # [d_sae, top_k] long: flat token index (-1: empty)
    top_win: Tensor  # [d_sae, top_k, width]: the latent's activations around each top example
    res_vals: Tensor  # [d_sae, reservoir]
    res_locs: Tensor  # [d_sae, reservoir] long (-1: empty)
    res_win: Tensor  # [d_sae, reservoir, width]
    rand_locs: Tensor  # [n_random] long (-1: empty)
    rand_win: Tensor  # [n_random, width, d_sae]: every latent's activations around each random token
    cooc: Tensor  # [d_sae, d_sae] long
    tokens: Tensor  # [n_ctx, ctx] int32
    logit_top: Tensor  # [d_sae, logit_top] token ids promoted
    logit_bottom: Tensor  # [d_sae, logit_top] token ids suppressed
    cos_ids: Tensor  # [d_sae, cosine_top] nearest other latents by decoder cosine
    cos_vals: Tensor  # [d_sae, cosine_top] their cosines

    def save(self, path: str | Path, model: HookedModel, extra: dict[str, Any] | None = None) -> Path:
        """Write the Parquet tables and ``meta.json`` (with ``extra`` merged in) into directory ``path``."""
        from ._tables import write_tables

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "meta.json").unlink(
            missing_ok=True
        )  # an older artifact here is invalid until this one is whole
        write_tables(self, model, path)
        atomic_write_json(
            path / "meta.json",
            {"kind": "feature-stats", "schema_version": SCHEMA_VERSION, "mechscope_version": __version__,
             "model": model.cfg.name, "hook": self.hook, "d_sae": int(self.counts.shape[0]),
             "n_tokens": self.n_tokens, "n_contexts": int(self.tokens.shape[0]),
             "n_skipped": self.n_skipped, "ctx": int(self.tokens.shape[1]), "config": asdict(self.config),
             **(extra or {})},
        )  # fmt: skip
        return path


def feature_stats(
    model: HookedModel, dictionary: Dictionary, contexts: Iterable[Tensor], config: StatsConfig | None = None
) -> FeatureStats:
    """One pass over ``contexts`` (an iterable of ``[batch, ctx]`` token batches)."""
    cfg = config or StatsConfig()
    hook, d = dictionary.config.hook_name, dictionary.config.d_sae
    if not hook:
        raise MechscopeError("the dictionary names no hook (config.hook_name)")
    gen = torch.Generator().manual_seed(cfg.seed)
    st = _empty(cfg, hook, d)
    seen, kept = torch.zeros(d, dtype=torch.long), list[Tensor]()
    for batch in contexts:
        if batch.ndim != 2 or (kept and batch.shape[1] != kept[0].shape[1]):
            raise MechscopeError(
                f"contexts must be [batch, ctx] token batches of one length, got {tuple(batch.shape)}"
            )
        _, cache = model.run_with_cache(batch, names=[hook], return_logits=False)
        x = cache[hook].reshape(-1, cache[hook].shape[-1])
        with torch.no_grad():
            f = dictionary.encode(x.to(dictionary.W_dec.dtype)).float()  # [tokens, d_sae]
        if cfg.skip_first:
            f.view(batch.shape[0], batch.shape[1], -1)[:, : cfg.skip_first] = 0
            st.n_skipped += batch.shape[0] * min(cfg.skip_first, batch.shape[1])
        _update(st, f, batch.shape[1], cfg, seen, gen)
        kept.append(batch.to(torch.int32))
        st.n_tokens += f.shape[0]
    if not kept:
        raise MechscopeError("no contexts were given")
    st.tokens = torch.cat(kept)
    st.logit_top, st.logit_bottom = _logit_effects(model, dictionary, cfg.logit_top)
    st.cos_ids, st.cos_vals = decoder_neighbours(dictionary.W_dec.detach(), cfg.cosine_top)
    return st


def _empty(cfg: StatsConfig, hook: str, d: int) -> FeatureStats:
    w = cfg.width
    return FeatureStats(
        cfg, hook, 0, 0, torch.zeros(d, dtype=torch.long), torch.zeros(d, dtype=torch.float64),
        torch.zeros(d, len(BINS) - 1, dtype=torch.long), torch.zeros(d, cfg.top_k),
        torch.full((d, cfg.top_k), -1), torch.zeros(d, cfg.top_k, w), torch.zeros(d, cfg.reservoir),
        torch.full((d, cfg.reservoir), -1), torch.zeros(d, cfg.reservoir, w),
        torch.full((cfg.n_random,), -1), torch.zeros(cfg.n_random, w, d),
        torch.zeros(d, d, dtype=torch.long), torch.zeros(0, 0, dtype=torch.int32),
        torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, 0, dtype=torch.long),
        torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, 0),
    )  # fmt: skip


class _Windows:
    """Activations in a window around tokens of one batch (zero beyond the context's ends)."""

    def __init__(self, f: Tensor, ctx: int, window: int) -> None:  # f [tokens, d]
        self.ctx, self.window = ctx, window
        self.padded = torch.nn.functional.pad(f.reshape(-1, ctx, f.shape[1]), (0, 0, window, window))
        self.offsets = torch.arange(2 * window + 1)

    def of(self, tok: Tensor, lat: Tensor) -> Tensor:
        """``[n, width]``: latent ``lat[j]`` around batch token ``tok[j]``."""
        c, p = tok // self.ctx, tok % self.ctx
        return self.padded[c[:, None], p[:, None] + self.offsets, lat[:, None]]

    def all_latents(self, tok: Tensor) -> Tensor:
        """``[n, width, d]``: every latent around batch token ``tok[j]``."""
        c, p = tok // self.ctx, tok % self.ctx
        return self.padded[c[:, None], p[:, None] + self.offsets]


def _update(
    st: FeatureStats, f: Tensor, ctx: int, cfg: StatsConfig, seen: Tensor, gen: torch.Generator
) -> None:
    offset, wins, d = st.n_tokens, _Windows(f, ctx, cfg.window), f.shape[1]
    f = f.clamp_min(0)  # [tokens, d]: what fires is > 0
    tok, lat = f.nonzero(as_tuple=True)  # the active entries, by token (sparse: L0 per token)
    val = f[tok, lat]
    st.counts += torch.bincount(lat, minlength=d)
    st.sums.index_add_(0, lat, val.double())
    bins = torch.bucketize(torch.log10(val), BINS[1:-1])  # [entries], in 0 .. n_bins - 1
    st.hist.view(-1).index_add_(0, lat * st.hist.shape[1] + bins, torch.ones_like(lat))
    vals = torch.cat([st.top_vals, f.T], dim=1)  # [d, top_k + tokens]
    top = vals.topk(cfg.top_k, dim=1)
    new = top.indices >= cfg.top_k  # entries from this batch
    old_win = st.top_win.gather(1, top.indices.clamp_max(cfg.top_k - 1)[..., None].expand(-1, -1, cfg.width))
    old_locs = st.top_locs.gather(1, top.indices.clamp_max(cfg.top_k - 1))
    n_lat, slot = new.nonzero(as_tuple=True)
    n_tok = top.indices[n_lat, slot] - cfg.top_k
    old_win[n_lat, slot], old_locs[n_lat, slot] = wins.of(n_tok, n_lat), n_tok + offset
    empty = top.values <= 0
    st.top_vals, st.top_locs, st.top_win = top.values, old_locs.masked_fill(empty, -1), old_win
    _reservoir(st, f, tok, lat, wins, cfg, seen, gen)
    _random_windows(st, f.shape[0], wins, cfg, gen)
    _cooccurrence(st.cooc, tok, lat, f.shape[0])


def _cooccurrence(cooc: Tensor, tok: Tensor, lat: Tensor, n_tokens: int) -> None:
    """Add 1 to ``cooc[i, j]`` for every token where latents ``i`` and ``j`` are both active.

    Every active entry is paired with every entry of its own token (``tok`` is sorted, as
    ``nonzero`` returns it), all at once: the cost is ``Σ_t L0_t²``, not ``d²`` per token.
    """
    if len(tok) == 0:
        return
    per = torch.bincount(tok, minlength=n_tokens)  # [tokens] active latents per token
    start = torch.cumsum(per, 0) - per  # first entry of each token
    reps = per[tok]  # each entry pairs with as many entries as its token has
    first = torch.repeat_interleave(torch.arange(len(tok)), reps)
    within = torch.arange(len(first)) - torch.repeat_interleave(torch.cumsum(reps, 0) - reps, reps)
    second = start[tok[first]] + within
    d = cooc.shape[0]
    cooc.view(-1).index_add_(0, lat[first] * d + lat[second], torch.ones_like(first))


def _last_per_slot(key: Tensor, n: Tensor) -> Tensor:
    """Mask of the entries that win their slot: the latest (largest ``n``) of those sharing a ``key``.

    Algorithm R replaces a slot each time; within one batch several tokens may draw the same slot,
    and the last of them must be the one kept.
    """
    best = torch.full((int(key.max()) + 1,), -1, dtype=torch.long).scatter_reduce(0, key, n, "amax")
    return best[key] == n


def _reservoir(
    st: FeatureStats,
    f: Tensor,
    tok: Tensor,
    lat: Tensor,
    wins: _Windows,
    cfg: StatsConfig,
    seen: Tensor,
    gen: torch.Generator,
) -> None:
    """Algorithm R per latent over its active tokens (vectorised over the batch's active entries)."""
    if len(tok) == 0:
        return
    order = torch.argsort(lat, stable=True)
    tok, lat = tok[order], lat[order]
    rank = torch.arange(len(lat)) - torch.searchsorted(lat, lat)  # index among this latent's entries
    n = seen[lat] + rank  # how many active tokens this latent had before this one
    seen += torch.bincount(lat, minlength=seen.shape[0])
    slot = torch.where(n < cfg.reservoir, n, (torch.rand(len(n), generator=gen) * (n + 1).double()).long())
    keep = slot < cfg.reservoir
    tok, lat, slot, n = tok[keep], lat[keep], slot[keep], n[keep]
    if len(tok):
        win = _last_per_slot(lat * cfg.reservoir + slot, n)
        tok, lat, slot = tok[win], lat[win], slot[win]
        st.res_vals[lat, slot] = f[tok, lat]
        st.res_locs[lat, slot] = tok + st.n_tokens
        st.res_win[lat, slot] = wins.of(tok, lat)


def _random_windows(
    st: FeatureStats, n_tok: int, wins: _Windows, cfg: StatsConfig, gen: torch.Generator
) -> None:
    """Algorithm R over all tokens: ``n_random`` uniformly chosen tokens with every latent around them."""
    if cfg.n_random == 0:
        return
    n = torch.arange(st.n_tokens, st.n_tokens + n_tok)
    slot = torch.where(n < cfg.n_random, n, (torch.rand(n_tok, generator=gen) * (n + 1).double()).long())
    keep = slot < cfg.n_random
    tok, slot, n = (n - st.n_tokens)[keep], slot[keep], n[keep]
    if len(tok):
        win = _last_per_slot(slot, n)
        st.rand_locs[slot[win]] = tok[win] + st.n_tokens
        st.rand_win[slot[win]] = wins.all_latents(tok[win])


def decoder_neighbours(w_dec: Tensor, k: int, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """``(ids, cosines)``, each ``[d_sae, k]``: every latent's ``k`` nearest others by decoder cosine."""
    d = w_dec.shape[0]
    k = min(k, d - 1)
    if k <= 0:
        return torch.zeros(d, 0, dtype=torch.long), torch.zeros(d, 0)
    unit = torch.nn.functional.normalize(w_dec.float(), dim=1)  # [d_sae, d_model]
    ids, vals = [], []
    for start in range(0, d, chunk):
        sims = unit[start : start + chunk] @ unit.T  # [chunk, d_sae]
        rows = torch.arange(start, min(start + chunk, d))
        sims[torch.arange(len(rows)), rows] = -2.0  # never its own neighbour
        top = sims.topk(k, dim=1)
        ids.append(top.indices)
        vals.append(top.values)
    return torch.cat(ids), torch.cat(vals)


def _logit_effects(model: HookedModel, dictionary: Dictionary, k: int) -> tuple[Tensor, Tensor]:
    w_u = model.W_U.detach().float()  # [d_model, vocab]
    top, bottom = [], []
    for chunk in dictionary.W_dec.detach().float().split(256):  # [256, vocab] at a time
        effects = chunk @ w_u  # [chunk, vocab]
        top.append(effects.topk(k, dim=1).indices)
        bottom.append((-effects).topk(k, dim=1).indices)
    return torch.cat(top), torch.cat(bottom)


def load_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a saved feature-statistics artifact."""
    return dict(json.loads((Path(path) / "meta.json").read_text()))


__all__ = [
    "BINS",
    "SCHEMA_VERSION",
    "FeatureStats",
    "StatsConfig",
    "decoder_neighbours",
    "feature_stats",
    "load_meta",
]
