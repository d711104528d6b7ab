"""Toy Models of Superposition (Elhage et al. 2022, https://transformer-circuits.pub/2022/toy_model).

The model compresses ``n`` sparse features into ``m < n`` hidden dimensions and reads them back:

1. Features ``x in R^n``: each feature is independently 0 with probability ``1 - p`` and else drawn from
   ``U[0, 1]``. ``p`` is the **feature probability**; the paper's **sparsity** is ``S = 1 - p``.
2. Hidden ``h = W x`` with ``W in R^{m x n}``; output ``x' = ReLU(W^T W x + b)``.
3. Loss: importance-weighted MSE, ``L = E_x sum_i I_i (x_i - x'_i)^2`` with ``I_i = base^i``.
4. Many *instances* (one per feature probability and seed) train at once: every tensor carries a leading
   instance axis and one Adam step updates all of them (no Python loops over examples or instances).

Analysis, with ``W_i`` the column of feature ``i`` and ``W_i_hat = W_i / ||W_i||``:

- per-feature norm ``||W_i||`` (about 1: represented, about 0: dropped);
- interference ``sum_{j != i} (W_i_hat . W_j)^2``;
- dimensions per feature ``D* = m / ||W||_F^2``;
- feature dimensionality ``D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2``; ``0 <= D_i <= 1`` and
  ``sum_i D_i <= rank(W) <= m`` (Cauchy-Schwarz against ``G = W W^T``), with equality for a tight frame.

Index conventions: ``instance`` (I), ``batch`` (B), ``feature`` (n), ``hidden`` (m). ``W`` is stored as
``[instance, hidden, feature]`` and ``b`` as ``[instance, feature]``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save
from torch import Tensor
from tqdm.auto import tqdm

from .._fs import atomic_write_bytes, atomic_write_json
from ..errors import MechscopeError

__all__ = [
    "TMSConfig",
    "TMSError",
    "TMSModel",
    "TMSResult",
    "dimensions_per_feature",
    "feature_dimensionality",
    "feature_norms",
    "generate_sparse_features",
    "interference",
    "load_tms",
    "save_tms",
    "train_superposition",
]

_EPS = 1e-12


class TMSError(MechscopeError):
    """A toy-superposition config, tensor or saved run that cannot be used as given."""


@dataclass(frozen=True)
class TMSConfig:
    """One vectorised training run: an instance for every (feature probability, seed) pair."""

    n_features: int = 5
    """``n``: number of input features."""
    n_hidden: int = 2
    """``m``: hidden dimensions the features are compressed into."""
    feature_probability: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03, 0.01)
    """Probability ``p`` that a feature is non-zero (sparsity ``S = 1 - p``); one group of instances each."""
    n_seeds: int = 2
    """Instances per feature probability, each with its own initialisation (pick the best by loss)."""
    importance_base: float = 0.9
    """Importance of feature ``i`` is ``importance_base ** i``; 1.0 gives uniform importance."""
    steps: int = 10_000
    """Adam steps; every step draws a fresh batch for every instance."""
    batch_size: int = 1024
    """Examples per instance and step."""
    lr: float = 1e-3
    """Adam peak learning rate (the paper's notebook: 1e-3, constant)."""
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Learning-rate multiplier over training: constant, linear decay to 0, or cosine decay to 0."""
    seed: int = 0
    """Seed of the generator that draws the initial weights and every batch."""
    log_every: int = 100
    """Record the per-instance loss every this many steps."""

    def __post_init__(self) -> None:
        if self.n_features < 1 or self.n_hidden < 1:
            raise TMSError(f"n_features and n_hidden must be >= 1, got {self.n_features}, {self.n_hidden}")
        if not self.feature_probability or not all(0 < p <= 1 for p in self.feature_probability):
            raise TMSError(
                f"feature_probability must be non-empty values in (0, 1], got {self.feature_probability}"
            )
        for name in ("n_seeds", "steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise TMSError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr_schedule not in ("constant", "linear", "cosine"):
            raise TMSError(f"lr_schedule must be 'constant', 'linear' or 'cosine', got {self.lr_schedule!r}")
        if not self.lr > 0 or not self.importance_base > 0:
            raise TMSError(f"lr and importance_base must be > 0, got {self.lr}, {self.importance_base}")

    def lr_scale(self, step: int) -> float:
        """Multiplier of ``lr`` at ``step`` (0-based) under ``lr_schedule``."""
        frac = step / self.steps
        if self.lr_schedule == "linear":
            return 1.0 - frac
        if self.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * frac))
        return 1.0

    @property
    def n_instances(self) -> int:
        """Total instances: ``len(feature_probability) * n_seeds``."""
        return len(self.feature_probability) * self.n_seeds

    def importance(self) -> Tensor:
        """``[feature]`` importance ``base ** i``."""
        return self.importance_base ** torch.arange(self.n_features, dtype=torch.float32)

    def instance_probability(self) -> Tensor:
        """``[instance]`` feature probability of each instance (probability-major, seeds inner)."""
        p = torch.tensor(self.feature_probability, dtype=torch.float64)
        return p.repeat_interleave(self.n_seeds)


class TMSModel(torch.nn.Module):
    """``x' = ReLU(W^T W x + b)`` for ``I`` independent instances at once."""

    def __init__(self, n_instances: int, n_features: int, n_hidden: int, generator: torch.Generator):
        super().__init__()
        std = math.sqrt(2.0 / (n_features + n_hidden))  # Xavier normal, as in the paper's notebook
        w = torch.randn(n_instances, n_hidden, n_features, generator=generator) * std
        self.W = torch.nn.Parameter(w)  # [instance, hidden, feature]
        self.b = torch.nn.Parameter(torch.zeros(n_instances, n_features))  # [instance, feature]

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[batch, instance, feature]`` -> reconstruction of the same shape."""
        h = torch.einsum("bin,imn->bim", x, self.W)  # [batch, instance, hidden]
        out = torch.einsum("bim,imn->bin", h, self.W)  # [batch, instance, feature]
        return torch.relu(out + self.b)


def generate_sparse_features(
    batch_size: int, probability: Tensor, n_features: int, generator: torch.Generator
) -> Tensor:
    """``[batch, instance, feature]`` features: 0 with probability ``1 - p`` (per instance), else ``U[0, 1]``."""
    shape = (batch_size, probability.shape[0], n_features)
    values = torch.rand(shape, generator=generator)
    present = torch.rand(shape, generator=generator) < probability[None, :, None]
    return values * present


@dataclass(frozen=True)
class TMSResult:
    """Trained weights of every instance with what is needed to read them."""

    config: TMSConfig
    """The config that produced the run."""
    W: Tensor
    """``[instance, hidden, feature]`` trained embedding."""
    b: Tensor
    """``[instance, feature]`` trained output bias."""
    loss: Tensor
    """``[instance]`` importance-weighted loss, averaged over the last ``log_every`` steps."""
    loss_curve: Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    """``[log_point, instance]`` loss averaged over each ``log_every`` steps."""

    @property
    def probability(self) -> Tensor:
        """``[instance]`` feature probability ``p`` of each instance."""
        return self.config.instance_probability()

    @property
    def importance(self) -> Tensor:
        """``[feature]`` feature importance."""
        return self.config.importance()

    def best(self) -> TMSResult:
        """The lowest-loss seed of every feature probability, as a run with ``n_seeds = 1``."""
        s = self.config.n_seeds
        grouped = self.loss.view(-1, s)  # [probability, seed]
        idx = torch.arange(grouped.shape[0]) * s + grouped.argmin(dim=1)  # [probability]
        curve = self.loss_curve[:, idx] if self.loss_curve.numel() else self.loss_curve
        cfg = TMSConfig(**{**asdict(self.config), "n_seeds": 1})
        return TMSResult(cfg, self.W[idx], self.b[idx], self.loss[idx], curve)


def train_superposition(config: TMSConfig = TMSConfig(), progress: bool = True) -> TMSResult:
    """Train every instance of ``config`` in one vectorised Adam run on CPU; return the weights."""
    gen = torch.Generator().manual_seed(config.seed)
    model = TMSModel(config.n_instances, config.n_features, config.n_hidden, gen)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, config.lr_scale)
    prob = config.instance_probability()  # [instance]
    importance = config.importance()  # [feature]
    window = torch.zeros(config.n_instances)
    curve: list[Tensor] = []
    bar = tqdm(range(config.steps), desc="tms", disable=not progress, mininterval=0.5)
    for step in bar:
        x = generate_sparse_features(config.batch_size, prob, config.n_features, gen)
        err = (x - model(x)) ** 2 * importance  # [batch, instance, feature]
        per_instance = err.sum(-1).mean(0)  # [instance]
        opt.zero_grad(set_to_none=True)
        per_instance.sum().backward()
        opt.step()
        sched.step()
        window += per_instance.detach()
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            n = (step % config.log_every) + 1
            curve.append(window / n)
            window = torch.zeros(config.n_instances)
            bar.set_postfix(loss=f"{curve[-1].mean().item():.4g}")
    loss_curve = torch.stack(curve)  # [log_point, instance]
    return TMSResult(
        config, model.W.detach().clone(), model.b.detach().clone(), loss_curve[-1].clone(), loss_curve
    )


# ------------------------------------------------------------------------------ analysis


def _as_instances(W: Tensor) -> Tensor:
    """Accept ``[hidden, feature]`` or ``[instance, hidden, feature]``; return the latter."""
    if W.ndim not in (2, 3):
        raise TMSError(
            f"W must be [hidden, feature] or [instance, hidden, feature], got shape {tuple(W.shape)}"
        )
    W = W.detach().to(torch.promote_types(W.dtype, torch.float32))  # at least fp32; fp64 stays fp64
    return W[None] if W.ndim == 2 else W


def _squeeze_like(W: Tensor, out: Tensor) -> Tensor:
    return out[0] if W.ndim == 2 else out


def feature_norms(W: Tensor) -> Tensor:
    """``[instance, feature]`` (or ``[feature]``) column norms ``||W_i||``."""
    return _squeeze_like(W, _as_instances(W).norm(dim=-2))


def _projections(W: Tensor) -> Tensor:
    """``[instance, feature_i, feature_j]`` squared projections ``(W_i_hat . W_j)^2`` (0 for ``W_i = 0``)."""
    w = _as_instances(W)
    w_hat = w / w.norm(dim=-2, keepdim=True).clamp_min(_EPS)  # [instance, hidden, feature]
    return torch.einsum("ami,amj->aij", w_hat, w).pow(2)


def interference(W: Tensor) -> Tensor:
    """``[instance, feature]`` superposition interference ``sum_{j != i} (W_i_hat . W_j)^2``."""
    proj = _projections(W)  # [instance, feature_i, feature_j]
    off = proj.sum(-1) - proj.diagonal(dim1=-2, dim2=-1)
    return _squeeze_like(W, off)


def dimensions_per_feature(W: Tensor) -> Tensor:
    """``[instance]`` (or scalar) ``D* = m / ||W||_F^2``: hidden dimensions spent per feature."""
    w = _as_instances(W)
    m = w.shape[-2]
    return _squeeze_like(W, m / w.pow(2).sum(dim=(-2, -1)).clamp_min(_EPS))


def feature_dimensionality(W: Tensor) -> Tensor:
    """``[instance, feature]`` ``D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2`` (0 for a dropped feature)."""
    w = _as_instances(W)
    sq_norm = w.pow(2).sum(dim=-2)  # [instance, feature]
    denom = _projections(w).sum(-1)  # [instance, feature]; includes j = i, which equals ||W_i||^2
    return _squeeze_like(W, sq_norm / denom.clamp_min(_EPS))


# ------------------------------------------------------------------------------ files


def save_tms(result: TMSResult, path: str | Path) -> Path:
    """Save ``result`` as ``cfg.json`` plus ``tms.safetensors`` in directory ``path`` (each file atomically)."""
    path = Path(path)
    tensors = {"W": result.W, "b": result.b, "loss": result.loss, "loss_curve": result.loss_curve}
    atomic_write_bytes(
        path / "tms.safetensors", save({k: v.detach().clone().contiguous() for k, v in tensors.items()})
    )
    atomic_write_json(path / "cfg.json", {"kind": "tms", "config": asdict(result.config)})
    return path


def load_tms(path: str | Path) -> TMSResult:
    """Rebuild a :class:`TMSResult` from the files :func:`save_tms` wrote; fail loudly on a mismatch."""
    path = Path(path)
    cfg_file, weights = path / "cfg.json", path / "tms.safetensors"
    if not cfg_file.is_file() or not weights.is_file():
        raise TMSError(f"{path} is not a saved TMS run (needs cfg.json and tms.safetensors)")
    meta = json.loads(cfg_file.read_text())
    raw = dict(meta.get("config", {}))
    raw["feature_probability"] = tuple(raw.get("feature_probability", ()))
    try:
        cfg = TMSConfig(**raw)
    except TypeError as e:
        raise TMSError(f"{cfg_file}: config fields do not match TMSConfig: {e}") from e
    t = load_file(str(weights))
    expect = {
        "W": (cfg.n_instances, cfg.n_hidden, cfg.n_features),
        "b": (cfg.n_instances, cfg.n_features),
        "loss": (cfg.n_instances,),
    }
    for key, shape in expect.items():
        if key not in t or tuple(t[key].shape) != shape:
            got = tuple(t[key].shape) if key in t else "missing"
            raise TMSError(f"{weights}: tensor {key!r} is {got}, expected {shape} from cfg.json")
    return TMSResult(cfg, t["W"], t["b"], t["loss"], t.get("loss_curve", torch.zeros(0, 0)))
