"""TopK, BatchTopK and JumpReLU SAEs recover the directions of a known sparse dictionary.

Data: 64 random unit directions in R^32, 3 active per sample with magnitudes in [0.5, 1.5]
(``mechscope.dictionary.synthetic``). Each SAE (128 latents) is trained on CPU for about a
second with the trainer's step protocol; the score is the mean over true directions of the
best cosine with any decoder row.
"""

from __future__ import annotations

import pytest
import torch

from mechscope.dictionary import DictionaryConfig, make_dictionary
from mechscope.dictionary.synthetic import SyntheticConfig, SyntheticData, mean_best_cosine

DATA = SyntheticConfig(d=32, n_features=64, active=3, seed=1234)
D_SAE = 128


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: one thread is faster than two fighting (and than other helpers' jobs)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _train(cfg: DictionaryConfig, steps: int, lr: float, lam: float = 0.0) -> tuple[float, float]:
    """Adam loop with exactly the trainer's protocol; returns (score before, score after)."""
    torch.manual_seed(0)
    data = SyntheticData(DATA)
    d = make_dictionary(cfg)
    before = mean_best_cosine(d.W_dec.detach(), data.directions)
    opt = torch.optim.Adam([p for p in d.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(1)
    since_fired = torch.zeros(cfg.d_sae)  # steps since each latent last fired
    for step in range(steps):
        x, _ = data.sample(256, g)
        coef = lam * min(1.0, step / (steps / 4))  # sparsity warm-up over the first quarter
        out = d.training_forward(x, x, sparsity_coefficient=coef, dead_mask=since_fired > 20)
        out.loss.backward()
        d.before_optimizer_step()
        opt.step()
        opt.zero_grad(set_to_none=True)
        d.after_step()
        since_fired = torch.where(out.fired, 0.0, since_fired + 1)
    return before, mean_best_cosine(d.W_dec.detach(), data.directions)


@pytest.mark.parametrize(
    ("cfg", "steps", "lr", "lam"),
    [
        (DictionaryConfig("topk", d_in=32, d_sae=D_SAE, k=3), 800, 3e-3, 0.0),
        (DictionaryConfig("batchtopk", d_in=32, d_sae=D_SAE, k=3), 800, 3e-3, 0.0),
        (
            DictionaryConfig(
                "jumprelu", d_in=32, d_sae=D_SAE, jumprelu_bandwidth=0.05, jumprelu_init_threshold=0.1
            ),
            1000,
            3e-3,
            0.1,
        ),
    ],
    ids=["topk", "batchtopk", "jumprelu"],
)
def test_recovers_true_directions(cfg: DictionaryConfig, steps: int, lr: float, lam: float) -> None:
    before, after = _train(cfg, steps, lr, lam)
    assert before < 0.6  # random decoder rows do not already match
    assert after >= 0.95, after


def test_mean_best_cosine_hand_case() -> None:
    true = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    learned = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    # first: exact match (1.0); second: best is [1, 1]/sqrt(2) -> 0.7071
    assert mean_best_cosine(learned, true) == pytest.approx((1.0 + 2**-0.5) / 2)


def test_synthetic_data_is_what_it_says() -> None:
    data = SyntheticData(DATA)
    x, codes = data.sample(100, torch.Generator().manual_seed(0))
    assert ((codes > 0).sum(1) == 3).all() and (codes >= 0).all()
    assert codes[codes > 0].min() >= 0.5 and codes.max() <= 1.5
    torch.testing.assert_close(x, codes @ data.directions)
    torch.testing.assert_close(data.directions.norm(dim=1), torch.ones(64))
