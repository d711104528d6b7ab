"""The model behind ``mechscope serve --model``: prompt, attention, logit-lens and steering views.

The server never imports a model; it is handed a :class:`ModelBackend` (duck-typed) whose
methods return the JSON the components draw (``docs/ui-components.md``): tensors as base64
float32, only summaries (top-k tokens and features), never full logits or a whole dictionary.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .._fs import atomic_write_json
from ..errors import MechscopeError
from ..models import HookedModel, load_model
from ..viz.widgets import tensor_json

MAX_TOKENS = 128
"""Longest prompt the views accept (the browser never gets more than this many positions)."""


class ModelBackend:
    """A loaded model (and optionally a dictionary) answering the UI's model views, one call at a time."""

    def __init__(
        self, model: str | HookedModel, sae: str | Path | None = None, device: str | None = None
    ) -> None:
        self.model = model if isinstance(model, HookedModel) else load_model(model, device=device)
        self.dictionary = None
        if sae is not None:
            from ..dictionary.io import load_dictionary

            self.dictionary = load_dictionary(sae).to(self.model.device)
        self._lock = threading.Lock()  # the model is not re-entrant

    @property
    def name(self) -> str:
        """The model's name."""
        return self.model.cfg.name

    def _tokens(self, text: str) -> list[str]:
        if not text:
            raise MechscopeError("the prompt is empty")
        toks = [str(t) for t in self.model.to_str_tokens(text)]
        if len(toks) > MAX_TOKENS:
            raise MechscopeError(f"the prompt has {len(toks)} tokens; the views take at most {MAX_TOKENS}")
        return toks

    def _strings(self, ids: torch.Tensor) -> list[str]:
        return [str(self.model.to_string([int(i)])) for i in ids.reshape(-1)]

    def prompt(self, text: str, top_k: int = 10, n_features: int = 5) -> dict[str, Any]:
        """Tokens, the top next tokens after the prompt, and the top features per token (with a dictionary)."""
        toks = self._tokens(text)
        with self._lock, torch.no_grad():
            names = [self.dictionary.config.hook_name] if self.dictionary is not None else []
            logits, cache = self.model.run_with_cache(text, names=names)
            assert logits is not None
            probs = logits[0, -1].float().softmax(-1)
            p, ids = probs.topk(top_k)
            out: dict[str, Any] = {"model": self.name, "tokens": toks,
                                   "next": [{"token": t, "prob": float(q)} for t, q in zip(self._strings(ids), p)]}  # fmt: skip
            if self.dictionary is not None:
                x = cache[names[0]][0]
                f = self.dictionary.encode(x.to(self.dictionary.W_dec.dtype)).float()  # [pos, d_sae]
                v, i = f.topk(n_features, dim=-1)
                out["hook"] = names[0]
                out["features"] = [[{"feature": int(a), "activation": float(b)} for a, b in zip(ii, vv) if b > 0]
                                   for ii, vv in zip(i.tolist(), v.tolist())]  # fmt: skip
        return out

    def attention(self, text: str, layer: int) -> dict[str, Any]:
        """Every head's pattern at ``layer``: ``{tokens, patterns [heads, q, k], layer, heads}``."""
        toks = self._tokens(text)
        if not 0 <= layer < self.model.cfg.n_layers:
            raise MechscopeError(f"layer {layer} is out of range: the model has {self.model.cfg.n_layers}")
        name = f"blocks.{layer}.attn.hook_pattern"
        with self._lock, torch.no_grad():
            _, cache = self.model.run_with_cache(
                text, names=[name], stop_at_layer=layer + 1, return_logits=False
            )
        pattern = cache[name][0]  # [heads, q, k]
        heads = [f"L{layer}H{h}" for h in range(pattern.shape[0])]
        return {"tokens": toks, "patterns": tensor_json(pattern), "layer": layer, "heads": heads}

    def lens(
        self, text: str, statistic: str = "prob", answer: str | None = None, top_k: int = 5
    ) -> dict[str, Any]:
        """A layer x position logit-lens heat map: the answer's probability or rank, or the top token's
        probability when no answer is given, with the top-k tokens of every cell as hover text."""
        if statistic not in ("prob", "rank", "logprob"):
            raise MechscopeError(f"statistic must be prob, rank or logprob, not {statistic!r}")
        toks = self._tokens(text)
        n = self.model.cfg.n_layers
        names = [f"blocks.{i}.hook_resid_pre" for i in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
        with self._lock, torch.no_grad():
            _, cache = self.model.run_with_cache(text, names=names, return_logits=False)
            lp = (
                self.model.unembed(cache.accumulated_resid()[:, 0]).float().log_softmax(-1)
            )  # [point, pos, vocab]
        top_p, top_i = lp.exp().topk(top_k, dim=-1)
        if answer is not None:
            aid = self.model.to_single_token(answer)
            values = {
                "prob": lp[..., aid].exp(),
                "logprob": lp[..., aid],
                "rank": (lp > lp[..., aid : aid + 1]).sum(-1).float(),
            }[statistic]
        else:
            values = {
                "prob": top_p[..., 0],
                "logprob": top_p[..., 0].log(),
                "rank": torch.zeros_like(top_p[..., 0]),
            }[statistic]
        hover = [[", ".join(f"{s!r} {q:.2f}" for s, q in zip(self._strings(top_i[a, b]), top_p[a, b].tolist()))
                  for b in range(len(toks))] for a in range(len(names))]  # fmt: skip
        rows = [f"resid_pre {i}" for i in range(n)] + [f"resid_post {n - 1}"]
        metric = f"{statistic} of {answer!r}" if answer is not None else f"{statistic} of the top token"
        return {"values": tensor_json(values), "rows": rows, "cols": [f"{i}: {t}" for i, t in enumerate(toks)],
                "hover": hover, "metric": metric, "title": f"logit lens · {metric}"}  # fmt: skip

    def steer(
        self,
        text: str,
        features: Mapping[int, float],
        mode: str = "add",
        max_new_tokens: int = 16,
        out_dir: Path | None = None,
    ) -> dict[str, Any]:
        """Greedy generations without and with the features steered; saved as a run when ``out_dir`` is given."""
        from ..steering import steer_features

        if self.dictionary is None:
            raise MechscopeError("steering needs a dictionary: start the server with --sae")
        self._tokens(text)
        if not 1 <= max_new_tokens <= 64:
            raise MechscopeError("max_new_tokens must be between 1 and 64")
        hook = steer_features(self.dictionary, {int(k): float(v) for k, v in features.items()}, mode)
        with self._lock, torch.no_grad():
            before = str(self.model.generate(text, max_new_tokens=max_new_tokens))
            after = str(self.model.generate(text, max_new_tokens=max_new_tokens, fwd_hooks=[hook]))
        zero = mode == "add" and all(float(v) == 0.0 for v in features.values())
        result = {"kind": "steering-run", "schema_version": 1, "model": self.name, "prompt": text,
                  "features": {str(k): float(v) for k, v in features.items()}, "mode": mode,
                  "before": before, "after": after, "identity": zero and before == after,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
        if out_dir is not None:
            run = (
                Path(out_dir)
                / f"steer-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"  # never reused
            )
            atomic_write_json(run / "meta.json", result)
            result["saved"] = str(run)
        return result


__all__ = ["MAX_TOKENS", "ModelBackend"]
