"""``mechscope demo``: a small end-to-end run that writes a self-contained artifact.

1. Load the model (default: the built-in SmolLM2-135M-Instruct).
2. Run a handful of factual prompts in one batch; record each one's top-k next tokens,
   their probabilities, and the expected answer's rank and probability at the last position.
3. Compute the logit lens (nostalgebraist, 2020) of one prompt at its last token, and the
   expected answer's rank and probability at each of the ``n_layers + 1`` residual points.
4. Write the run directory ``<out>/demo-<YYYYmmdd-HHMMSS>/`` (DESIGN §4):

   * ``meta.json``: kind, schema version, versions, time, config, model id, seed;
   * ``lens.safetensors``: ``answer_rank [point]``, ``answer_prob [point]``,
     ``top_ids [point k]``, ``top_probs [point k]``;
   * ``results.json``: the factual table, the lens labels and every token as a string;
   * ``lens.png``: the answer's probability and rank across layers, drawn from the files above;
   * ``index.html``: the page, rendered from the files above, written last.

Index conventions: lens point ``i < n_layers`` is ``blocks.i.hook_resid_pre`` (the residual
stream before block ``i``); the last point is ``blocks.{n_layers-1}.hook_resid_post``, so
its prediction is exactly the model's output. Ranks count from 0 (0 = top-1).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from .._fs import atomic_write_bytes, atomic_write_json
from .._version import __version__
from ..errors import MechscopeError
from ..interventions import logit_lens
from ..models import DEFAULT_MODEL, HookedModel, load_model
from ..models.zoo import builtin_revision
from ..report.demo_page import SCHEMA_VERSION, draw_lens_png, render_demo
from .features_stage import FeaturesStageConfig
from .sae_stage import SAEStageConfig

__all__ = ["DEFAULT_PROMPTS", "DemoConfig", "FactualPrompt", "factual_table", "lens_record", "run_demo"]

Progress = Callable[[str], None]
"""A callback that receives one progress line at a time."""


@dataclass(frozen=True)
class FactualPrompt:
    """A prompt whose next token should be a known answer."""

    prompt: str
    """Text given to the model; the prediction is read after its last token."""
    answer: str
    """The expected next token, one token with its leading space (e.g. ``" Paris"``)."""


DEFAULT_PROMPTS: tuple[FactualPrompt, ...] = (
    FactualPrompt("The Eiffel Tower is located in the city of", " Paris"),
    FactualPrompt("The Colosseum is located in the city of", " Rome"),
    FactualPrompt("Big Ben is located in the city of", " London"),
    FactualPrompt("The Brandenburg Gate is located in the city of", " Berlin"),
    # " New York" is two tokens; the answer is its first token.
    FactualPrompt("The Statue of Liberty is located in the city of", " New"),
)


@dataclass(frozen=True)
class DemoConfig:
    """What ``mechscope demo`` runs and where it writes."""

    model: str = DEFAULT_MODEL
    """Model to load: a built-in name, a ``.gguf`` file, a local HF directory or a hub id."""
    out: Path = Path("runs")
    """Directory under which the run directory ``demo-<YYYYmmdd-HHMMSS>`` is created."""
    prompts: tuple[FactualPrompt, ...] = DEFAULT_PROMPTS
    """Factual prompts and their expected one-token answers."""
    lens_prompt: str = "The Eiffel Tower is located in the city of"
    """Prompt whose logit lens is computed at its last token."""
    lens_answer: str = " Paris"
    """One-token answer followed through the lens."""
    top_k: int = 5
    """Number of top next tokens recorded per factual prompt and per lens point."""
    device: str | None = None
    """Device for the model; ``None`` picks CUDA when available, else CPU."""
    seed: int = 0
    """Recorded in ``meta.json``; the demo draws no random numbers (greedy read-outs only)."""
    localise: bool = True
    """Also localise IOI and factual recall (patching, attribution) and add them to the page."""
    localise_n: int = 8
    """Prompts per task in the localisation stage."""
    circuit: bool = True
    """Also find the IOI circuit with EAP-IG (faithfulness curve, graph, top edges checked exactly)."""
    sae: bool = True
    """Also train and evaluate a TopK SAE on the middle residual stream and add it to the page."""
    sae_config: SAEStageConfig = dataclasses.field(default_factory=SAEStageConfig)
    """The SAE stage's settings (layer, width, k, training tokens, evaluation contexts)."""
    features: bool = True
    """Also find the SAE features most active on the factual prompts: statistics, explanations,
    scores, report cards, dashboards and a steering example (needs the SAE stage)."""
    features_config: FeaturesStageConfig = dataclasses.field(default_factory=FeaturesStageConfig)
    """The features stage's settings."""


