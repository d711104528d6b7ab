"""Distributed dictionary training under ``torchrun`` (gloo on CPU, NCCL on CUDA).

Two modes (``TrainConfig.distributed``):

``ddp`` (data parallel). Every rank holds every dictionary. Per step:

1. rank ``r`` of ``W`` reads its part of the global batch,
   ``source.batches(batch_size, ..., rank=r, world=W)`` (``batch_size`` is the *global*
   batch; how rows are split is the source's documented rule);
2. forward and backward on the local rows (each loss is a mean over local rows);
3. every gradient is all-reduced (sum) and divided by ``W``: the mean of the local mean
   gradients, which is the gradient of the global-batch mean loss because local batches
   are equal in size. This is DDP's algorithm; we do it by hand instead of wrapping the
   module in ``nn.parallel.DistributedDataParallel`` because the step calls
   ``training_forward``, not ``forward``;
4. the ``fired`` masks and the logging statistics are all-reduced too, so dead-latent
   tracking (hence TopK's AuxK dead mask) is global and identical on every rank;
5. after ``after_step``, state that is not trained by gradients (floating buffers and
   parameters with ``requires_grad=False``, e.g. BatchTopK's running threshold) is averaged
   across ranks, so every rank keeps identical weights. BatchTopK selects the top ``k * B``
   activations of its *local* batch (``B`` = local rows), as sparsify's DDP does; only its
   threshold estimate is made global by the averaging.

Results match a single process on the same global batch up to floating-point summation
order: a mean over ``2B`` rows and the average of two means over ``B`` rows round
differently (about 1e-7 relative in fp32 per step; Adam carries it forward; measured 4e-7
after 16 fp32 steps, 2e-15 in fp64). Two terms are not exactly a mean over rows and so
differ by more: TopK's AuxK loss divides by the variance of the residual over the *local*
batch (measured 5e-4 relative after 16 steps with dead latents, the same in fp64), and
BatchTopK's selection is over the local batch (above).

``per_dictionary``. Dictionary ``i`` lives on rank ``i % W`` only; every rank reads the
full global batch (``rank=0, world=1``) for its own dictionaries' hooks, and nothing is
all-reduced. Results equal single-process training of the same dictionaries exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import MechscopeError

MODES = ("ddp", "per_dictionary")
"""Distributed modes (``TrainConfig.distributed``)."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    """Rank of this process (0 when not distributed)."""
    world: int = 1
    """Number of processes."""
    mode: str = "ddp"
    """``ddp`` or ``per_dictionary`` (only meaningful when ``world > 1``)."""

    @property
    def is_distributed(self) -> bool:
        """True when several processes take part."""
        return self.world > 1

    @property
    def data_parallel(self) -> bool:
        """True when gradients and statistics are all-reduced (DDP with several ranks)."""
        return self.is_distributed and self.mode == "ddp"

    def owns(self, index: int) -> bool:
        """Whether dictionary ``index`` is trained on this rank."""
        return self.mode != "per_dictionary" or index % self.world == self.rank

    def data_slice(self) -> tuple[int, int]:
        """``(rank, world)`` to pass to ``source.batches``."""
        return (self.rank, self.world) if self.data_parallel else (0, 1)

    @property
    def writes_shared(self) -> bool:
        """Whether this rank writes shared files (rank 0 in DDP; every rank in per_dictionary)."""
        return self.rank == 0 or not self.data_parallel

    # -- collectives (no-ops unless data parallel) --------------------------------------------

    def allreduce_sum_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over ranks in place (no-op when not data parallel)."""
        if self.data_parallel:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t

    def allreduce_grads_(self, params: list[nn.Parameter]) -> None:
        """Replace each gradient by its mean over ranks (a missing gradient counts as zeros)."""
        if not self.data_parallel:
            return
        work = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            work.append(
                torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.SUM, async_op=True)
            )
        for w in work:
            w.wait()
        for p in params:
            assert p.grad is not None
            p.grad.div_(self.world)

    def average_untrained_state_(self, module: nn.Module) -> None:
        """Average floating buffers and ``requires_grad=False`` parameters over ranks."""
        if not self.data_parallel:
            return
        with torch.no_grad():
            tensors: list[torch.Tensor] = [
                p for p in module.parameters() if not p.requires_grad and p.is_floating_point()
            ]
            tensors += [b for b in module.buffers() if b.is_floating_point()]
            for t in tensors:
                torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
                t.div_(self.world)

    def barrier(self) -> None:
        """Wait for every rank (no-op when single-process)."""
        if self.is_distributed:
            torch.distributed.barrier()


def init_distributed(mode: str = "ddp", device: str = "cpu") -> tuple[DistContext, bool]:
    """Join the ``torchrun`` process group if there is one; returns ``(context, created)``.

    ``created`` is True when this call initialised the process group (the caller then
    destroys it). Without ``WORLD_SIZE > 1`` in the environment and no initialised group,
    the context is single-process. The backend is NCCL for CUDA devices, else gloo.
    """
    if mode not in MODES:
        raise MechscopeError(f"distributed must be one of {', '.join(MODES)}, not {mode!r}")
    dist = torch.distributed
    created = False
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
        created = True
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext(), created
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size(), mode=mode), created
