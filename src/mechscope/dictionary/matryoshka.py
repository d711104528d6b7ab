"""Matryoshka BatchTopK SAE: nested prefixes of the dictionary each reconstruct the input."""

from __future__ import annotations

import itertools

import torch

from ._common import DictionaryError
from .base import DictionaryConfig
from .kernels import SparsePattern, sparse_decode
from .topk import BatchTopKDictionary, _Aux


class MatryoshkaDictionary(BatchTopKDictionary):
    """``architecture="matryoshka"``: BatchTopK whose prefixes ``[0, w_l)`` are dictionaries too.

    Widths ``w_1 < ... < w_L = d_sae`` (``matryoshka_widths``). Training forward: the
    BatchTopK selection over the whole dictionary (top ``k n`` of ``ReLU(h)`` over the batch),
    then for each level ``l`` the reconstruction from the latents of the prefix only:

    ``y_hat_l = sum_{i < w_l} f_i W_dec[i] + b_dec`` (``+ x @ W_skip``).

    Loss: the MEAN of the level losses plus AuxK on the full reconstruction,

    ``L = (1/L) sum_l (1/n) sum_n ||y_n - y_hat_l,n||^2 + aux_coefficient L_aux``.

    (SAELens sums the levels, dictionary_learning takes a weighted mean; the mean keeps the
    loss on the scale of a single reconstruction, so learning rates carry over from
    BatchTopK.) Each active entry is decoded once: the prefix reconstructions are cumulative
    sums of per-band sparse decodes. ``y_hat`` is the full (last level) reconstruction;
    inference is JumpReLU with the running threshold, exactly as BatchTopK. Logged terms add
    ``mse_level_l`` for each level.
    """

    def __init__(self, config: DictionaryConfig) -> None:
        widths = tuple(config.matryoshka_widths) or (config.d_sae,)
        if any(b <= a for a, b in itertools.pairwise(widths)) or widths[0] < 1:
            raise DictionaryError(f"matryoshka_widths must be increasing and positive, got {widths}")
        if widths[-1] != config.d_sae:
            raise DictionaryError(f"the last matryoshka width must equal d_sae={config.d_sae}, got {widths}")
        super().__init__(config)
        self.widths = widths

    def reconstruct(
        self, values: torch.Tensor, pattern: SparsePattern, x: torch.Tensor, y: torch.Tensor, aux: _Aux | None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        """Cumulative per-band decodes; the loss is the mean of the level MSEs."""
        bounds = torch.tensor(self.widths, device=pattern.cols.device)
        band = torch.bucketize(pattern.cols, bounds, right=True)  # [nnz] level index of each entry
        y_hat = self.b_dec.expand(y.shape[0], -1)
        if self.W_skip is not None:
            y_hat = y_hat + x @ self.W_skip
        total = y.new_zeros(())
        extra: dict[str, torch.Tensor] = {}
        for level in range(len(self.widths)):
            sel = band == level
            sub = SparsePattern(pattern.rows[sel], pattern.cols[sel], pattern.n_rows, pattern.n_cols)
            sub._row_sorted = True  # a subsequence of a row-sorted pattern
            y_hat = y_hat + sparse_decode(values[sel], sub, self.W_dec)
            mse_l = (y - y_hat).pow(2).sum() / y.shape[0]
            total = total + mse_l
            extra[f"mse_level_{level}"] = mse_l.detach()
        extra["mse"] = extra[f"mse_level_{len(self.widths) - 1}"]
        e_hat = None if aux is None else aux.decode(self.W_dec)
        return y_hat, total / len(self.widths), extra, e_hat
