"""Each architecture's forward pass and loss equal the formulas in its docstring."""

from __future__ import annotations

import pytest
import torch

from mechscope.dictionary import (
    ARCHITECTURES,
    DICTIONARY_CLASSES,
    Dictionary,
    DictionaryConfig,
    DictionaryError,
    make_dictionary,
)
from mechscope.dictionary.jumprelu import heaviside_step, jumprelu

D_IN, D_SAE = 8, 32


def _cfg(arch: str, **kw) -> DictionaryConfig:
    base: dict = {"d_in": D_IN, "d_sae": D_SAE, "k": 3, "dtype": "float64"}
    if arch == "matryoshka":
        base["matryoshka_widths"] = (4, 12, D_SAE)
    base.update(kw)
    return DictionaryConfig(arch, **base)


def _randomised(d: Dictionary, seed: int = 0) -> Dictionary:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in d.named_parameters():
            if name == "threshold":
                p.copy_(0.2 + 0.1 * torch.rand(p.shape, generator=g, dtype=p.dtype))
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.3 if p.dim() == 2 else 0.1))
    return d


def _x(n: int = 20, d: int = D_IN, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_registry_covers_every_architecture() -> None:
    assert set(DICTIONARY_CLASSES) == set(ARCHITECTURES)
    for arch in ARCHITECTURES:
        d = make_dictionary(_cfg(arch))
        assert isinstance(d, DICTIONARY_CLASSES[arch])
        shapes = {k: tuple(v.shape) for k, v in d.named_parameters()}
        assert shapes["W_enc"] == (D_IN, D_SAE) and shapes["W_dec"] == (D_SAE, D_IN)
        if arch in ("jumprelu", "batchtopk", "matryoshka"):
            assert d.threshold.dtype == torch.float32 and d.threshold.shape == (D_SAE,)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"architecture": "gated"}, "unknown architecture"),
        ({"architecture": "topk", "k": None}, "needs k"),
        ({"architecture": "batchtopk", "k": 0}, "needs k"),
        ({"architecture": "topk", "d_out": 5}, "apply_b_dec_to_input"),
        ({"architecture": "matryoshka", "matryoshka_widths": (8, 4, 32)}, "increasing"),
        ({"architecture": "matryoshka", "matryoshka_widths": (8, 16)}, "d_sae"),
        ({"architecture": "relu", "dtype": "int8"}, "dtype"),
    ],
)
def test_bad_configs_raise_clear_errors(kw: dict, match: str) -> None:
    arch = kw.pop("architecture")
    with pytest.raises(DictionaryError, match=match):
        make_dictionary(_cfg(arch, **kw))


def test_relu_forward_and_loss_match_formula() -> None:
    d = _randomised(make_dictionary(_cfg("relu")))
    x, lam = _x(), 0.37
    out = d.training_forward(x, sparsity_coefficient=lam)
    h = (x - d.b_dec) @ d.W_enc + d.b_enc
    f = h.clamp_min(0)
    y_hat = f @ d.W_dec + d.b_dec
    mse = ((x - y_hat) ** 2).sum(1).mean()
    penalty = (f * d.W_dec.norm(dim=1)).sum(1).mean()
    torch.testing.assert_close(out.loss, mse + lam * penalty)
    torch.testing.assert_close(out.y_hat, y_hat)
    torch.testing.assert_close(d.encode(x), f)
    assert torch.equal(out.fired, (f > 0).any(0))
    # decoder unconstrained: after_step leaves the rows alone
    before = d.W_dec.detach().clone()
    d.after_step()
    assert torch.equal(before, d.W_dec)


def test_topk_codes_and_inference() -> None:
    d = _randomised(make_dictionary(_cfg("topk", k=4)))
    x = _x()
    out = d.training_forward(x)
    h = (x - d.b_dec) @ d.W_enc + d.b_enc
    v, i = h.topk(4, dim=1)
    f = torch.zeros_like(h).scatter(1, i, v.clamp_min(0))
    assert out.indices is not None and out.codes.shape == (x.shape[0], 4)
    dense = torch.zeros_like(h).scatter(1, out.indices, out.codes)
    torch.testing.assert_close(dense, f)
    torch.testing.assert_close(d.encode(x), f)
    torch.testing.assert_close(out.y_hat, f @ d.W_dec + d.b_dec)
    torch.testing.assert_close(d(x), out.y_hat)
    assert float(out.losses["auxk"]) == 0.0  # no dead mask: no aux term
    torch.testing.assert_close(out.loss, ((x - out.y_hat) ** 2).sum(1).mean())


