"""Linear probes for a labelled concept on any hook, the best single dictionary feature for
comparison, and a monitor that flags tokens while the model generates.

1. :func:`collect`: one activation per text at a hook (its last token, or the mean over its
   tokens), ``X [n, d_model]``.
2. :func:`train_probe`: logistic regression on a seeded train/validation split (full-batch
   L-BFGS, L2 penalty), inputs standardised with the training set's mean and spread; the
   exported direction is in raw activation space: ``score(x) = x · direction + bias``.
   Reports train/validation accuracy and validation AUROC.
3. :func:`best_feature`: the dictionary feature whose activation best separates the classes on
   the same validation split (AUROC, either sign), to compare with the probe.
4. :func:`monitor`: greedy generation with a hook that scores every new token with a probe
   (or a feature's activation) and flags those above a threshold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import Tensor

from .._fs import atomic_write_bytes, atomic_write_json
from ..dictionary.base import Dictionary
from ..errors import ArtifactError, MechscopeError
from ..models import HookedModel


def collect(model: HookedModel, texts: Sequence[str], hook: str, reduce: str = "last") -> Tensor:  # [n, d]
    """One activation per text at ``hook``: its last token's (``"last"``) or the mean over its tokens."""
    if reduce not in ("last", "mean"):
        raise MechscopeError(f"reduce must be 'last' or 'mean', not {reduce!r}")
    rows = []
    for text in texts:
        _, cache = model.run_with_cache(text, names=[hook], return_logits=False)
        acts = cache[hook][0].float()  # [pos, d]
        rows.append(acts[-1] if reduce == "last" else acts.mean(0))
    return torch.stack(rows)


def auroc(scores: Tensor, labels: Tensor) -> float:
    """Probability that a positive outscores a negative (ties count half)."""
    pos, neg = scores[labels.bool()].double(), scores[~labels.bool()].double()
    if len(pos) == 0 or len(neg) == 0:
        raise MechscopeError("AUROC needs both classes")
    greater = (pos[:, None] > neg[None]).double().sum() + 0.5 * (pos[:, None] == neg[None]).double().sum()
    return float(greater / (len(pos) * len(neg)))


def split(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded train and validation indices."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(val_fraction * n))
    return perm[n_val:], perm[:n_val]


@dataclass(frozen=True)
class Probe:
    """A linear probe: ``score(x) = x · direction + bias`` (positive: the concept is present)."""

    hook: str
    """Where it reads."""
    direction: Tensor
    """``[d_model]`` in raw activation space (the standardisation folded in)."""
    bias: float
    """Offset of the score."""
    train_accuracy: float
    """Accuracy on the training split."""
    val_accuracy: float
    """Accuracy on the validation split."""
    val_auroc: float
    """AUROC of the score on the validation split."""

    def score(self, x: Tensor) -> Tensor:  # [..., d] -> [...]
        """The probe's logit."""
        return x.float() @ self.direction + self.bias

    def save(self, path: str | Path) -> Path:
        """``probe.safetensors`` + ``probe.json`` in directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path / "probe.safetensors", save({"direction": self.direction.contiguous()}))
        meta = {k: v for k, v in asdict(self).items() if k != "direction"}
        atomic_write_json(path / "probe.json", {"kind": "probe", **meta})
        return path

    @classmethod
    def load(cls, path: str | Path) -> Probe:
        """Read a saved probe."""
        path = Path(path)
        try:
            meta = json.loads((path / "probe.json").read_text())
            direction = load_file(str(path / "probe.safetensors"))["direction"]
        except (OSError, ValueError, KeyError) as e:
            raise ArtifactError(f"{path} is not a readable probe: {e}") from e
        meta.pop("kind", None)
        return cls(direction=direction, **meta)


def train_probe(
    x: Tensor, labels: Tensor, hook: str, val_fraction: float = 0.25, seed: int = 0, l2: float = 1e-2
) -> Probe:
    """Logistic regression of ``labels [n]`` (bool) on ``x [n, d]``; see the module docstring."""
    y = labels.bool()
    if x.dim() != 2 or len(x) != len(y):
        raise MechscopeError(f"probe inputs must be [n, d] with n labels, got {tuple(x.shape)} and {len(y)}")
    train, val = split(len(x), val_fraction, seed)
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-6)
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")
    target = y[train].float()

    def closure() -> Tensor:
        opt.zero_grad()
        logits = z[train] @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    direction = (w / std).detach()
    bias = float(b.detach() - (mean * direction).sum())
    scores = x.float() @ direction + bias
    acc = lambda idx: float(((scores[idx] > 0) == y[idx]).float().mean())  # noqa: E731
    return Probe(hook, direction, bias, acc(train), acc(val), auroc(scores[val], y[val]))


def best_feature(
    dictionary: Dictionary, x: Tensor, labels: Tensor, val_fraction: float = 0.25, seed: int = 0
) -> tuple[int, float]:
    """The feature (and its validation AUROC, either sign) that best separates the classes."""
    _, val = split(len(x), val_fraction, seed)
    with torch.no_grad():
        f = dictionary.encode(x[val].to(dictionary.W_dec.dtype)).float()  # [n_val, d_sae]
    y = labels.bool()[val]
    best, best_auc = -1, -1.0
    for i in torch.nonzero(f.std(0) > 0).flatten().tolist():
        a = auroc(f[:, i], y)
        a = max(a, 1 - a)
        if a > best_auc:
            best, best_auc = i, a
    if best < 0:
        raise MechscopeError("no feature varies on the validation texts")
    return best, best_auc


@dataclass(frozen=True)
class Flag:
    """One generated-or-prompt token and its monitor score."""

    position: int
    """Position in the whole sequence."""
    token: str
    """The token's text."""
    score: float
    """The probe's logit (or the feature's activation) at this token."""
    flagged: bool
    """Whether the score is above the threshold."""


@dataclass(frozen=True)
class Monitored:
    """A monitored generation."""

    text: str
    """Prompt and continuation."""
    ids: Tensor
    """Their token ids ``[pos]``."""
    flags: list[Flag]
    """One per token the model read (every token but the last generated one)."""

    @property
    def flagged(self) -> list[Flag]:
        """The tokens above the threshold."""
        return [f for f in self.flags if f.flagged]


def monitor(
    model: HookedModel, prompt: str, probe: Probe, threshold: float = 0.0, max_new_tokens: int = 20
) -> Monitored:
    """Generate greedily from ``prompt``; score every token the model reads (the prompt and each
    generated token but the last) at the probe's hook, and flag scores above ``threshold``."""
    scores: list[Tensor] = []

    def record(t: Tensor, point: Any) -> None:  # [1, new positions, d]
        scores.append(probe.score(t[0].detach()))

    ids = model.generate(
        model.to_tokens(prompt), max_new_tokens=max_new_tokens, fwd_hooks=[(probe.hook, record)]
    )
    assert isinstance(ids, Tensor)
    flat = torch.cat(scores)[: ids.shape[1]]
    tokens = [str(model.to_string(t[None])) for t in ids[0]]
    flags = [
        Flag(i, tok, float(s), float(s) > threshold)
        for i, (tok, s) in enumerate(zip(tokens, flat, strict=False))
    ]
    return Monitored(str(model.to_string(ids[0])), ids[0], flags)
