"""The engine behind :func:`mechscope.dictionary.train.train` (one run on one rank).

The algorithm, the checkpoint contents and the distributed modes are described in
``train.py``, ``checkpoint.py`` and ``distributed.py``. This module holds the per-step
work: the step protocol, the all-reduced statistics vector, the non-finite guard, and the
checkpoint/resume/final-save plumbing.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._fs import atomic_write_json
from ..errors import MechscopeError
from . import checkpoint as ckpt
from . import schedule
from .base import Dictionary, DictionaryConfig
from .distributed import init_distributed
from .train import _NOT_STATE, ActivationSource, StepInfo, TrainConfig, TrainingDivergedError, TrainResult
from .train_log import MetricsLog


@dataclass
class _Slot:
    """One dictionary being trained."""

    index: int
    name: str
    d: Dictionary
    cfg: TrainConfig
    opt: torch.optim.Optimizer | None = None
    since_fired: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))

    @property
    def hook_in(self) -> str:
        return self.d.config.hook_name

    @property
    def hook_out(self) -> str:
        c = self.d.config
        return c.hook_name_out if c.hook_name_out is not None else c.hook_name

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.d.parameters() if p.requires_grad]


def _config_json(cfg: TrainConfig) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def _default_name(index: int, config: DictionaryConfig) -> str:
    hook = config.hook_name.replace("/", "_")
    return f"{index}-{config.architecture}" + (f"-{hook}" if hook else "")


def _build(item: Dictionary | DictionaryConfig, index: int, seed: int) -> Dictionary:
    if isinstance(item, Dictionary):
        return item
    try:
        from . import make_dictionary  # type: ignore[attr-defined]
    except ImportError as e:
        raise MechscopeError("no make_dictionary in mechscope.dictionary: pass Dictionary objects") from e
    d: Dictionary = make_dictionary(item)
    d.reset_parameters(generator=torch.Generator().manual_seed(seed * 1000 + index))
    return d


class Run:
    """State of one training run on one rank."""

    def __init__(
        self,
        items: list[Dictionary | DictionaryConfig],
        source: ActivationSource,
        configs: list[TrainConfig],
        names: Sequence[str] | None,
        callbacks: Sequence[Callable[[StepInfo], None]],
    ) -> None:
        self.cfg = configs[0]
        self.source = source
        self.callbacks = list(callbacks)
        self.dist, self._created_group = init_distributed(self.cfg.distributed, self.cfg.device)
        if self.dist.data_parallel and self.cfg.batch_size % self.dist.world:
            raise MechscopeError(
                f"batch_size {self.cfg.batch_size} is not divisible by {self.dist.world} ranks"
            )
        cfgs = [i.config if isinstance(i, Dictionary) else i for i in items]
        names = list(names) if names is not None else [_default_name(i, c) for i, c in enumerate(cfgs)]
        if len(set(names)) != len(names) or any("/" in n or not n for n in names):
            raise MechscopeError(f"dictionary names must be unique, non-empty and without '/': {names}")
        self.slots = [
            _Slot(i, names[i], _build(item, i, self.cfg.seed).to(self.cfg.device), configs[i])
            for i, item in enumerate(items)
            if self.dist.owns(i)
        ]
        for s in self.slots:
            s.since_fired = torch.zeros(s.d.config.d_sae, dtype=torch.int64)
            s.opt = _adam(s.params, s.cfg)
        self._check_source()
        self.total_steps = self.cfg.total_tokens // self.cfg.batch_size
        out = Path(self.cfg.output_dir)
        per_rank = self.dist.is_distributed and not self.dist.data_parallel
        self.ckpt_root = out / "checkpoints" / (f"rank-{self.dist.rank}" if per_rank else "")
        self.metrics_path = out / (f"metrics-rank{self.dist.rank}.jsonl" if per_rank else "metrics.jsonl")
        self.log: MetricsLog | None = None
        self.t0 = time.perf_counter()

    def _check_source(self) -> None:
        """Name the hooks against ``source.hooks`` when the source lists them; fill an empty hook_name."""
        known = getattr(self.source, "hooks", None)
        if known is None:
            return
        known = tuple(known)
        for s in self.slots:
            if s.hook_in == "" and len(known) == 1:
                s.d.config = dataclasses.replace(s.d.config, hook_name=known[0])
            for hook in (s.hook_in, s.hook_out):
                if hook not in known:
                    raise MechscopeError(
                        f"dictionary {s.name!r}: the source has no hook {hook!r} (it holds {list(known)})"
                    )

    @property
    def hooks(self) -> list[str] | None:
        names = {h for s in self.slots for h in (s.hook_in, s.hook_out)}
        return None if "" in names else sorted(names)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self._created_group:
            torch.distributed.destroy_process_group()

    # -- the run --------------------------------------------------------------------------

    def run(self) -> TrainResult:
        start = self._resume() if self.cfg.resume else None
        if start is None:
            self._initialise()
            start = 0
        writer = self.dist.writes_shared
        self.log = MetricsLog(
            self.metrics_path if writer else None,
            backend=self.cfg.logging if writer else "none",
            total_steps=self.total_steps,
            start_step=start,
            progress=self.cfg.progress and self.dist.rank == 0,
            run_config={s.name: _config_json(s.cfg) for s in self.slots},
        )
        rank, world = self.dist.data_slice()
        batches = self.source.batches(
            self.cfg.batch_size, seed=self.cfg.seed, start=start, rank=rank, world=world, hooks=self.hooks
        )
        step = start
        last: dict[str, dict[str, Any]] = {}
        for step in range(start, self.total_steps):
            batch = next(batches, None)
            if batch is None:
                warnings.warn(f"the source ran out after {step} of {self.total_steps} steps", stacklevel=2)
                break
            records = self._step(step, batch)
            done = step + 1
            if records:
                last.update({r["dictionary"]: r for r in records})
                self.log.log(records)
            self.log.step()
            every = self.cfg.checkpoint_every
            if every > 0 and done % every == 0 and done < self.total_steps:
                self._checkpoint(done)
            info = StepInfo(
                done, done * self.cfg.batch_size, {s.name: s.d for s in self.slots}, records or None
            )
            for cb in self.callbacks:
                cb(info)
        else:
            step = self.total_steps
        self._checkpoint(step)
        return self._finish(step, last)

    def _batch_rows(self, batch: Mapping[str, torch.Tensor], hook: str) -> torch.Tensor:
        if hook == "":
            if len(batch) != 1:
                raise MechscopeError(
                    f"the source yields hooks {sorted(batch)}: set hook_name on the dictionary"
                )
            return next(iter(batch.values()))
        if hook not in batch:
            raise MechscopeError(f"the source has no hook {hook!r} (it yields {sorted(batch)})")
        return batch[hook]

    def _inputs(self, s: _Slot, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised ``x`` ``[n, d_in]`` and ``y`` ``[n, d_out]`` in the dictionary's dtype."""
        dtype = getattr(torch, s.d.config.dtype)
        c = s.d.config.norm_scale
        x = self._batch_rows(batch, s.hook_in).to(self.cfg.device, dtype) * c
        if s.hook_out == s.hook_in:
            return x, x
        c_out = c if s.d.config.norm_scale_out is None else s.d.config.norm_scale_out
        return x, self._batch_rows(batch, s.hook_out).to(self.cfg.device, dtype) * c_out

    def _initialise(self) -> None:
        """Estimate the normalisation and set ``b_dec`` from the first ``init_batches`` global batches."""
        it = self.source.batches(self.cfg.batch_size, seed=self.cfg.seed, start=0, hooks=self.hooks)
        got: list[dict[str, torch.Tensor]] = []
        for _ in range(max(1, self.cfg.init_batches)):
            b = next(it, None)
            if b is None:
                break
            got.append(b)
        if not got:
            raise MechscopeError("the activation source yielded no batch")
        for s in self.slots:
            x = torch.cat([self._batch_rows(b, s.hook_in) for b in got]).to(torch.float64)
            c = schedule.norm_scale(x, s.cfg.normalisation)
            c_out = None
            y = x
            if s.hook_out != s.hook_in:
                y = torch.cat([self._batch_rows(b, s.hook_out) for b in got]).to(torch.float64)
                c_out = schedule.norm_scale(y, s.cfg.normalisation)
            _check_width(s, x, y)
            s.d.config = dataclasses.replace(s.d.config, norm_scale=c, norm_scale_out=c_out)
            b_dec = schedule.b_dec_init(y * (c if c_out is None else c_out), s.cfg.b_dec_init)
            with torch.no_grad():
                s.d.b_dec.copy_(b_dec.to(s.d.b_dec.dtype))

    # -- one step -------------------------------------------------------------------------

    def _step(self, step: int, batch: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
        full = (step + 1) % max(1, self.cfg.log_every) == 0 or step + 1 == self.total_steps
        records = []
        for s in self.slots:
            assert s.opt is not None
            lr = s.cfg.lr * schedule.lr_factor(
                step, self.total_steps, s.cfg.lr_warmup_steps, s.cfg.lr_decay, s.cfg.lr_decay_fraction
            )
            lam = s.cfg.sparsity_coefficient * schedule.sparsity_factor(step, s.cfg.sparsity_warmup_steps)
            x, y = self._inputs(s, batch)
            dead = s.since_fired.to(x.device) >= s.cfg.dead_window_tokens
            out = s.d.training_forward(x, y, sparsity_coefficient=lam, dead_mask=dead)
            out.loss.backward()
            self.dist.allreduce_grads_(s.params)
            terms = sorted(out.losses)
            stats = _stats(out, x, y, terms, full)
            self.dist.allreduce_sum_(stats)
            grad_norm = _grad_norm(s, s.cfg.max_grad_norm)
            self._check_finite(step, s, stats, terms, grad_norm)
            s.d.before_optimizer_step()
            for group in s.opt.param_groups:
                group["lr"] = lr
            s.opt.step()
            s.opt.zero_grad(set_to_none=True)
            s.d.after_step()
            self.dist.average_untrained_state_(s.d)
            fired = stats[-s.d.config.d_sae :] > 0
            s.since_fired += self.cfg.batch_size
            s.since_fired[fired.cpu()] = 0
            if full:
                records.append(self._record(step + 1, s, stats, terms, lr, lam, grad_norm))
        return records

    def _check_finite(
        self, step: int, s: _Slot, stats: torch.Tensor, terms: list[str], grad_norm: float
    ) -> None:
        """Raise ``TrainingDivergedError`` naming the step and the culprit (stats are all-reduced)."""
        what = None
        if stats[len(terms) + 1] > 0:
            what = f"the input activations (hook {s.hook_in!r} or {s.hook_out!r}) contain NaN or inf"
            term = "input"
        elif not math.isfinite(float(stats[0])):
            bad = [t for i, t in enumerate(terms) if not math.isfinite(float(stats[1 + i]))]
            term = ",".join(bad) or "loss"
            what = f"the loss is {float(stats[0])} (non-finite terms: {', '.join(bad) or 'none named'})"
        elif not math.isfinite(grad_norm):
            bad = [
                n
                for n, p in s.d.named_parameters()
                if p.grad is not None and not torch.isfinite(p.grad).all()
            ]
            term = "grad:" + ",".join(bad)
            what = f"the gradient is non-finite (parameters: {', '.join(bad)})"
        if what is None:
            return
        last = ckpt.latest(self.ckpt_root) if self.ckpt_root.exists() else None
        keep = (
            f"the last good checkpoint is {last}; resume=True continues from it"
            if last
            else "no checkpoint yet"
        )
        raise TrainingDivergedError(
            f"training stopped at step {step} (the batch after {step} completed steps) of dictionary "
            f"{s.name!r}: {what}. Nothing was updated at this step; {keep}.",
            step=step, dictionary=s.name, term=term, checkpoint=last,
        )  # fmt: skip

    def _record(
        self, done: int, s: _Slot, stats: torch.Tensor, terms: list[str], lr: float, lam: float, gn: float
    ) -> dict[str, Any]:
        world = self.dist.world if self.dist.data_parallel else 1
        k = len(terms)
        n, nnz, sse, sum_sq = (float(v) for v in stats[k + 2 : k + 6])
        d_out = s.d.config.out_dim
        sum_y = stats[k + 6 : k + 6 + d_out]
        total_var = sum_sq - float(sum_y.pow(2).sum()) / n
        rec: dict[str, Any] = {
            "step": done,
            "tokens": done * self.cfg.batch_size,
            "dictionary": s.name,
            "lr": lr,
            "sparsity_coefficient": lam,
            "loss": float(stats[0]) / world,
            **{t: float(stats[1 + i]) / world for i, t in enumerate(terms)},
            "l0": nnz / n,
            "fvu": sse / total_var if total_var > 0 else float("nan"),
            "dead_fraction": float((s.since_fired >= s.cfg.dead_window_tokens).double().mean()),
            "grad_norm": gn,
            "elapsed_s": round(time.perf_counter() - self.t0, 3),
        }
        return rec

    # -- checkpoints and the end ----------------------------------------------------------

    def _states(self) -> list[ckpt.DictionaryState]:
        return [
            ckpt.DictionaryState(
                name=s.name,
                config=s.d.config,
                weights=s.d.state_dict(),
                optimizer=s.opt.state_dict() if s.opt is not None else {},
                tokens_since_fired=s.since_fired,
                train_config=_config_json(s.cfg),
            )
            for s in self.slots
        ]

    def _checkpoint(self, done: int) -> None:
        if self.dist.writes_shared:
            ckpt.save(
                self.ckpt_root,
                done,
                done * self.cfg.batch_size,
                self._states(),
                keep=self.cfg.keep_checkpoints,
            )
        self.dist.barrier()

    def _resume(self) -> int | None:
        """Load the newest complete checkpoint into the slots; None when there is none."""
        path = ckpt.latest(self.ckpt_root)
        if path is None:
            return None
        step, _tokens, states = ckpt.load(path)
        by_name = {st.name: st for st in states}
        if set(by_name) != {s.name for s in self.slots}:
            raise ckpt.CheckpointError(
                f"checkpoint {path} holds dictionaries {sorted(by_name)}, this run trains {[s.name for s in self.slots]}"
            )
        for s in self.slots:
            st = by_name[s.name]
            _check_resumable(path, s, st)
            s.d.config = st.config
            s.d.load_state_dict(st.weights)
            assert s.opt is not None
            s.opt.load_state_dict(st.optimizer)
            s.since_fired = st.tokens_since_fired.clone()
        return step

    def _finish(self, steps: int, last: dict[str, dict[str, Any]]) -> TrainResult:
        out = Path(self.cfg.output_dir)
        folded: dict[str, Dictionary] = {}
        paths: dict[str, Path] = {}
        for s in self.slots:
            d = copy.deepcopy(s.d)
            trained = d.config
            d.fold_norm_scale()
            training = {
                "norm_scale_trained": trained.norm_scale,
                "norm_scale_out_trained": trained.norm_scale_out,
                "normalisation": s.cfg.normalisation,
                "tokens": steps * self.cfg.batch_size,
                "steps": steps,
            }
            d.config = dataclasses.replace(d.config, metadata={**trained.metadata, "training": training})
            folded[s.name] = d
            paths[s.name] = out / "dictionaries" / s.name
            if self.dist.writes_shared:
                save_dictionary(d, paths[s.name])
        if self.dist.writes_shared:
            summary = {
                "steps": steps,
                "tokens": steps * self.cfg.batch_size,
                "elapsed_s": round(time.perf_counter() - self.t0, 3),
                "world": self.dist.world,
                "dictionaries": {
                    n: {"path": str(paths[n]), "train_config": _config_json(s.cfg), "final": last.get(n)}
                    for n, s in zip(folded, self.slots, strict=True)
                },
            }
            name = "train.json" if self.dist.rank == 0 else f"train-rank{self.dist.rank}.json"
            atomic_write_json(out / name, summary)
        self.dist.barrier()
        return TrainResult(folded, paths, steps, steps * self.cfg.batch_size, last)


def _check_width(s: _Slot, x: torch.Tensor, y: torch.Tensor) -> None:
    c = s.d.config
    if x.shape[-1] != c.d_in or y.shape[-1] != c.out_dim:
        raise MechscopeError(
            f"dictionary {s.name!r} expects d_in={c.d_in}, d_out={c.out_dim}; hook {s.hook_in!r} has width "
            f"{x.shape[-1]} and target {s.hook_out!r} width {y.shape[-1]}"
        )


def _check_resumable(path: Path, s: _Slot, st: ckpt.DictionaryState) -> None:
    unscaled = dataclasses.replace(st.config, norm_scale=1.0, norm_scale_out=None)
    mine = dataclasses.replace(s.d.config, norm_scale=1.0, norm_scale_out=None)
    if unscaled != mine:
        raise ckpt.CheckpointError(f"checkpoint {path}: dictionary {s.name!r} has a different config")
    now = _config_json(s.cfg)
    diff = [k for k in now if k not in _NOT_STATE and st.train_config.get(k) != now[k]]
    if diff:
        raise ckpt.CheckpointError(
            f"checkpoint {path}: dictionary {s.name!r} was trained with different settings {diff}; "
            "resume with the same TrainConfig (or start afresh in another output_dir)"
        )


def _stats(out: Any, x: torch.Tensor, y: torch.Tensor, terms: list[str], full: bool) -> torch.Tensor:
    """Float64 vector ``[loss, *terms, x_bad, (n, nnz, sse, sum_sq, *sum_y[d_out]) if full, *fired[d_sae]]``."""
    with torch.no_grad():
        head = [out.loss.detach().double().reshape(1)]
        head += [out.losses[t].detach().double().reshape(1) for t in terms]
        head.append((~torch.isfinite(x).all() | ~torch.isfinite(y).all()).double().reshape(1))
        if full:
            yd = y.double()
            head.append(torch.tensor([float(y.shape[0])], dtype=torch.float64, device=y.device))
            head.append((out.codes != 0).sum().double().reshape(1))
            head.append((yd - out.y_hat.detach().double()).pow(2).sum().reshape(1))
            head.append(yd.pow(2).sum().reshape(1))
            head.append(yd.sum(dim=0))
        head.append(out.fired.detach().double().reshape(-1))
        return torch.cat([h.to(x.device) for h in head])


def _grad_norm(s: _Slot, max_norm: float) -> float:
    """Total gradient norm (clipping to ``max_norm`` when > 0)."""
    grads = [p.grad for p in s.params if p.grad is not None]
    if not grads:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(s.params, max_norm, foreach=True))
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))


def save_dictionary(d: Dictionary, path: Path) -> Path:
    """Save ``d`` with ``mechscope.dictionary.io.save_dictionary`` (replacing an older save at ``path``)."""
    from . import io

    return io.save_dictionary(d, path)


def _adam(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with the fused kernel where torch has one (CPU and CUDA): on a 768 x 12288 SAE it
    takes ~30 ms a step on CPU against ~165 ms for ``foreach``; same update rule."""
    kwargs = dict(lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
    if all(p.device.type in ("cpu", "cuda") for p in params):
        try:
            return torch.optim.Adam(params, fused=True, **kwargs)  # type: ignore[arg-type]
        except (RuntimeError, ValueError):
            pass
    return torch.optim.Adam(params, foreach=True, **kwargs)  # type: ignore[arg-type]