def test_auxk_is_off_without_dead_latents_and_scales_with_coefficient() -> None:
    x = _x()
    none_dead = torch.zeros(D_SAE, dtype=torch.bool)
    some_dead = none_dead.clone()
    some_dead[5:20] = True
    d = _randomised(make_dictionary(_cfg("topk")))
    out0 = d.training_forward(x, dead_mask=none_dead)
    assert float(out0.losses["auxk"]) == 0.0
    torch.testing.assert_close(out0.loss, out0.losses["mse"])
    out1 = d.training_forward(x, dead_mask=some_dead)
    torch.testing.assert_close(out1.loss, out1.losses["mse"] + (1 / 32) * out1.losses["auxk"])
    d2 = _randomised(make_dictionary(_cfg("topk", aux_coefficient=0.0)))
    out2 = d2.training_forward(x, dead_mask=some_dead)
    assert float(out2.losses["auxk"]) == 0.0
    torch.testing.assert_close(out2.loss, out2.losses["mse"])
    with pytest.raises(DictionaryError, match="dead_mask"):
        d.training_forward(x, dead_mask=torch.zeros(D_SAE))


def test_unit_norm_decoder_projection_and_renormalisation() -> None:
    d = make_dictionary(_cfg("topk"))
    torch.testing.assert_close(d.W_dec.norm(dim=1), torch.ones(D_SAE, dtype=torch.float64))
    torch.testing.assert_close(d.W_enc, d.W_dec.T)
    out = d.training_forward(_x())
    out.loss.backward()
    d.before_optimizer_step()
    assert d.W_dec.grad is not None
    radial = (d.W_dec.grad * d.W_dec).sum(1)
    torch.testing.assert_close(radial, torch.zeros_like(radial), atol=1e-12, rtol=0)
    with torch.no_grad():
        d.W_dec.mul_(3.0)
    d.after_step()
    torch.testing.assert_close(d.W_dec.norm(dim=1), torch.ones(D_SAE, dtype=torch.float64))


def test_batchtopk_selects_over_batch_and_tracks_threshold() -> None:
    d = _randomised(make_dictionary(_cfg("batchtopk", k=3, batchtopk_threshold_lr=0.5)))
    with torch.no_grad():
        d.threshold.zero_()
    x = _x(n=10)
    out = d.training_forward(x)
    h = (x - d.b_dec) @ d.W_enc + d.b_enc
    r = h.clamp_min(0).reshape(-1)
    keep = torch.zeros_like(r).index_fill(0, r.topk(30).indices, 1.0).reshape(h.shape)
    f = h.clamp_min(0) * keep
    torch.testing.assert_close(out.codes, f)
    torch.testing.assert_close(out.y_hat, f @ d.W_dec + d.b_dec)
    t = f[f > 0].min().detach()
    d.after_step()
    torch.testing.assert_close(d.threshold, torch.full((D_SAE,), 0.5 * float(t), dtype=torch.float32))
    # inference is JumpReLU with that threshold
    theta = d.threshold.double()
    torch.testing.assert_close(d.encode(x), h * (h > theta))


def test_matryoshka_loss_is_mean_of_prefix_losses() -> None:
    d = _randomised(make_dictionary(_cfg("matryoshka", k=4)))
    x = _x(n=12)
    out = d.training_forward(x)
    f = out.codes  # dense [n, d_sae] BatchTopK codes
    levels = []
    for w in (4, 12, D_SAE):
        y_l = f[:, :w] @ d.W_dec[:w] + d.b_dec
        levels.append(((x - y_l) ** 2).sum(1).mean())
    torch.testing.assert_close(out.loss, torch.stack(levels).mean())
    torch.testing.assert_close(out.y_hat, f @ d.W_dec + d.b_dec)
    for i, v in enumerate(levels):
        torch.testing.assert_close(out.losses[f"mse_level_{i}"], v)


