"""JumpReLU SAE trained with straight-through pseudo-gradients for the threshold.

Rajamanoharan et al. 2024 ("Jumping Ahead"), with the implementation traps of the peer
libraries avoided: the threshold is a plain fp32 parameter (not ``log theta``, SAELens
#718; not rounded in bf16, #728) and the Heaviside pseudo-gradient is evaluated on the
pre-activations ``h``, not on the codes (dictionary_learning #55).

Pseudo-gradients, with the rectangle kernel ``K(u) = 1[|u| < 1/2]`` and bandwidth ``eps``:

1. ``f = h H(h - theta)``: ``df/dh = H(h - theta)`` (no straight-through estimate to ``h``),
   ``df/dtheta = -(theta / eps) K((h - theta) / eps)``;
2. ``H(h - theta)`` in the L0 term: ``dH/dh = 0``, ``dH/dtheta = -(1/eps) K((h - theta) / eps)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._common import check_inputs, mse_and_fvu, project_out_row_component_, unit_rows_
from .base import Dictionary, DictionaryConfig, ForwardOutput


def _kernel(h: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    """``K((h - theta) / eps)`` in fp32, ``[n, d_sae]``."""
    return ((h.float() - theta).abs() < eps / 2).float()


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(h, theta)
        ctx.eps = eps
        return h * (h.float() > theta).to(h.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        h, theta = ctx.saved_tensors
        d_h = grad * (h.float() > theta).to(grad.dtype)
        d_theta = (-(theta / ctx.eps) * _kernel(h, theta, ctx.eps) * grad.float()).sum(0)
        return d_h, d_theta, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(h, theta)
        ctx.eps = eps
        return (h.float() > theta).to(h.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        h, theta = ctx.saved_tensors
        d_theta = (-(1.0 / ctx.eps) * _kernel(h, theta, ctx.eps) * grad.float()).sum(0)
        return None, d_theta, None


def jumprelu(h: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    """``h * H(h - theta)`` with the pseudo-gradient of the module docstring."""
    return _JumpReLU.apply(h, theta, eps)


def heaviside_step(h: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    """``H(h - theta)`` with the pseudo-gradient to ``theta`` of the module docstring."""
    return _Step.apply(h, theta, eps)


class JumpReLUDictionary(Dictionary):
    """``architecture="jumprelu"``: ``f = h H(h - theta)`` with an L0 penalty.

    Forward: ``h = (x - b_dec) @ W_enc + b_enc`` (no ``- b_dec`` for transcoders);
    ``f = h * 1[h > theta]``; ``y_hat = f @ W_dec + b_dec`` (``+ x @ W_skip``).

    Loss, with ``lambda = sparsity_coefficient``:
    ``L = (1/n) sum_n ||y_n - y_hat_n||^2 + lambda (1/n) sum_n sum_i H(h_ni - theta_i)``,
    differentiated with the pseudo-gradients of the module docstring (bandwidth
    ``jumprelu_bandwidth``, which assumes inputs normalised to norm about ``sqrt(d_in)``
    or 1 per the trainer's convention; see docs/dictionary.md).

    ``threshold`` ``[d_sae]`` is a plain fp32 parameter initialised to
    ``jumprelu_init_threshold`` and clamped at 0 after every step (so ReLU is implied).
    Decoder rows have unit norm (projected gradients, renormalised after each step);
    ``W_enc = W_dec^T`` at initialisation.
    """

    def __init__(self, config: DictionaryConfig) -> None:
        super().__init__(config)
        self.threshold = nn.Parameter(torch.full((config.d_sae,), config.jumprelu_init_threshold))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Unit-norm random decoder rows, ``W_enc = W_dec^T`` (or unit columns), zero biases."""
        super().reset_parameters(generator)
        with torch.no_grad():
            unit_rows_(self.W_dec)
            if self.W_enc.shape == self.W_dec.T.shape:
                self.W_enc.copy_(self.W_dec.T)
            else:
                self.W_enc.div_(self.W_enc.norm(dim=0, keepdim=True))

    def activation(self, h: torch.Tensor) -> torch.Tensor:
        """``h * 1[h > theta]``."""
        return h * (h.float() > self.threshold).to(h.dtype)

    def training_forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        sparsity_coefficient: float = 0.0,
        dead_mask: torch.Tensor | None = None,
    ) -> ForwardOutput:
        """Dense forward and the loss above (``dead_mask`` is not used)."""
        cfg = self.config
        x, y = check_inputs(x, y, cfg.d_in, cfg.out_dim, cfg.is_transcoder)
        h = self.pre_acts(x)  # [n, d_sae]
        eps = cfg.jumprelu_bandwidth
        f = jumprelu(h, self.threshold, eps)
        y_hat = self.decode(f, x)
        mse, fvu = mse_and_fvu(y, y_hat)
        l0 = heaviside_step(h, self.threshold, eps).sum(-1).mean()
        loss = mse + sparsity_coefficient * l0
        active = f != 0
        losses = {"mse": mse.detach(), "sparsity": l0.detach(), "l0": l0.detach().float(), "fvu": fvu}
        return ForwardOutput(y_hat, f, None, loss, losses, active.any(0))

    def before_optimizer_step(self) -> None:
        """Project out the radial component of each decoder row's gradient."""
        if self.W_dec.grad is not None:
            with torch.no_grad():
                project_out_row_component_(self.W_dec.grad, self.W_dec)

    def after_step(self) -> None:
        """Renormalise decoder rows; clamp the threshold at 0."""
        with torch.no_grad():
            unit_rows_(self.W_dec)
            self.threshold.clamp_(min=0.0)
