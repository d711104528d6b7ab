"""The sparse TopK kernels equal dense autograd: values and every gradient, fp64 and fp32."""

from __future__ import annotations

import pytest
import torch

from mechscope.dictionary import DictionaryConfig, make_dictionary
from mechscope.dictionary.kernels import SparsePattern, sorted_by_row, sparse_decode, sparse_preacts
from mechscope.dictionary.topk import batch_topk_pattern

TOL = {torch.float64: {"atol": 1e-12, "rtol": 1e-10}, torch.float32: {"atol": 2e-5, "rtol": 2e-5}}
DTYPES = [torch.float64, torch.float32]


def _topk_case(dtype: torch.dtype, n: int = 37, d_in: int = 12, m: int = 50, k: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=dtype)
    W_enc = torch.randn(d_in, m, generator=g, dtype=dtype)
    b_enc = torch.randn(m, generator=g, dtype=dtype)
    W_dec = torch.randn(m, d_in, generator=g, dtype=dtype)
    b_dec = torch.randn(d_in, generator=g, dtype=dtype)
    h = (x - b_dec) @ W_enc + b_enc
    idx = h.topk(k, dim=1).indices
    return x, W_enc, b_enc, W_dec, b_dec, h, idx


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_decode_equals_dense_with_gradients(dtype: torch.dtype) -> None:
    x, _, _, W_dec, b_dec, _, idx = _topk_case(dtype)
    n, m = x.shape[0], W_dec.shape[0]
    vals = torch.rand(idx.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    upstream = torch.randn(n, W_dec.shape[1], dtype=dtype, generator=torch.Generator().manual_seed(2))

    leaves_s = [t.clone().requires_grad_() for t in (vals, W_dec, b_dec)]
    y_s = sparse_decode(leaves_s[0].reshape(-1), SparsePattern.from_topk(idx, m), leaves_s[1], leaves_s[2])
    (y_s * upstream).sum().backward()

    leaves_d = [t.clone().requires_grad_() for t in (vals, W_dec, b_dec)]
    f = torch.zeros(n, m, dtype=dtype).scatter(1, idx, leaves_d[0])  # dense codes [n, m]
    y_d = f @ leaves_d[1] + leaves_d[2]
    (y_d * upstream).sum().backward()

    torch.testing.assert_close(y_s, y_d, **TOL[dtype])
    for a, b in zip(leaves_s, leaves_d, strict=True):
        assert a.grad is not None and b.grad is not None
        torch.testing.assert_close(a.grad, b.grad, **TOL[dtype])
    # W_dec's gradient is zero outside the active rows
    untouched = torch.ones(m, dtype=torch.bool)
    untouched[idx.unique()] = False
    assert leaves_s[1].grad is not None and untouched.any()
    assert (leaves_s[1].grad[untouched] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("centre", [True, False])
@pytest.mark.parametrize("x_grad", [False, True])
def test_sparse_preacts_gradients_equal_dense_autograd(
    dtype: torch.dtype, centre: bool, x_grad: bool
) -> None:
    """Selected pre-activations (TopK entries plus duplicated aux entries) vs dense autograd."""
    x, W_enc, b_enc, _, b_dec, _, idx = _topk_case(dtype, seed=3)
    n, m = x.shape[0], W_enc.shape[1]
    aux_idx = torch.randint(0, m, (n, 7), generator=torch.Generator().manual_seed(4))
    main, aux = SparsePattern.from_topk(idx, m), SparsePattern.from_topk(aux_idx, m)
    both = SparsePattern(torch.cat([main.rows, aux.rows]), torch.cat([main.cols, aux.cols]), n, m)
    w = torch.randn(both.nnz, dtype=dtype, generator=torch.Generator().manual_seed(5))

    def leaves():
        return [t.clone().requires_grad_(t is not x or x_grad) for t in (x, b_dec, W_enc, b_enc)]

    ls = leaves()
    bd = ls[1] if centre else None
    with torch.no_grad():
        h = ((ls[0] - ls[1]) if centre else ls[0]) @ ls[2] + ls[3]
    pre_s = sparse_preacts(ls[0], bd, ls[2], ls[3], h, both)
    (pre_s * w).sum().backward()

    ld = leaves()
    h_d = ((ld[0] - ld[1]) if centre else ld[0]) @ ld[2] + ld[3]
    pre_d = h_d[both.rows, both.cols]
    (pre_d * w).sum().backward()

    torch.testing.assert_close(pre_s, pre_d, **TOL[dtype])
    for i, (a, b) in enumerate(zip(ls, ld, strict=True)):
        if i == 0 and not x_grad:
            assert a.grad is None
            continue
        if i == 1 and not centre:
            assert a.grad is None
            continue
        assert a.grad is not None and b.grad is not None, i
        torch.testing.assert_close(a.grad, b.grad, **TOL[dtype])


def test_unsorted_and_empty_patterns() -> None:
    dtype = torch.float64
    g = torch.Generator().manual_seed(7)
    W_dec = torch.randn(20, 6, dtype=dtype, generator=g)
    rows = torch.tensor([3, 0, 3, 1, 0])
    cols = torch.tensor([4, 4, 19, 0, 2])
    vals = torch.randn(5, dtype=dtype, generator=g)
    p = SparsePattern(rows, cols, 4, 20)
    assert not p.row_sorted
    ps, vs = sorted_by_row(p, vals)
    y = sparse_decode(vs, ps, W_dec)
    torch.testing.assert_close(y, p.to_dense(vals) @ W_dec)
    with pytest.raises(ValueError, match="not sorted"):
        sparse_decode(vals, p, W_dec)
    empty = SparsePattern(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 4, 20)
    W = W_dec.clone().requires_grad_()
    y0 = sparse_decode(torch.zeros(0, dtype=dtype, requires_grad=True), empty, W)
    y0.sum().backward()
    assert (y0 == 0).all() and W.grad is not None and (W.grad == 0).all()


def test_batch_topk_pattern_equals_flat_topk() -> None:
    g = torch.Generator().manual_seed(8)
    h = torch.randn(16, 40, generator=g, dtype=torch.float64)
    h[3] += 5.0  # one row holds far more than its share: forces the candidate set to grow
    total = 16 * 3
    p, vals = batch_topk_pattern(h, total)
    flat = h.reshape(-1).topk(total).indices
    expect = torch.zeros_like(h, dtype=torch.bool).reshape(-1)
    expect[flat] = True
    got = torch.zeros_like(h, dtype=torch.bool)
    got[p.rows, p.cols] = True
    assert p.row_sorted and torch.equal(got.reshape(-1), expect)
    torch.testing.assert_close(vals, h[p.rows, p.cols])


def _dense_topk_step(d, x: torch.Tensor, dead: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Reference TopK + AuxK loss with dense tensors and plain autograd (SAE or transcoder)."""
    cfg = d.config
    y = x if y is None else y
    h = ((x - d.b_dec) if cfg.apply_b_dec_to_input else x) @ d.W_enc + d.b_enc
    v, i = h.topk(cfg.k, dim=1)
    f = torch.zeros_like(h).scatter(1, i, v.relu())
    y_hat = f @ d.W_dec + d.b_dec + (x @ d.W_skip if d.W_skip is not None else 0)
    mse = (y - y_hat).pow(2).sum() / x.shape[0]
    e = (y - y_hat).detach()
    k_aux = min(cfg.aux_k or cfg.d_in // 2, int(dead.sum()))
    va, ia = torch.where(dead, h, -torch.inf).topk(k_aux, dim=1)
    z = torch.zeros_like(h).scatter(1, ia, va.relu())
    aux = (e - z @ d.W_dec).pow(2).sum() / (e - e.mean(0)).pow(2).sum()
    return mse + cfg.aux_coefficient * aux


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("aux_k", [6, 2], ids=["aux-dense-block", "aux-sparse"])
@pytest.mark.parametrize("transcoder", [False, True], ids=["sae", "transcoder-skip"])
def test_topk_training_step_gradients_equal_dense_reference(dtype: str, aux_k: int, transcoder: bool) -> None:
    """The whole TopK training forward (sparse encoder + decoder + AuxK) vs dense autograd.

    16 dead latents: with ``aux_k=6`` AuxK takes the dense dead-block path (16 <= 4 * 6),
    with ``aux_k=2`` the sparse-pattern path. The transcoder case has d_out=7, no input
    centring and a skip connection.
    """
    torch.manual_seed(0)
    tc = {"d_out": 7, "hook_name_out": "out", "apply_b_dec_to_input": False, "skip_connection": True}
    cfg = DictionaryConfig(
        "topk", d_in=10, d_sae=48, k=4, dtype=dtype, aux_k=aux_k, **(tc if transcoder else {})
    )
    d = make_dictionary(cfg)
    with torch.no_grad():
        d.b_dec.normal_()
        d.b_enc.normal_()
        if d.W_skip is not None:
            d.W_skip.normal_()
    x = torch.randn(33, 10, dtype=getattr(torch, dtype))
    y = torch.randn(33, 7, dtype=getattr(torch, dtype)) if transcoder else None
    dead = torch.zeros(48, dtype=torch.bool)
    dead[::3] = True
    out = d.training_forward(x, y, dead_mask=dead)
    out.loss.backward()
    sparse_grads = {k: p.grad.clone() for k, p in d.named_parameters() if p.grad is not None}
    d.zero_grad(set_to_none=True)
    ref = _dense_topk_step(d, x, dead, y)
    ref.backward()
    tol = TOL[getattr(torch, dtype)]
    torch.testing.assert_close(out.loss, ref, **tol)
    assert set(sparse_grads) == {"W_enc", "b_enc", "W_dec", "b_dec"} | ({"W_skip"} if transcoder else set())
    for name, grad in sparse_grads.items():
        ref_grad = dict(d.named_parameters())[name].grad
        assert ref_grad is not None
        torch.testing.assert_close(grad, ref_grad, **tol, msg=name)


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka"])
@pytest.mark.parametrize("aux_k", [6, 2], ids=["aux-dense-block", "aux-sparse"])
def test_batch_family_auxk_equals_dense_formula(arch: str, aux_k: int) -> None:
    """AuxK value and its W_dec gradient for the BatchTopK family vs a dense computation."""
    torch.manual_seed(0)
    widths = (16, 48) if arch == "matryoshka" else ()
    cfg = DictionaryConfig(
        arch, d_in=10, d_sae=48, k=4, dtype="float64", aux_k=aux_k, matryoshka_widths=widths
    )
    d = make_dictionary(cfg)
    x = torch.randn(33, 10, dtype=torch.float64)
    dead = torch.zeros(48, dtype=torch.bool)
    dead[::3] = True
    out = d.training_forward(x, dead_mask=dead)
    with torch.no_grad():
        h = (x - d.b_dec) @ d.W_enc + d.b_enc
        e = x - out.y_hat
        va, ia = torch.where(dead, h, -torch.inf).topk(aux_k, dim=1)
        z = torch.zeros_like(h).scatter(1, ia, va.relu())
        aux = (e - z @ d.W_dec).pow(2).sum() / (e - e.mean(0)).pow(2).sum()
    torch.testing.assert_close(out.losses["auxk"], aux)
    rec = out.loss - aux / 32
    expect_rec = (
        out.losses["mse"] if arch == "batchtopk" else (out.losses["mse_level_0"] + out.losses["mse"]) / 2
    )
    torch.testing.assert_close(rec, expect_rec)
