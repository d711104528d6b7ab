"""ReLU SAE with the decoder-norm-weighted L1 penalty (Anthropic, "April 2024 update")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import check_inputs, mse_and_fvu
from .base import Dictionary, ForwardOutput


class ReLUDictionary(Dictionary):
    """``architecture="relu"``: ReLU codes, L1 weighted by decoder row norms, free decoder.

    Forward (rows are tokens; ``x`` ``[n, d_in]``, target ``y`` ``[n, d_out]``, ``y = x`` for
    an SAE):

    1. ``h = (x - b_dec) @ W_enc + b_enc`` ``[n, d_sae]`` (no ``- b_dec`` for transcoders);
    2. ``f = ReLU(h)``;
    3. ``y_hat = f @ W_dec + b_dec`` (``+ x @ W_skip`` with a skip connection).

    Loss, with ``lambda = sparsity_coefficient`` (the trainer warms it up):

    ``L = (1/n) sum_n ||y_n - y_hat_n||^2 + lambda (1/n) sum_n sum_i f_ni ||W_dec[i]||_2``.

    The decoder is unconstrained (no renormalisation, no gradient projection): the norm
    weighting makes the penalty invariant to moving scale between ``f_i`` and ``W_dec[i]``.
    Initialisation (base class): decoder rows random with norm 0.1, ``W_enc = W_dec^T``,
    biases zero. Logged terms: ``mse``, ``sparsity`` (the unweighted penalty), ``l0``, ``fvu``.
    """

    def activation(self, h: torch.Tensor) -> torch.Tensor:
        """``ReLU(h)``."""
        return F.relu(h)

    def training_forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        sparsity_coefficient: float = 0.0,
        dead_mask: torch.Tensor | None = None,
    ) -> ForwardOutput:
        """Dense forward and the loss above (``dead_mask`` is not used by this architecture)."""
        cfg = self.config
        x, y = check_inputs(x, y, cfg.d_in, cfg.out_dim, cfg.is_transcoder)
        f = F.relu(self.pre_acts(x))  # [n, d_sae]
        y_hat = self.decode(f, x)  # [n, d_out]
        mse, fvu = mse_and_fvu(y, y_hat)
        sparsity = (f * self.W_dec.norm(dim=1)).sum(-1).mean()
        loss = mse + sparsity_coefficient * sparsity
        active = f > 0
        losses = {
            "mse": mse.detach(),
            "sparsity": sparsity.detach(),
            "l0": active.sum(-1).float().mean(),
            "fvu": fvu,
        }
        return ForwardOutput(y_hat, f, None, loss, losses, active.any(0))
