"""Sparse kernels for the TopK family: decode from the active latents only, sparse encoder grads.

With TopK-style codes only ``nnz`` entries of the ``[n, d_sae]`` code matrix are non-zero
(``nnz = n k`` for TopK). Two autograd functions exploit that:

1. ``sparse_decode(values, pattern, W_dec, b_dec)`` computes ``y = F @ W_dec + b_dec`` where
   ``F`` is the sparse code matrix with ``F[rows[e], cols[e]] = values[e]``.

   * forward: ``embedding_bag`` (sum mode, per-sample weights) over the active decoder rows;
     no ``[n, d_sae]`` or ``[n, k, d_out]`` tensor is built;
   * backward: ``dvalues[e] = dy[rows[e]] . W_dec[cols[e]]`` (a sampled dense-dense product,
     ``torch.sparse.sampled_addmm``), ``dW_dec = F^T @ dy`` (a CSR sparse-dense product that
     touches only the rows of active latents) and ``db_dec = sum_n dy[n]``.

2. ``sparse_preacts(x, b_dec, W_enc, b_enc, h, pattern)`` returns the pre-activations
   ``h[rows[e], cols[e]]`` of the selected entries, with ``h = (x - b_dec) @ W_enc + b_enc``
   already computed densely (without grad; the dense encoder matmul is the one dense cost
   left). Only the selected entries carry gradient, so with ``G`` the sparse ``[n, d_sae]``
   matrix of their gradients:

   * ``dW_enc = x_c^T @ G`` computed as ``(G^T @ x_c)^T`` with ``G^T`` in CSR form (a
     sparse-dense product over ``nnz`` entries, never a dense ``[n, d_sae]`` matmul);
   * ``db_enc[j] = sum_{e: cols[e] = j} g[e]`` (an ``index_add``);
   * ``db_dec = -W_enc @ db_enc`` (when the input is centred by ``b_dec``: the chain rule
     through ``x_c = x - b_dec`` summed over rows, without forming ``dx_c``);
   * ``dx = G @ W_enc^T`` only if ``x`` itself requires grad.

Index conventions: ``rows``/``cols`` are int64 ``[nnz]``; a pattern may hold the same
``(row, col)`` twice (e.g. TopK entries and AuxK entries concatenated): each occurrence is
a separate term and their gradients add, which is exactly what autograd would do with two
dense paths.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run small bookkeeping ops (sort, bincount of ~1e5 ints) on one thread.

    They take about a millisecond serially, but their parallel versions synchronise often
    and, when the CPU is oversubscribed, can take 100x longer.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class SparsePattern:
    """Positions ``(rows[e], cols[e])`` of the non-zeros of an ``[n_rows, n_cols]`` code matrix.

    The CSR layouts used by the kernels (row-major, and column-major for the transposed
    products) are computed lazily and cached, so one pattern serves forward and backward.
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int) -> None:
        if rows.shape != cols.shape or rows.dim() != 1:
            raise ValueError(f"rows and cols must be 1-D of equal length, got {rows.shape}, {cols.shape}")
        self.rows = rows.long()
        self.cols = cols.long()
        self.n_rows = n_rows
        self.n_cols = n_cols
        self._row_sorted: bool | None = None
        self._crow: torch.Tensor | None = None
        self._t: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_topk(cls, indices: torch.Tensor, n_cols: int) -> SparsePattern:
        """Pattern of ``indices`` ``[n, k]``: row ``r`` holds ``indices[r]`` (row-sorted)."""
        n, k = indices.shape
        rows = torch.arange(n, device=indices.device).repeat_interleave(k)
        p = cls(rows, indices.reshape(-1), n, n_cols)
        p._row_sorted = True
        p._crow = torch.arange(0, n * k + 1, k, device=indices.device) if k else rows.new_zeros(n + 1)
        return p

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.rows.numel())

    def _counts_to_crow(self, idx: torch.Tensor, size: int) -> torch.Tensor:
        crow = torch.zeros(size + 1, dtype=torch.int64, device=idx.device)
        if idx.numel():
            with _one_thread():
                crow[1:] = torch.bincount(idx, minlength=size).cumsum(0)
        return crow

    @property
    def row_sorted(self) -> bool:
        """True when ``rows`` is non-decreasing (needed for the row-major CSR layout)."""
        if self._row_sorted is None:
            self._row_sorted = bool(self.nnz == 0 or (self.rows[1:] >= self.rows[:-1]).all())
        return self._row_sorted

    @property
    def crow(self) -> torch.Tensor:
        """``[n_rows + 1]`` CSR row pointers (requires ``row_sorted``)."""
        if not self.row_sorted:
            raise ValueError("pattern rows are not sorted; use SparsePattern.sorted_by_row()")
        if self._crow is None:
            self._crow = self._counts_to_crow(self.rows, self.n_rows)
        return self._crow

    def transposed(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(order, ccol, rows_t)``: entries sorted by column, CSR pointers of the transpose."""
        if self._t is None:
            with _one_thread():
                order = torch.argsort(self.cols, stable=True)
            self._t = (order, self._counts_to_crow(self.cols, self.n_cols), self.rows[order])
        return self._t

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        """``[n_rows, n_cols]`` sparse CSR matrix with these values (row-sorted patterns)."""
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                self.crow, self.cols, values, (self.n_rows, self.n_cols), check_invariants=False
            )

    def csr_t(self, values: torch.Tensor) -> torch.Tensor:
        """``[n_cols, n_rows]`` sparse CSR matrix of the transpose with these values."""
        order, ccol, rows_t = self.transposed()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                ccol, rows_t, values[order], (self.n_cols, self.n_rows), check_invariants=False
            )

    def to_dense(self, values: torch.Tensor) -> torch.Tensor:
        """``[n_rows, n_cols]`` dense matrix (duplicates add); for tests and small inputs."""
        out = values.new_zeros(self.n_rows, self.n_cols)
        return out.index_put((self.rows, self.cols), values, accumulate=True)


def _matmul_sparse_t(pattern: SparsePattern, values: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``F^T @ dense``: ``[n_cols, d]`` from ``F`` (``[n_rows, n_cols]``) and ``dense`` ``[n_rows, d]``."""
    if pattern.nnz == 0:
        return dense.new_zeros(pattern.n_cols, dense.shape[1])
    return pattern.csr_t(values) @ dense.contiguous()


def _sampled_rows_dot(pattern: SparsePattern, a: torch.Tensor, b_rows: torch.Tensor) -> torch.Tensor:
    """``out[e] = a[rows[e]] . b_rows[cols[e]]`` for ``a`` ``[n_rows, d]``, ``b_rows`` ``[n_cols, d]``."""
    if pattern.nnz == 0:
        return a.new_zeros(0)
    if pattern.row_sorted:
        mask = pattern.csr(a.new_zeros(pattern.nnz))
        return torch.sparse.sampled_addmm(mask, a.contiguous(), b_rows.t()).values()
    out = a.new_empty(pattern.nnz)  # unsorted patterns: chunked gather + dot
    step = max(1, (1 << 22) // max(1, a.shape[1]))
    for s in range(0, pattern.nnz, step):
        r, c = pattern.rows[s : s + step], pattern.cols[s : s + step]
        out[s : s + step] = (a[r] * b_rows[c]).sum(-1)
    return out


def _add_rows_(target: torch.Tensor, rows: torch.Tensor, update: torch.Tensor) -> None:
    """``target[rows] += update`` for UNIQUE ``rows`` (row copies; ``index_add_`` is slower on CPU)."""
    target.index_copy_(0, rows, target.index_select(0, rows) + update)


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        values: torch.Tensor,
        pattern: SparsePattern,
        W_dec: torch.Tensor,
        z_block: torch.Tensor | None,
        block_rows: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.set_materialize_grads(False)
        ctx.pattern = pattern
        ctx.block_rows = block_rows
        ctx.save_for_backward(values, W_dec, z_block if z_block is not None else values.new_zeros(0))
        if pattern.nnz == 0:
            y = W_dec.new_zeros(pattern.n_rows, W_dec.shape[1])
        else:
            y = F.embedding_bag(pattern.cols, W_dec, pattern.crow[:-1], mode="sum", per_sample_weights=values)
        if z_block is None or block_rows is None:
            return y, W_dec.new_zeros(0, W_dec.shape[1])
        return y, z_block @ W_dec.index_select(0, block_rows)

    @staticmethod
    def backward(
        ctx: Any, grad_y: torch.Tensor | None, grad_e: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, None, torch.Tensor | None, torch.Tensor | None, None]:
        values, W_dec, z_block = ctx.saved_tensors
        pattern: SparsePattern = ctx.pattern
        rows: torch.Tensor | None = ctx.block_rows
        if grad_y is None:
            grad_y = W_dec.new_zeros(pattern.n_rows, W_dec.shape[1])
        grad_y = grad_y.contiguous()
        d_values = _sampled_rows_dot(pattern, grad_y, W_dec) if ctx.needs_input_grad[0] else None
        d_W = _matmul_sparse_t(pattern, values, grad_y) if ctx.needs_input_grad[2] else None
        d_z = None
        if rows is not None and grad_e is not None:
            W_b = W_dec.index_select(0, rows)  # [n_block, d_out]
            d_z = grad_e @ W_b.t() if ctx.needs_input_grad[3] else None
            if d_W is not None:
                _add_rows_(d_W, rows, z_block.t() @ grad_e)
        return d_values, None, d_W, d_z, None


def sparse_decode(
    values: torch.Tensor, pattern: SparsePattern, W_dec: torch.Tensor, b_dec: torch.Tensor | None = None
) -> torch.Tensor:
    """``[n, d_out]`` = ``F @ W_dec (+ b_dec)`` for the sparse codes ``F`` given by ``(values, pattern)``.

    ``values`` ``[nnz]`` are the codes at ``pattern``'s positions (row-sorted pattern);
    ``W_dec`` ``[d_sae, d_out]``. Differentiable in ``values``, ``W_dec`` and ``b_dec``; the
    gradient of ``W_dec`` is non-zero only in rows of active latents.
    """
    if values.shape != (pattern.nnz,):
        raise ValueError(f"values must be [nnz={pattern.nnz}], got {tuple(values.shape)}")
    y, _ = _SparseDecode.apply(values, pattern, W_dec, None, None)
    return y if b_dec is None else y + b_dec


def sparse_decode_with_block(
    values: torch.Tensor,
    pattern: SparsePattern,
    W_dec: torch.Tensor,
    z_block: torch.Tensor,
    block_rows: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(F @ W_dec, z_block @ W_dec[block_rows])``: a sparse decode plus a dense block decode.

    ``z_block`` ``[n, n_block]`` are codes of the UNIQUE latents ``block_rows`` (AuxK's dead
    latents); both products share one ``W_dec`` gradient (no bias is added to either).
    """
    if values.shape != (pattern.nnz,):
        raise ValueError(f"values must be [nnz={pattern.nnz}], got {tuple(values.shape)}")
    y, e = _SparseDecode.apply(values, pattern, W_dec, z_block, block_rows)
    return y, e


class _SparsePreacts(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        b_dec: torch.Tensor | None,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        h: torch.Tensor,
        pattern: SparsePattern,
        block_cols: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.set_materialize_grads(False)
        ctx.pattern = pattern
        ctx.has_b_dec = b_dec is not None
        ctx.block_cols = block_cols
        ctx.save_for_backward(x, b_dec if b_dec is not None else x.new_zeros(0), W_enc)
        vals = h.reshape(-1)[pattern.rows * h.shape[1] + pattern.cols]
        block = h.index_select(1, block_cols) if block_cols is not None else h.new_zeros(h.shape[0], 0)
        return vals, block

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor | None, grad_block: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        x, b_dec, W_enc = ctx.saved_tensors
        pattern: SparsePattern = ctx.pattern
        cols_b: torch.Tensor | None = ctx.block_cols
        if grad is None:
            grad = x.new_zeros(pattern.nnz)
        if cols_b is None or grad_block is None:
            cols_b, grad_block = None, None
        x_c = x - b_dec if ctx.has_b_dec else x
        need_x, need_bdec, need_W, need_benc = ctx.needs_input_grad[:4]
        d_W = None
        if need_W:
            d_Wt = _matmul_sparse_t(pattern, grad, x_c)  # [d_sae, d_in]
            if cols_b is not None and grad_block is not None:
                _add_rows_(d_Wt, cols_b, grad_block.t() @ x_c)
            d_W = d_Wt.t()  # [d_in, d_sae]
        d_benc = None
        if need_benc or need_bdec:
            d_benc = grad.new_zeros(pattern.n_cols).index_add_(0, pattern.cols, grad)
            if cols_b is not None and grad_block is not None:
                d_benc.index_add_(0, cols_b, grad_block.sum(0))
        d_bdec = -(W_enc @ d_benc) if (need_bdec and ctx.has_b_dec and d_benc is not None) else None
        d_x = None
        if need_x:
            p, g = (pattern, grad) if pattern.row_sorted else sorted_by_row(pattern, grad)
            d_x = p.csr(g) @ W_enc.t() if p.nnz else torch.zeros_like(x)
            if cols_b is not None and grad_block is not None:
                d_x = d_x + grad_block @ W_enc.index_select(1, cols_b).t()
        return d_x, d_bdec, d_W, (d_benc if need_benc else None), None, None, None


def sorted_by_row(pattern: SparsePattern, values: torch.Tensor) -> tuple[SparsePattern, torch.Tensor]:
    """The same entries re-ordered by row (stable), and the values in that order."""
    order = torch.argsort(pattern.rows, stable=True)
    p = SparsePattern(pattern.rows[order], pattern.cols[order], pattern.n_rows, pattern.n_cols)
    p._row_sorted = True
    return p, values[order]


def sparse_preacts(
    x: torch.Tensor,
    b_dec: torch.Tensor | None,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    h: torch.Tensor,
    pattern: SparsePattern,
) -> torch.Tensor:
    """``[nnz]`` pre-activations ``h[rows, cols]`` with sparse gradients to the encoder.

    ``h`` ``[n, d_sae]`` must equal ``(x - b_dec) @ W_enc + b_enc`` (``b_dec=None``: no
    centring); it is only read, so compute it under ``torch.no_grad()``. Gradients flow to
    ``W_enc``, ``b_enc``, ``b_dec`` (and ``x`` if it requires grad) as if ``h`` had been
    computed with autograd, but cost ``O(nnz d_in)`` instead of a dense matmul.
    """
    vals, _ = _SparsePreacts.apply(x, b_dec, W_enc, b_enc, h.detach(), pattern, None)
    return vals


def sparse_preacts_with_block(
    x: torch.Tensor,
    b_dec: torch.Tensor | None,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    h: torch.Tensor,
    pattern: SparsePattern,
    block_cols: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sparse_preacts`` plus a dense column block ``h[:, block_cols]`` ``[n, n_block]``.

    For a small set of columns (e.g. AuxK's dead latents) whose sub-matrix is itself fairly
    dense, dense products on the block (``dW_enc[:, block] = x_c^T @ dH_block``) beat the
    sparse kernels. One encoder gradient is produced for both parts.
    """
    vals, block = _SparsePreacts.apply(x, b_dec, W_enc, b_enc, h.detach(), pattern, block_cols)
    return vals, block
