"""Toy Models of Superposition: the paper's n = 5, m = 2 geometry, and the analysis against closed forms."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mechscope.errors import MechscopeError
from mechscope.toys import (
    TMSConfig,
    TMSError,
    TMSModel,
    TMSResult,
    analyze_superposition,
    dimensions_per_feature,
    feature_dimensionality,
    feature_norms,
    generate_sparse_features,
    interference,
    load_tms,
    save_tms,
    train_superposition,
)

# A fast recipe (about 3 s on 2 CPU cores): a larger, linearly decayed learning rate than the paper's
# 1e-3 constant, and the best of 4 seeds per feature probability, as the paper also picks.
FAST = TMSConfig(
    n_features=5,
    n_hidden=2,
    feature_probability=(1.0, 0.1, 0.05),
    n_seeds=4,
    importance_base=0.9,
    steps=3000,
    batch_size=1024,
    lr=1e-2,
    lr_schedule="linear",
    seed=0,
)


@pytest.fixture(scope="module")
def trained() -> TMSResult:
    return train_superposition(FAST, progress=False)


def _norms_at(result: TMSResult, p: float) -> torch.Tensor:
    best = result.best()
    k = int((best.probability - p).abs().argmin())
    return feature_norms(best.W[k])


def test_dense_features_keep_exactly_the_two_most_important(trained):
    norms = _norms_at(trained, 1.0)
    assert int((norms > 0.9).sum()) == 2, norms
    assert int((norms < 0.1).sum()) == 3, norms
    assert set(torch.nonzero(norms > 0.9).flatten().tolist()) == {0, 1}  # importance 1 and 0.9


@pytest.mark.parametrize("p", [0.1, 0.05])
def test_sparse_features_are_stored_in_superposition(trained, p):
    norms = _norms_at(trained, p)
    assert int((norms > 0.5).sum()) >= 4, norms


def test_training_is_reproducible_and_instances_are_independent():
    cfg = TMSConfig(feature_probability=(1.0, 0.1), n_seeds=2, steps=20, batch_size=64, seed=3)
    a, b = train_superposition(cfg, progress=False), train_superposition(cfg, progress=False)
    assert torch.equal(a.W, b.W) and torch.equal(a.b, b.b)
    assert a.W.shape == (4, 2, 5) and a.b.shape == (4, 5) and a.loss_curve.shape == (1, 4)
    assert not torch.equal(a.W[0], a.W[1])  # seeds differ
    assert a.probability.tolist() == [1.0, 1.0, 0.1, 0.1]


def test_best_picks_the_lowest_loss_seed_per_probability():
    cfg = TMSConfig(feature_probability=(1.0, 0.1), n_seeds=3, steps=1, log_every=1)
    W = torch.arange(6.0)[:, None, None].expand(6, 2, 5).clone()
    loss = torch.tensor([3.0, 1.0, 2.0, 0.5, 9.0, 0.7])
    best = TMSResult(cfg, W, torch.zeros(6, 5), loss, loss[None]).best()
    assert best.W[:, 0, 0].tolist() == [1.0, 3.0]
    assert best.loss.tolist() == [1.0, 0.5] and best.config.n_seeds == 1
    assert best.probability.tolist() == [1.0, 0.1]


def test_forward_is_relu_of_wtw_x_plus_b():
    gen = torch.Generator().manual_seed(0)
    model = TMSModel(3, 6, 2, gen)
    with torch.no_grad():
        model.b.copy_(torch.randn(3, 6, generator=gen))
    x = torch.rand(7, 3, 6, generator=gen)
    out = model(x)
    for k in range(3):
        W, b = model.W[k], model.b[k]  # [2, 6], [6]
        ref = torch.relu(x[:, k] @ W.T @ W + b)
        torch.testing.assert_close(out[:, k], ref)


def test_sparse_features_have_the_stated_probability_and_distribution():
    gen = torch.Generator().manual_seed(0)
    p = torch.tensor([1.0, 0.3, 0.02])
    x = generate_sparse_features(40_000, p, 5, gen)  # [batch, instance, feature]
    assert x.shape == (40_000, 3, 5) and x.min() >= 0 and x.max() <= 1
    frac = (x > 0).float().mean(dim=(0, 2))
    torch.testing.assert_close(frac, p, atol=0.01, rtol=0)  # std of the estimate < 0.002
    present = x[:, 1][x[:, 1] > 0]
    assert abs(present.mean().item() - 0.5) < 0.01  # U[0, 1]


def test_analysis_against_hand_computation():
    # columns W_1 = (1, 0), W_2 = (0, 2), W_3 = (1, 1)
    W = torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, 1.0]])
    torch.testing.assert_close(feature_norms(W), torch.tensor([1.0, 2.0, math.sqrt(2)]))
    # W_1_hat = (1, 0): (0)^2 + (1)^2; W_2_hat = (0, 1): 0 + 1^2; W_3_hat = (1, 1)/sqrt2: 1/2 + 4/2
    torch.testing.assert_close(interference(W), torch.tensor([1.0, 1.0, 2.5]))
    torch.testing.assert_close(dimensions_per_feature(W), torch.tensor(2.0 / 7.0))
    # D_i = ||W_i||^2 / (||W_i||^2 + interference_i)
    torch.testing.assert_close(feature_dimensionality(W), torch.tensor([1 / 2, 4 / 5, 4 / 9]))


def test_orthogonal_features_have_dimensionality_one_and_dropped_ones_zero():
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(1)))
    W = torch.cat([q[:, :3] * torch.tensor([1.0, 0.5, 2.0]), torch.zeros(4, 2)], dim=1)  # [4, 5]
    torch.testing.assert_close(feature_dimensionality(W), torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(interference(W), torch.zeros(5), atol=1e-6, rtol=0)


def test_antipodal_pair_has_dimensionality_one_half():
    W = torch.tensor([[0.6, -0.6, 0.0], [0.8, -0.8, 0.0], [0.0, 0.0, 1.5]])  # [3, 3]: a pair and a loner
    torch.testing.assert_close(feature_dimensionality(W), torch.tensor([0.5, 0.5, 1.0]))
    torch.testing.assert_close(interference(W), torch.tensor([1.0, 1.0, 0.0]))


@pytest.mark.parametrize("k", [3, 4, 5, 7])
def test_regular_polygon_is_a_tight_frame(k):
    angles = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
    W = torch.stack([angles.cos(), angles.sin()])  # [2, k], unit columns
    # sum_j cos^2(theta_ij) = k / 2 for a regular k-gon with k >= 3, so D_i = 2 / k and sum_i D_i = m = 2
    torch.testing.assert_close(feature_dimensionality(W), torch.full((k,), 2.0 / k, dtype=torch.float64))
    torch.testing.assert_close(interference(W), torch.full((k,), k / 2 - 1.0, dtype=torch.float64))
    assert feature_dimensionality(W).sum().item() == pytest.approx(2.0, abs=1e-5)


def _reference_dimensionality(W: torch.Tensor) -> list[float]:
    """Plain double loop over features, in float64."""
    W = W.double()
    out = []
    for i in range(W.shape[1]):
        wi = W[:, i]
        if wi.norm() == 0:
            out.append(0.0)
            continue
        hat = wi / wi.norm()
        denom = sum(float(hat @ W[:, j]) ** 2 for j in range(W.shape[1]))
        out.append(float(wi @ wi) / denom)
    return out


def test_random_w_matches_a_loop_reference_and_the_bounds():
    gen = torch.Generator().manual_seed(2)
    W = torch.randn(4, 3, 9, generator=gen)  # [instance, hidden, feature]
    W[1, :, 4] = 0  # a dropped feature
    D = feature_dimensionality(W)
    for k in range(4):
        ref = torch.tensor(_reference_dimensionality(W[k]), dtype=torch.float64)
        torch.testing.assert_close(D[k].double(), ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(feature_dimensionality(W[k]), D[k])  # batched == unbatched
        torch.testing.assert_close(interference(W[k]), interference(W)[k])
    assert (D >= 0).all() and (D <= 1 + 1e-6).all()
    assert (D.sum(-1) <= 3 + 1e-5).all()  # sum_i D_i <= rank(W) <= m (Cauchy-Schwarz against W W^T)
    torch.testing.assert_close(dimensions_per_feature(W), 3 / W.pow(2).sum(dim=(1, 2)))


def test_bad_inputs_raise_mechscope_errors(tmp_path):
    with pytest.raises(TMSError):
        TMSConfig(feature_probability=(0.0,))
    with pytest.raises(TMSError):
        TMSConfig(lr_schedule="step")  # type: ignore[arg-type]
    with pytest.raises(MechscopeError):
        feature_norms(torch.zeros(2))
    with pytest.raises(TMSError, match="not a saved TMS run"):
        load_tms(tmp_path)


def test_save_and_load_round_trip_and_shape_check(tmp_path):
    cfg = TMSConfig(feature_probability=(1.0, 0.1), n_seeds=1, steps=5, batch_size=16)
    r = train_superposition(cfg, progress=False)
    save_tms(r, tmp_path / "run")
    back = load_tms(tmp_path / "run")
    assert back.config == cfg
    for name in ("W", "b", "loss", "loss_curve"):
        assert torch.equal(getattr(back, name), getattr(r, name))
    meta = json.loads((tmp_path / "run" / "cfg.json").read_text())
    meta["config"]["n_features"] = 6
    (tmp_path / "run" / "cfg.json").write_text(json.dumps(meta))
    with pytest.raises(TMSError, match="expected"):
        load_tms(tmp_path / "run")


def test_analyze_writes_plots_and_index(tmp_path):
    cfg = TMSConfig(feature_probability=(1.0, 0.1), n_seeds=2, steps=30, batch_size=64)
    index = analyze_superposition(tmp_path / "out", config=cfg, progress=False)
    out = tmp_path / "out"
    assert index == out / "index.html"
    html = index.read_text()
    for name in ("wtw.png", "features_2d.png", "dimensionality.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="{name}"' in html
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["feature_probability"] for r in metrics["instances"]] == [1.0, 0.1]
    assert load_tms(out / "weights").W.shape == (4, 2, 5)


def test_analyze_skips_the_2d_plot_when_m_is_not_2(tmp_path):
    r = train_superposition(
        TMSConfig(n_features=6, n_hidden=3, n_seeds=1, steps=5, batch_size=16), progress=False
    )
    analyze_superposition(tmp_path, result=r)
    assert not (tmp_path / "features_2d.png").exists()
    assert (tmp_path / "dimensionality.png").exists() and (tmp_path / "wtw.png").exists()
