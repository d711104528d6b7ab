"""``mechscope train-sae``: train one SAE or transcoder on a model's activations.

1. Open the activations: a harvested disk store (``store``, see ``mechscope harvest``), or
   a stream computed on the fly: load the model, pack the documents of ``corpus`` into
   ``ctx_len`` contexts and run them through a bounded shuffle buffer
   (``mechscope.dictionary.store.StreamingSource``).
2. Build the dictionary config: the input width is read from the source; ``d_sae`` is
   given or ``expansion * d_in``; a transcoder reads ``hook`` and predicts ``hook_out``.
3. Train it with ``mechscope.dictionary.train.train`` (all ``TrainConfig`` options:
   schedules, normalisation, checkpoints, ``resume``, logging; under ``torchrun`` DDP).
4. The dictionary is saved under ``<output_dir>/dictionaries/<name>`` (mechscope format,
   normalisation folded in), next to ``metrics.jsonl`` and ``train.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dictionary import DictionaryConfig
from ..dictionary.train import TrainConfig, TrainResult, train
from ..errors import MechscopeError
from ..models import DEFAULT_MODEL

TOPK_FAMILY = ("topk", "batchtopk", "matryoshka")
"""Architectures that take ``k``."""


@dataclass(frozen=True)
class TrainSAEConfig:
    """What ``mechscope train-sae`` runs (the training options are ``TrainConfig``'s)."""

    architecture: str = "topk"
    """relu (ReLU + L1), topk, batchtopk, jumprelu or matryoshka (BatchTopK with nested prefixes)."""
    hook: str = "blocks.15.hook_resid_pre"
    """Hook the dictionary reads, in TransformerLens names."""
    hook_out: str | None = None
    """Transcoder: hook the dictionary predicts (None: an SAE reconstructing hook)."""
    d_sae: int | None = None
    """Number of latents (None: expansion * d_in)."""
    expansion: int = 16
    """Latents per input dimension when d_sae is not given."""
    k: int = 32
    """Active latents per token (topk; per token on average for batchtopk and matryoshka)."""
    skip_connection: bool = False
    """Transcoder: add a learned linear skip connection from input to output."""
    aux_k: int | None = None
    """TopK family: dead latents used by the AuxK loss per token (None: d_in // 2)."""
    aux_coefficient: float = 1.0 / 32
    """TopK family: weight of the AuxK dead-latent loss (0 turns it off)."""
    jumprelu_bandwidth: float = 0.001
    """JumpReLU: bandwidth of the straight-through pseudo-gradient (for unit-mean-squared-norm inputs)."""
    jumprelu_init_threshold: float = 0.001
    """JumpReLU: initial threshold."""
    matryoshka_widths: tuple[int, ...] = ()
    """Matryoshka: nested prefix widths, increasing, the last equal to d_sae (empty: d_sae/8, d_sae/4, d_sae/2, d_sae)."""
    dtype: str = "float32"
    """Parameter dtype of the dictionary."""
    name: str | None = None
    """Directory name of the saved dictionary (default: architecture and hook)."""
    store: Path | None = None
    """A harvested activation store to train from (None: stream activations from the model)."""
    model: str = DEFAULT_MODEL
    """Streaming: model (a built-in name, a .gguf file, a local HF directory or a hub id)."""
    corpus: str = "stdlib"
    """Streaming: documents (stdlib, a text file or directory, .jsonl, .parquet, or a saved HF dataset)."""
    text_field: str = "text"
    """Streaming: JSONL field / Parquet or dataset column holding the text."""
    ctx_len: int = 128
    """Streaming: tokens per context."""
    bos_policy: str = "bos"
    """Streaming: bos (every context starts with BOS), doc (BOS at each document start) or none."""
    mask_bos: bool = True
    """Streaming: leave BOS tokens out of training (attention-sink outliers)."""
    model_batch_size: int = 32
    """Streaming: contexts per model forward pass."""
    buffer_tokens: int = 1 << 16
    """Streaming: shuffle-buffer capacity in tokens (at least two training batches)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir=Path("runs/sae")))
    """How to train (lr, schedules, batch_size, total_tokens, normalisation, checkpoints ...)."""


def _default_widths(d_sae: int) -> tuple[int, ...]:
    return (*(w for w in (d_sae // 8, d_sae // 4, d_sae // 2) if w > 0), d_sae)


def dictionary_config(
    config: TrainSAEConfig, d_in: int, d_out: int, meta: dict[str, Any]
) -> DictionaryConfig:
    """The dictionary ``config`` describes, for inputs of width ``d_in`` and targets of ``d_out``."""
    d_sae = config.d_sae if config.d_sae is not None else config.expansion * d_in
    transcoder = config.hook_out is not None and config.hook_out != config.hook
    if config.skip_connection and not transcoder:
        raise MechscopeError("skip_connection needs a transcoder: set hook_out to a different hook")
    widths = config.matryoshka_widths or _default_widths(d_sae) if config.architecture == "matryoshka" else ()
    return DictionaryConfig(
        architecture=config.architecture,
        d_in=d_in,
        d_sae=d_sae,
        d_out=d_out if transcoder else None,
        k=config.k if config.architecture in TOPK_FAMILY else None,
        hook_name=config.hook,
        hook_name_out=config.hook_out if transcoder else None,
        apply_b_dec_to_input=not transcoder,
        skip_connection=config.skip_connection,
        matryoshka_widths=widths,
        jumprelu_bandwidth=config.jumprelu_bandwidth,
        jumprelu_init_threshold=config.jumprelu_init_threshold,
        aux_k=config.aux_k,
        aux_coefficient=config.aux_coefficient,
        model_name=str(meta.get("model", "")),
        dtype=config.dtype,
        metadata={k: v for k, v in meta.items() if k != "model"},
    )


def open_source(config: TrainSAEConfig, hooks: list[str]) -> tuple[Any, dict[str, Any]]:
    """The activation source and metadata about it (model, context size, BOS policy, dataset)."""
    from ..dictionary.store import DiskStore, MaskConfig, StreamingSource

    if config.store is not None:
        store = DiskStore(config.store)
        missing = [h for h in hooks if h not in store.hooks]
        if missing:
            raise MechscopeError(
                f"the store {config.store} has no hooks {missing} (it holds {list(store.hooks)})"
            )
        s = store.settings
        meta = {"model": s.get("model", ""), "store": str(config.store)}
        meta.update({k: s[k] for k in ("ctx_len", "bos", "source") if k in s})
        return store, meta
    from ..data import TokenStream, open_documents
    from ..models import load_model

    model = load_model(config.model, device=config.train.device)
    docs = open_documents(config.corpus, field=config.text_field)
    stream = TokenStream(docs, model, ctx_len=config.ctx_len, bos=config.bos_policy)
    # rows per pass: the training tokens plus slack for masked BOS tokens and the last context
    per_ctx = config.ctx_len - (1 if config.mask_bos and config.bos_policy == "bos" else 0)
    n_tokens = math.ceil(config.train.total_tokens * config.ctx_len / max(1, per_ctx)) + 2 * config.ctx_len
    source = StreamingSource(
        model, stream, hooks, n_tokens=n_tokens, buffer_tokens=config.buffer_tokens,
        batch_size=config.model_batch_size, mask=MaskConfig(bos=config.mask_bos),
    )  # fmt: skip
    meta = {"model": config.model, "ctx_len": config.ctx_len, "bos": config.bos_policy, "source": docs.name}
    return source, meta


def run_train_sae(config: TrainSAEConfig, progress: Callable[[str], None] | None = None) -> TrainResult:
    """Train the dictionary ``config`` describes; returns the trainer's result (saved paths included)."""
    say = progress or (lambda _msg: None)
    hooks = [config.hook] + ([config.hook_out] if config.hook_out and config.hook_out != config.hook else [])
    say(
        "opening activations "
        + (f"from {config.store}" if config.store else f"of {config.model} on {config.corpus}")
    )
    source, meta = open_source(config, hooks)
    d_in, d_out = source.d(config.hook), source.d(hooks[-1])
    dcfg = dictionary_config(config, d_in, d_out, meta)
    say(f"training {dcfg.architecture} d_in={d_in} d_sae={dcfg.d_sae} on {', '.join(hooks)}")
    name = config.name or f"{dcfg.architecture}-{config.hook}"
    result = train(dcfg, source, config.train, names=[name])
    for n, path in result.paths.items():
        say(f"saved {n} to {path}")
    return result
