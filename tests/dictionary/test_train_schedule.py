"""Schedules, normalisation and the geometric median, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from mechscope.dictionary import schedule
from mechscope.errors import MechscopeError


def test_lr_warmup_then_linear_decay():
    # 10 steps, warm-up 2, linear decay over the last 40% (4 steps: 6, 7, 8, 9)
    got = [schedule.lr_factor(s, 10, 2, "linear", 0.4) for s in range(10)]
    want = [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert got == pytest.approx(want)


def test_lr_cosine_decay():
    got = [schedule.lr_factor(s, 4, 0, "cosine", 1.0) for s in range(4)]
    want = [(1 + math.cos(math.pi * p)) / 2 for p in (0.25, 0.5, 0.75, 1.0)]
    assert got == pytest.approx(want)
    assert schedule.lr_factor(3, 4, 0, "none", 1.0) == 1.0
    with pytest.raises(MechscopeError, match="lr_decay"):
        schedule.lr_factor(0, 4, 0, "exp", 0.2)


def test_sparsity_warmup():
    assert [schedule.sparsity_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert schedule.sparsity_factor(0, 0) == 1.0


def test_norm_scale_conventions():
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # norms 5 and 1
    assert schedule.norm_scale(x, "unit_mean_squared_norm") == pytest.approx(1 / math.sqrt(13))
    assert schedule.norm_scale(x, "sqrt_d_over_mean_norm") == pytest.approx(math.sqrt(2) / 3)
    assert schedule.norm_scale(x, "none") == 1.0
    c = schedule.norm_scale(x, "unit_mean_squared_norm")
    assert float((c * x).pow(2).sum(-1).mean()) == pytest.approx(1.0)
    with pytest.raises(MechscopeError, match="normalisation"):
        schedule.norm_scale(x, "layer")
    with pytest.raises(MechscopeError, match="mean squared norm"):
        schedule.norm_scale(torch.zeros(3, 2), "unit_mean_squared_norm")


def _objective(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x.double() - y.double()).norm(dim=1).sum())


def test_geometric_median_collinear_is_the_middle_point():
    # on a line the geometric median is the 1-D median: 0, 1, 2, 10, 50 along a direction
    u = torch.tensor([0.6, 0.8, 0.0])
    t = torch.tensor([0.0, 1.0, 2.0, 10.0, 50.0])
    pts = t[:, None] * u + torch.tensor([1.0, -2.0, 3.0])
    gm = schedule.geometric_median(pts.double())
    assert torch.allclose(gm, pts[2].double(), atol=1e-6)
    # the mean is far from it: the test would fail for a mean initialisation
    assert float((pts.mean(0) - pts[2]).norm()) > 5


def test_geometric_median_symmetric_set():
    # corners of a square plus an outlier pair symmetric about the centre: median = centre
    c = torch.tensor([2.0, -1.0], dtype=torch.float64)
    offs = torch.tensor([[1, 1], [1, -1], [-1, 1], [-1, -1], [30, 0], [-30, 0]], dtype=torch.float64)
    assert torch.allclose(schedule.geometric_median(c + offs), c, atol=1e-6)
    # an odd point count on a line with duplicates: median is the repeated point
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [9.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(
        schedule.geometric_median(pts), torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-5
    )


def test_geometric_median_matches_numerical_minimisation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64)
    x[:20] += 25.0  # outliers pull the mean, not the median
    gm = schedule.geometric_median(x)
    # independent minimisation: gradient descent on the (smooth, convex) objective from the origin
    y = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([y], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = (x - y).norm(dim=1).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert _objective(x, gm) <= _objective(x, y.detach()) + 1e-8
    assert torch.allclose(gm, y.detach(), atol=1e-4)
    # the first-order condition: sum of unit vectors from the median is ~0
    u = (x - gm) / (x - gm).norm(dim=1, keepdim=True)
    assert float(u.sum(0).norm()) < 1e-4
    assert _objective(x, x.mean(0)) > _objective(x, gm) + 1.0


def test_b_dec_init_options():
    y = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 30.0]])
    assert torch.equal(schedule.b_dec_init(y, "zeros"), torch.zeros(2))
    assert torch.allclose(schedule.b_dec_init(y, "mean"), torch.tensor([0.0, 8.25]))
    gm = schedule.b_dec_init(y, "geometric_median")  # any point of [1, 2] minimises; Weiszfeld lands inside
    assert 1.0 - 1e-4 <= float(gm[1]) <= 2.0 + 1e-4 and abs(float(gm[0])) < 1e-6
    with pytest.raises(MechscopeError, match="b_dec_init"):
        schedule.b_dec_init(y, "median")
    with pytest.raises(MechscopeError, match="non-empty"):
        schedule.geometric_median(torch.zeros(0, 3))
