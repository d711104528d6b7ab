"""``mechscope eval-sae``: evaluate a saved dictionary on a model and write its metrics and plot.

1. Load the dictionary (mechscope, SAELens or Gemma Scope layout) and the model (by default
   the one the dictionary names, else the built-in default).
2. Pack ``n_ctx`` contexts of the token source, starting at context ``start`` (use a start
   past the training tokens to evaluate on held-out text).
3. ``evaluate_dictionary``: reconstruction and sparsity metrics, and CE/KL with the dictionary
   spliced in, against zero- and mean-ablation baselines.
4. Write ``out/metrics.json`` (kind, schema version, versions, time, config, metrics),
   ``out/density.png`` (feature-density histogram) and ``out/feature_frequency.safetensors``
   (``[d_sae]`` firing frequency), each atomically; return ``(out, result)``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .._fs import atomic_write_bytes, atomic_write_json
from .._version import __version__
from ..data import TokenStream, open_documents
from ..dictionary.evaluate import DENSE_THRESHOLD, EvalResult, evaluate_dictionary, plot_density
from ..dictionary.io import load_dictionary
from ..models import DEFAULT_MODEL, load_model

KIND = "sae_eval"
SCHEMA_VERSION = 1
"""Version of the ``metrics.json`` layout."""


@dataclass(frozen=True)
class EvalSAEConfig:
    """What ``mechscope eval-sae`` runs."""

    dictionary: Path = Path("runs/sae")
    """Dictionary directory: mechscope (config.json), SAELens (cfg.json) or Gemma Scope (params.npz) layout."""
    model: str | None = None
    """Model: a built-in name, a .gguf file, a local HF directory or a hub id (default: the dictionary's model_name, else the built-in default)."""
    hook_name: str | None = None
    """Override the dictionary's input hook (needed for a Gemma Scope directory whose path names no layer)."""
    hook_name_out: str | None = None
    """Override a transcoder's output hook."""
    source: str = "stdlib"
    """Documents: stdlib (the offline corpus), a text file or directory, .jsonl, .parquet, or a saved HF dataset directory."""
    text_field: str = "text"
    """JSONL field / Parquet or dataset column holding the text."""
    split: str | None = None
    """Split of a saved DatasetDict (needed when it has several)."""
    ctx_len: int = 128
    """Tokens per context."""
    n_ctx: int = 64
    """Number of contexts to evaluate on."""
    start: int = 0
    """Global index of the first context in the packed stream (skip the contexts used for training)."""
    bos_policy: str = "bos"
    """bos: every context starts with BOS; doc: BOS at each document start; none: no BOS."""
    batch_size: int = 8
    """Contexts per forward pass."""
    mask_bos: bool = True
    """Leave BOS tokens out of every metric (they keep their clean activation when splicing)."""
    mask_special: bool = False
    """Leave every special token out of every metric."""
    outlier_factor: float | None = None
    """Leave out tokens whose norm at the dictionary's hooks exceeds this multiple of their context's median norm."""
    lm_metrics: bool = True
    """Compute CE loss recovered, delta LM loss and KL (three extra forward passes per batch)."""
    dense_threshold: float = DENSE_THRESHOLD
    """A latent firing on more than this fraction of tokens counts as dense."""
    n_bins: int = 40
    """Bins of the feature-density histogram."""
    out: Path = Path("runs/eval-sae")
    """Directory the metrics, plot and firing frequencies are written to (created)."""
    device: str | None = None
    """Device for the model and dictionary (default: CUDA when available, else CPU)."""
    progress_bar: bool = True
    """Show a tqdm progress bar."""


def run_eval_sae(
    config: EvalSAEConfig, progress: Callable[[str], None] | None = None
) -> tuple[Path, EvalResult]:
    """Run the evaluation and write its directory; returns ``(directory, result)``."""
    from safetensors.torch import save

    say = progress or (lambda _msg: None)
    d = load_dictionary(config.dictionary, hook_name=config.hook_name, hook_name_out=config.hook_name_out)
    model_name = config.model or d.config.model_name or DEFAULT_MODEL
    say(f"loading {model_name}")
    model = load_model(model_name, device=config.device)
    d = d.to(model.device)
    stream = TokenStream(
        open_documents(config.source, field=config.text_field, split=config.split),
        model,
        ctx_len=config.ctx_len,
        bos=config.bos_policy,
    )
    tokens = stream.take(config.n_ctx, start=config.start)
    say(f"evaluating {d.config.architecture} dictionary at {d.config.hook_name} on {tokens.numel()} tokens")
    t0 = time.perf_counter()
    result = evaluate_dictionary(
        model, d, tokens, batch_size=config.batch_size, exclude_bos=config.mask_bos,
        exclude_special=config.mask_special, outlier_factor=config.outlier_factor,
        lm_metrics=config.lm_metrics, dense_threshold=config.dense_threshold, n_bins=config.n_bins,
        progress=config.progress_bar,
    )  # fmt: skip
    say(f"{result.summary()}  ({time.perf_counter() - t0:.1f} s)")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "mechscope_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()},
        "model": model_name,
        "source": stream.describe(),
        "metrics": result.as_dict(),
    }
    plot_density(result, out / "density.png")
    if result.feature_frequency is not None:
        freq = result.feature_frequency.detach().cpu().contiguous()
        atomic_write_bytes(out / "feature_frequency.safetensors", save({"feature_frequency": freq}))
    atomic_write_json(out / "metrics.json", meta)
    return out, result
