"""Helpers shared by the architectures: input checks, reconstruction losses, errors."""

from __future__ import annotations

import torch

from ..errors import MechscopeError


class DictionaryError(MechscopeError, ValueError):
    """A dictionary config or a training input that cannot work (wrong shape, missing k, ...)."""


def check_inputs(
    x: torch.Tensor, y: torch.Tensor | None, d_in: int, d_out: int, is_transcoder: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``x`` ``[n, d_in]`` and ``y`` ``[n, d_out]`` (default ``x`` for an SAE)."""
    if x.dim() != 2 or x.shape[1] != d_in:
        raise DictionaryError(f"training input must be [n, d_in={d_in}], got {tuple(x.shape)}")
    if y is None:
        if is_transcoder or d_out != d_in:
            raise DictionaryError(
                "this dictionary is a transcoder: training_forward(x, y) needs the target y"
            )
        return x, x
    if y.shape != (x.shape[0], d_out):
        raise DictionaryError(f"target must be [n={x.shape[0]}, d_out={d_out}], got {tuple(y.shape)}")
    return x, y


def check_dead_mask(dead_mask: torch.Tensor | None, d_sae: int) -> torch.Tensor | None:
    """``dead_mask`` must be a ``[d_sae]`` bool tensor (or None)."""
    if dead_mask is None:
        return None
    if dead_mask.shape != (d_sae,) or dead_mask.dtype != torch.bool:
        raise DictionaryError(
            f"dead_mask must be a [d_sae={d_sae}] bool tensor, got {tuple(dead_mask.shape)} {dead_mask.dtype}"
        )
    return dead_mask


def mse_and_fvu(y: torch.Tensor, y_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``mse = (1/n) sum_n ||y_n - y_hat_n||^2`` (summed over features) and the batch FVU.

    FVU ``= sum ||y - y_hat||^2 / sum ||y - mean(y)||^2`` over this batch (detached).
    """
    sq = (y - y_hat).pow(2).sum()
    mse = sq / y.shape[0]
    with torch.no_grad():
        fvu = sq.detach() / (y - y.mean(0)).pow(2).sum().clamp_min(torch.finfo(y.dtype).tiny)
    return mse, fvu


def unit_rows_(w: torch.Tensor) -> None:
    """Scale the rows of ``w`` ``[d_sae, d_out]`` to unit norm in place."""
    w.div_(w.norm(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny))


def project_out_row_component_(grad: torch.Tensor, w: torch.Tensor) -> None:
    """``grad_i <- grad_i - (grad_i . w_i) w_i`` for unit rows ``w_i`` (in place, ``[d_sae, d]``)."""
    dots = torch.bmm(grad.unsqueeze(1), w.unsqueeze(2)).squeeze(2)  # [d_sae, 1]
    grad.addcmul_(dots, w, value=-1.0)