def run_demo(config: DemoConfig | None = None, *, progress: Progress | None = None) -> Path:
    """Run the demo described by ``config`` and return the complete run directory."""
    config = config or DemoConfig()
    say = progress or (lambda _msg: None)
    if not config.prompts:
        raise MechscopeError("DemoConfig.prompts is empty; give at least one factual prompt")
    if config.top_k < 1:
        raise MechscopeError(f"DemoConfig.top_k must be at least 1, got {config.top_k}")
    say(f"loading {config.model}")
    t0 = time.perf_counter()
    model = load_model(config.model, device=config.device)
    say(f"loaded {model.cfg.name} ({model.cfg.n_layers} layers) in {time.perf_counter() - t0:.1f} s")
    say(f"running {len(config.prompts)} factual prompts")
    factual = factual_table(model, config.prompts, config.top_k)
    say(f"computing the logit lens of {config.lens_prompt!r}")
    tensors, lens_json = lens_record(model, config.lens_prompt, config.lens_answer, config.top_k)

    run_dir = _new_run_dir(Path(config.out))
    say(f"writing {run_dir}")
    atomic_write_json(run_dir / "meta.json", _meta(config, model))
    atomic_write_bytes(run_dir / "lens.safetensors", save(tensors, metadata={"kind": "demo-lens"}))
    atomic_write_json(run_dir / "results.json", {"factual": factual, "lens": lens_json})
    draw_lens_png(run_dir)
    if config.localise:
        from .localise import localise

        localise(model, run_dir, n=config.localise_n, say=say)
    if config.circuit:
        from .circuit_stage import circuit_stage

        circuit_stage(model, run_dir, n=config.localise_n, say=say)
    if config.sae:
        from .sae_stage import sae_stage

        sae = sae_stage(model, run_dir, config.sae_config, say)
        if config.features:
            from ..dictionary.io import load_dictionary
            from .features_stage import features_stage

            dictionary = load_dictionary(run_dir / sae["dictionary"]).to(model.device)
            prompts = [p.prompt for p in config.prompts]
            features_stage(model, dictionary, run_dir, prompts, config.features_config, say)
    render_demo(run_dir)  # index.html last: its presence marks a complete run
    return run_dir


def factual_table(model: HookedModel, prompts: tuple[FactualPrompt, ...], top_k: int) -> list[dict[str, Any]]:
    """One row per prompt: the top-``top_k`` next tokens and the expected answer's rank and probability."""
    answer_ids = torch.tensor([model.to_single_token(p.answer) for p in prompts])  # [batch]
    batch = model.tokenize([p.prompt for p in prompts])
    with torch.no_grad():
        logits = model(batch)  # [batch pos d_vocab]
    rows = torch.arange(len(prompts), device=logits.device)
    last = logits[rows, batch.last_positions.to(logits.device)].float().cpu()  # [batch d_vocab]
    probs = last.softmax(-1)  # [batch d_vocab]
    top_p, top_i = probs.topk(top_k, dim=-1)  # [batch k] each
    target = last.gather(-1, answer_ids[:, None])  # [batch 1]
    ranks = (last > target).sum(-1)  # [batch]
    table = []
    for b, p in enumerate(prompts):
        table.append(
            {
                "prompt": p.prompt,
                "answer": p.answer,
                "answer_id": int(answer_ids[b]),
                "answer_rank": int(ranks[b]),
                "answer_prob": float(probs[b, answer_ids[b]]),
                "correct": int(ranks[b]) == 0,
                "top": [
                    {"token": _tok(model, int(i)), "id": int(i), "prob": float(q)}
                    for q, i in zip(top_p[b], top_i[b])
                ],
            }
        )
    return table


def lens_record(
    model: HookedModel, prompt: str, answer: str, top_k: int
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The logit lens of ``prompt``: tensors for ``lens.safetensors`` and labels for ``results.json``."""
    answer_id = model.to_single_token(answer)
    with torch.no_grad():
        lens = logit_lens(model, prompt)
    rank = lens.rank(answer_id)[:, 0].cpu()  # [point]
    prob = lens.prob(answer_id)[:, 0].float().cpu()  # [point]
    top_p, top_i = lens.top(top_k)  # [point batch k] each
    top_p, top_i = top_p[:, 0].float().cpu(), top_i[:, 0].cpu()  # [point k] each
    tensors = {
        "answer_rank": rank.long().contiguous(),
        "answer_prob": prob.contiguous(),
        "top_ids": top_i.long().contiguous(),
        "top_probs": top_p.contiguous(),
    }
    labels = {
        "prompt": prompt,
        "answer": answer,
        "answer_id": answer_id,
        "position": int(lens.positions[0]),
        "str_tokens": model.to_str_tokens(prompt),
        "labels": list(lens.labels),
        "top_tokens": [[_tok(model, int(i)) for i in row] for row in top_i],
    }
    return tensors, labels


def _tok(model: HookedModel, token_id: int) -> str:
    return str(model.to_string([token_id]))


def _new_run_dir(out: Path) -> Path:
    """Create and return a fresh ``demo-<timestamp>`` directory; never reuse an existing one."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = out / (f"demo-{stamp}" if n == 1 else f"demo-{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise MechscopeError(f"could not create a new run directory under {out}")


def _meta(config: DemoConfig, model: HookedModel) -> dict[str, Any]:
    c = model.cfg
    return {
        "kind": "demo",
        "schema_version": SCHEMA_VERSION,
        "mechscope_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": _jsonable(dataclasses.asdict(config)),
        "model": {
            "id": config.model,
            "revision": builtin_revision(config.model),
            "family": c.family,
            "n_layers": c.n_layers,
            "d_model": c.d_model,
            "d_vocab": c.d_vocab,
        },
        "seed": config.seed,
        "device": str(model.device),
        "torch_version": torch.__version__,
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj
