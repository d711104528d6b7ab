"""TopK and BatchTopK SAEs (and transcoders) with the AuxK dead-latent loss, on sparse kernels.

The TopK family shares one training step (``_SparseFamily.training_forward``):

1. ``h = (x - b_dec) @ W_enc + b_enc`` ``[n, d_sae]``, computed densely without grad (the one
   dense cost; the encoder matmul);
2. select the active entries of ``h`` (a ``SparsePattern``; TopK: ``k`` per row, BatchTopK:
   ``k n`` over the batch), and for AuxK the top ``k_aux`` dead latents per row;
3. ``f = ReLU(h[selected])`` through ``kernels.sparse_preacts`` (sparse encoder gradients);
4. ``y_hat = f @ W_dec + b_dec`` through ``kernels.sparse_decode`` (only active decoder rows).

AuxK (Gao et al. 2024, appendix A.2), the exact form used here, with ``e = y - y_hat``
detached and ``D`` the dead latents (``dead_mask``, supplied by the trainer):

* ``z = ReLU(TopK_{k_aux}(h restricted to D))`` per row, ``k_aux = min(aux_k, |D|)``,
  ``aux_k`` defaulting to ``d_in // 2``;
* ``e_hat = z @ W_dec`` (no ``b_dec``: the bias is already inside ``e``);
* ``L_aux = alpha sum_n ||e_n - e_hat_n||^2 / sum_n ||e_n - mean(e)||^2`` with
  ``alpha = aux_coefficient`` (default 1/32), i.e. normalised by the batch variance of
  ``e`` as in OpenAI's code and dictionary_learning.

SAELens (v6) differs: ``alpha = 1``, no variance normalisation but a factor
``min(|D| / k_aux, 1)``, and no ReLU on the aux codes. Per batch SAELens's term equals ours
times ``32 min(|D|/k_aux, 1) sum||e - mean e||^2 / n`` (for the same ``e``).

Decoder: rows kept at unit norm. ``before_optimizer_step`` removes each row's gradient
component along the row, ``after_step`` renormalises the rows. Initialisation: unit random
rows, ``W_enc = W_dec^T`` when ``d_in == d_out`` (else unit random columns), biases zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._common import (
    DictionaryError,
    check_dead_mask,
    check_inputs,
    project_out_row_component_,
    unit_rows_,
)
from .base import Dictionary, DictionaryConfig, ForwardOutput
from .kernels import (
    SparsePattern,
    sparse_decode,
    sparse_decode_with_block,
    sparse_preacts,
    sparse_preacts_with_block,
)

AUX_BLOCK_RATIO = 4
"""AuxK uses dense products on the dead-latent block when ``n_dead <= AUX_BLOCK_RATIO * k_aux``."""


def _aux_pattern(h: torch.Tensor, dead: torch.Tensor, k_aux: int) -> SparsePattern:
    """Row-sorted pattern of the ``k_aux`` largest ``h[:, dead]`` per row (global latent ids)."""
    local = h.index_select(1, dead).topk(k_aux, dim=1, sorted=False).indices  # [n, k_aux]
    p = SparsePattern.from_topk(local, h.shape[1])
    p.cols = dead[p.cols]
    return p


class _Aux:
    """AuxK codes: a dense ``[n, n_dead]`` block over the dead latents, or sparse ``[nnz]`` values."""

    def __init__(
        self,
        latents: torch.Tensor,
        z: torch.Tensor,
        block: bool = False,
        pattern: SparsePattern | None = None,
    ) -> None:
        self.latents = latents  # [n_dead] dead latent ids
        self.z = z
        self.block = True if block else None  # set: decode with the dense-block kernel
        self.pattern = pattern

    def decode(self, W_dec: torch.Tensor) -> torch.Tensor:
        """``e_hat = z @ W_dec`` (no bias), ``[n, d_out]``."""
        if self.pattern is not None:
            return sparse_decode(self.z, self.pattern, W_dec)
        return self.z @ W_dec.index_select(0, self.latents)


class _SparseFamily(Dictionary):
    """Shared TopK-family machinery: sparse step, AuxK, unit-norm decoder."""

    def __init__(self, config: DictionaryConfig) -> None:
        if config.k is None or config.k < 1:
            raise DictionaryError(f"architecture {config.architecture!r} needs k >= 1, got k={config.k}")
        super().__init__(config)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Unit-norm random decoder rows; encoder ``W_dec^T`` (or unit random columns)."""
        super().reset_parameters(generator)
        with torch.no_grad():
            unit_rows_(self.W_dec)
            if self.W_enc.shape == self.W_dec.T.shape:
                self.W_enc.copy_(self.W_dec.T)
            else:
                self.W_enc.div_(self.W_enc.norm(dim=0, keepdim=True))

    @property
    def aux_k(self) -> int:
        """Dead latents per row for AuxK (``config.aux_k`` or ``d_in // 2``)."""
        return self.config.aux_k if self.config.aux_k is not None else max(1, self.config.d_in // 2)

    # -- selection ------------------------------------------------------------------------

    def select(self, h: torch.Tensor) -> SparsePattern:
        """Row-sorted pattern of the active entries of ``h`` ``[n, d_sae]`` during training."""
        raise NotImplementedError

    def aux_select(self, h: torch.Tensor, dead_mask: torch.Tensor | None) -> SparsePattern | None:
        """Top ``k_aux`` dead latents per row as a pattern (None when AuxK is off or none is dead)."""
        plan = self._aux_plan(dead_mask)
        return None if plan is None else _aux_pattern(h, *plan)

    def _aux_plan(self, dead_mask: torch.Tensor | None) -> tuple[torch.Tensor, int] | None:
        """``(dead latent ids, k_aux)``, or None when AuxK does not run this step."""
        if dead_mask is None or self.config.aux_coefficient == 0:
            return None
        dead = dead_mask.nonzero().squeeze(1)  # [n_dead]
        if dead.numel() == 0:
            return None
        return dead, min(self.aux_k, int(dead.numel()))

    # -- training -------------------------------------------------------------------------

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., d_in] -> [..., d_sae]`` pre-activations (one fused ``addmm`` for 2-D input)."""
        if x.dim() != 2:
            return super().pre_acts(x)
        x_c = x - self.b_dec if self.config.apply_b_dec_to_input else x
        return torch.addmm(self.b_enc, x_c, self.W_enc)

    def _train_pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """``pre_acts`` into a buffer reused across steps (no grad; nothing keeps ``h``).

        A fresh ``[n, d_sae]`` tensor every step costs page faults on first touch (the
        allocator returns such big blocks to the OS); reusing one avoids that.
        """
        x_c = x - self.b_dec if self.config.apply_b_dec_to_input else x
        shape, dtype = (x.shape[0], self.config.d_sae), self.W_enc.dtype
        buf = self.__dict__.get("_h_buffer")
        if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != x.device:
            buf = torch.empty(shape, dtype=dtype, device=x.device)
            self.__dict__["_h_buffer"] = buf
        return torch.addmm(self.b_enc, x_c, self.W_enc, out=buf)

    def reconstruct(
        self, values: torch.Tensor, pattern: SparsePattern, x: torch.Tensor, y: torch.Tensor, aux: _Aux | None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        """``(y_hat, reconstruction loss, logged terms, AuxK e_hat)``; Matryoshka overrides it."""
        e_hat: torch.Tensor | None = None
        if aux is not None and aux.block is not None:
            y_lin, e_hat = sparse_decode_with_block(values, pattern, self.W_dec, aux.z, aux.latents)
            y_hat = y_lin + self.b_dec
        else:
            y_hat = sparse_decode(values, pattern, self.W_dec, self.b_dec)
            e_hat = None if aux is None else aux.decode(self.W_dec)
        if self.W_skip is not None:
            y_hat = y_hat + x @ self.W_skip
        mse = (y - y_hat).pow(2).sum() / y.shape[0]
        return y_hat, mse, {"mse": mse.detach()}, e_hat

    def decode_sparse(self, values: torch.Tensor, pattern: SparsePattern, x: torch.Tensor) -> torch.Tensor:
        """``[n, d_out]`` reconstruction from sparse codes (``values`` at ``pattern``)."""
        y_hat = sparse_decode(values, pattern, self.W_dec, self.b_dec)
        if self.W_skip is not None:
            y_hat = y_hat + x @ self.W_skip
        return y_hat

    def training_forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        sparsity_coefficient: float = 0.0,
        dead_mask: torch.Tensor | None = None,
    ) -> ForwardOutput:
        """Sparse training step (module docstring); ``sparsity_coefficient`` is ignored."""
        cfg = self.config
        x, y = check_inputs(x, y, cfg.d_in, cfg.out_dim, cfg.is_transcoder)
        plan = self._aux_plan(check_dead_mask(dead_mask, cfg.d_sae))
        with torch.no_grad():
            h = self._train_pre_acts(x)  # [n, d_sae]
            main = self.select(h)
        values, aux = self._encode_for_training(x, h, main, plan)
        y_hat, loss, losses, e_hat = self.reconstruct(values, main, x, y, aux)
        with torch.no_grad():
            e = (y - y_hat).detach()  # [n, d_out] residual of the live reconstruction
            var = (y - y.mean(0)).pow(2).sum().clamp_min(torch.finfo(y.dtype).tiny)
            positive = values > 0
            fired = torch.zeros(cfg.d_sae, dtype=torch.bool, device=x.device)
            fired[main.cols[positive]] = True
        losses.update(l0=positive.sum().float() / x.shape[0], fvu=e.pow(2).sum() / var)
        losses["auxk"] = torch.zeros((), dtype=loss.dtype, device=loss.device)  # stable keys
        if e_hat is not None:
            denom = (e - e.mean(0)).pow(2).sum().clamp_min(torch.finfo(e.dtype).tiny)
            aux_loss = (e - e_hat).pow(2).sum() / denom
            loss = loss + cfg.aux_coefficient * aux_loss
            losses["auxk"] = aux_loss.detach()
        codes, indices = self.output_codes(values, main)
        self._observe(values, main)
        return ForwardOutput(y_hat, codes, indices, loss, losses, fired)

    def _encode_for_training(
        self, x: torch.Tensor, h: torch.Tensor, main: SparsePattern, plan: tuple[torch.Tensor, int] | None
    ) -> tuple[torch.Tensor, _Aux | None]:
        """Codes ``ReLU(h[main])`` with sparse encoder grads, and the AuxK codes.

        AuxK runs on the dead latents' dense column block when there are few of them
        (``n_dead <= AUX_BLOCK_RATIO k_aux``: dense products on ``[n, n_dead]`` beat gathers),
        and through the sparse kernels otherwise.
        """
        b_dec = self.b_dec if self.config.apply_b_dec_to_input else None
        if plan is None:
            return F.relu(sparse_preacts(x, b_dec, self.W_enc, self.b_enc, h, main)), None
        dead, k_aux = plan
        if dead.numel() <= AUX_BLOCK_RATIO * k_aux:
            pre, h_dead = sparse_preacts_with_block(x, b_dec, self.W_enc, self.b_enc, h, main, dead)
            with torch.no_grad():
                keep = torch.ones_like(h_dead, dtype=torch.bool)
                if k_aux < dead.numel():
                    top = h_dead.topk(k_aux, dim=1, sorted=False).indices  # [n, k_aux] block-local
                    keep = torch.zeros_like(keep).scatter_(1, top, True)
            z = F.relu(h_dead) * keep  # [n, n_dead]
            return F.relu(pre), _Aux(dead, z, block=True)
        with torch.no_grad():
            aux = _aux_pattern(h, dead, k_aux)
        both = SparsePattern(torch.cat([main.rows, aux.rows]), torch.cat([main.cols, aux.cols]), *h.shape)
        pre = sparse_preacts(x, b_dec, self.W_enc, self.b_enc, h, both)  # [nnz_main + nnz_aux]
        return F.relu(pre[: main.nnz]), _Aux(dead, F.relu(pre[main.nnz :]), pattern=aux)

    def output_codes(
        self, values: torch.Tensor, pattern: SparsePattern
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What ``ForwardOutput.codes``/``indices`` hold (TopK: ``[n, k]`` values and indices)."""
        return pattern.to_dense(values), None

    def _observe(self, values: torch.Tensor, pattern: SparsePattern) -> None:
        """Hook for statistics gathered during training (BatchTopK's threshold)."""

    def before_optimizer_step(self) -> None:
        """Project out the radial component of each decoder row's gradient."""
        if self.W_dec.grad is not None:
            with torch.no_grad():
                project_out_row_component_(self.W_dec.grad, self.W_dec)

    def after_step(self) -> None:
        """Renormalise decoder rows to unit norm."""
        with torch.no_grad():
            unit_rows_(self.W_dec)