def test_jumprelu_forward_loss_and_pseudo_gradients() -> None:
    cfg = _cfg("jumprelu", jumprelu_bandwidth=0.2)
    d = _randomised(make_dictionary(cfg))
    x, lam = _x(), 0.05
    out = d.training_forward(x, sparsity_coefficient=lam)
    h = ((x - d.b_dec) @ d.W_enc + d.b_enc).detach()
    theta = d.threshold.detach().double()
    gate = (h > theta).double()
    f = h * gate
    torch.testing.assert_close(out.y_hat, f @ d.W_dec + d.b_dec)
    mse = ((x - out.y_hat) ** 2).sum(1).mean()
    torch.testing.assert_close(out.loss, mse + lam * gate.sum(1).mean())
    # pseudo-gradients on a hand case: d/dtheta of sum(jumprelu) and of sum(step)
    hh = torch.tensor([[0.29, 0.5, 0.31, -1.0]], dtype=torch.float64, requires_grad=True)
    th = torch.tensor([0.3, 0.3, 0.3, 0.3], dtype=torch.float32, requires_grad=True)
    jumprelu(hh, th, 0.1).sum().backward()
    inside = torch.tensor([1.0, 0.0, 1.0, 0.0])  # |h - theta| < eps/2
    torch.testing.assert_close(th.grad, -(0.3 / 0.1) * inside)
    assert hh.grad is not None
    torch.testing.assert_close(hh.grad, torch.tensor([[0.0, 1.0, 1.0, 0.0]], dtype=torch.float64))
    th.grad = None
    heaviside_step(hh, th, 0.1).sum().backward()
    torch.testing.assert_close(th.grad, -(1 / 0.1) * inside)
    # the threshold stays fp32 and is clamped at 0 after a step
    with torch.no_grad():
        d.threshold[0] = -1.0
    d.after_step()
    assert d.threshold.dtype == torch.float32 and float(d.threshold.detach()[0]) == 0.0


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("skip", [False, True])
def test_transcoders_every_architecture(arch: str, skip: bool) -> None:
    cfg = _cfg(
        arch,
        d_out=5,
        hook_name="blocks.0.ln2.hook_normalized",
        hook_name_out="blocks.0.hook_mlp_out",
        apply_b_dec_to_input=False,
        skip_connection=skip,
    )
    d = _randomised(make_dictionary(cfg))
    assert cfg.is_transcoder and (d.W_skip is not None) == skip
    x, y = _x(n=16), _x(n=16, d=5, seed=9)
    with pytest.raises(DictionaryError, match="needs the target"):
        d.training_forward(x)
    dead = torch.ones(D_SAE, dtype=torch.bool)
    out = d.training_forward(x, y, sparsity_coefficient=0.1, dead_mask=dead)
    h = x @ d.W_enc + d.b_enc  # no b_dec on the input side
    f = out.codes if out.indices is None else torch.zeros_like(h).scatter(1, out.indices, out.codes)
    nz = f != 0
    torch.testing.assert_close(f[nz], h[nz])
    expect = f @ d.W_dec + d.b_dec + (x @ d.W_skip if d.W_skip is not None else 0)
    torch.testing.assert_close(out.y_hat, expect)
    out.loss.backward()
    assert d.W_enc.grad is not None and d.W_dec.grad is not None
    if skip:
        assert d.W_skip is not None and d.W_skip.grad is not None


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_step_protocol_reduces_loss(arch: str) -> None:
    """The trainer's exact call sequence runs and lowers the loss on a fixed batch."""
    torch.manual_seed(0)
    d = make_dictionary(_cfg(arch, dtype="float32", k=4))
    x = torch.randn(64, D_IN)
    opt = torch.optim.Adam([p for p in d.parameters() if p.requires_grad], lr=1e-2)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    losses = []
    for _ in range(30):
        out = d.training_forward(x, x, sparsity_coefficient=1e-3, dead_mask=dead)
        out.loss.backward()
        d.before_optimizer_step()
        opt.step()
        opt.zero_grad(set_to_none=True)
        d.after_step()
        losses.append(float(out.losses["mse"]))
        assert out.fired.shape == (D_SAE,) and out.fired.dtype == torch.bool
        dead = ~out.fired
    assert losses[-1] < 0.7 * losses[0], losses