class TopKDictionary(_SparseFamily):
    """``architecture="topk"``: ``f = ReLU(TopK_k(h))`` with the AuxK dead-latent loss.

    Forward: ``h = (x - b_dec) @ W_enc + b_enc`` (no ``- b_dec`` for transcoders); keep the
    ``k`` largest entries of each row of ``h`` and apply ReLU, zero elsewhere;
    ``y_hat = f @ W_dec + b_dec`` (``+ x @ W_skip``), decoded sparsely.

    Loss: ``L = (1/n) sum_n ||y_n - y_hat_n||^2 + aux_coefficient L_aux`` with ``L_aux`` the
    AuxK term of the module docstring (0 when no latent is dead). Decoder rows have unit
    norm (projected gradients, renormalised after each step). ``ForwardOutput.codes`` is
    the ``[n, k]`` values and ``indices`` the ``[n, k]`` latent ids.
    """

    def select(self, h: torch.Tensor) -> SparsePattern:
        """``k`` largest pre-activations per row."""
        k = min(int(self.config.k or 0), h.shape[1])
        return SparsePattern.from_topk(h.topk(k, dim=1, sorted=False).indices, h.shape[1])

    def output_codes(
        self, values: torch.Tensor, pattern: SparsePattern
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[n, k]`` values and indices."""
        n = pattern.n_rows
        return values.view(n, -1), pattern.cols.view(n, -1)

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values [n, k], indices [n, k])`` of ``ReLU(TopK_k(h))`` for ``x`` ``[n, d_in]``."""
        v, i = self.pre_acts(x).topk(min(int(self.config.k or 0), self.config.d_sae), dim=-1, sorted=False)
        return F.relu(v), i

    def activation(self, h: torch.Tensor) -> torch.Tensor:
        """Dense ``ReLU(TopK_k(h))`` along the last dimension."""
        v, i = h.topk(min(int(self.config.k or 0), h.shape[-1]), dim=-1, sorted=False)
        return torch.zeros_like(h).scatter_(-1, i, F.relu(v))


def batch_topk_pattern(h: torch.Tensor, total: int) -> tuple[SparsePattern, torch.Tensor]:
    """The ``total`` largest entries of ``h`` ``[n, d_sae]`` over the whole batch (row-sorted).

    Exact (up to ties) without a flat top-k over ``n d_sae`` entries: take the top ``c`` of
    each row as candidates and the global top ``total`` among them. If no row had all ``c``
    of its candidates selected, every selected entry is a candidate of its row and the result
    is the global one; otherwise ``c`` grows and the search repeats. Returns the pattern
    and the selected values in its order.
    """
    n, m = h.shape
    total = min(total, n * m)
    c = min(m, max(1, 4 * math.ceil(total / max(n, 1))))
    while True:
        cand_v, cand_i = h.topk(c, dim=1, sorted=False)  # [n, c]
        top_v, pos = cand_v.reshape(-1).topk(total, sorted=False)
        if c == m or int(torch.bincount(pos // c, minlength=n).max()) < c:
            break
        c = min(m, 4 * c)
    pos, order = pos.sort()
    p = SparsePattern(pos // c, cand_i.reshape(-1)[pos], n, m)
    p._row_sorted = True
    return p, top_v[order]


class BatchTopKDictionary(_SparseFamily):
    """``architecture="batchtopk"``: top ``k n`` of ``ReLU(h)`` over the batch; JumpReLU at inference.

    Training forward: ``h`` as for TopK; keep the ``k n`` largest entries of ``ReLU(h)`` over
    the whole ``[n, d_sae]`` batch (rows get different numbers of latents, ``k`` on
    average); ``y_hat = f @ W_dec + b_dec`` decoded sparsely. Loss: as TopK (MSE + AuxK).

    Inference threshold: ``threshold`` ``[d_sae]`` fp32 (all entries equal; not trained by
    gradient). After every step ``theta <- theta + lr (t - theta)`` with ``t`` the smallest
    positive selected activation of the batch and ``lr = batchtopk_threshold_lr``, starting
    from 0 (SAELens's rule); it settles after a few hundred steps. Inference (``encode``) is
    JumpReLU: ``f = h * 1[h > theta]`` (``theta >= 0``, so ReLU is implied), which is what a
    BatchTopK SAE is saved as. Under data parallelism the top ``k n`` is over each rank's
    local batch. ``ForwardOutput.codes`` is dense ``[n, d_sae]``.
    """

    def __init__(self, config: DictionaryConfig) -> None:
        super().__init__(config)
        self.threshold = nn.Parameter(torch.zeros(config.d_sae, dtype=torch.float32), requires_grad=False)
        self._pending: torch.Tensor | None = None

    def select(self, h: torch.Tensor) -> SparsePattern:
        """``k n`` largest entries of the batch."""
        pattern, _ = batch_topk_pattern(h, int(self.config.k or 0) * h.shape[0])
        return pattern

    def activation(self, h: torch.Tensor) -> torch.Tensor:
        """JumpReLU with the running threshold: ``h * 1[h > theta]`` (and ``h > 0``)."""
        keep = (h.float() > self.threshold) & (h > 0)
        return h * keep

    def _observe(self, values: torch.Tensor, pattern: SparsePattern) -> None:
        pos = values.detach()[values.detach() > 0]
        self._pending = pos.min().float() if pos.numel() else None

    def after_step(self) -> None:
        """Renormalise the decoder; move the threshold towards this batch's minimum."""
        super().after_step()
        if self._pending is not None:
            with torch.no_grad():
                self.threshold.add_(self.config.batchtopk_threshold_lr * (self._pending - self.threshold))
            self._pending = None
