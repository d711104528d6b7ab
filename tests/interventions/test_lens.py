"""The logit lens ends at the model's own prediction and reads the right positions."""

from __future__ import annotations

import torch

from mechscope.interventions import logit_lens


def test_last_point_is_the_model_output(tiny_model):
    m = tiny_model
    prompts = ["def f(x):", "The class keyword introduces"]
    lens = logit_lens(m, prompts)
    batch = m.tokenize(prompts)
    with torch.no_grad():
        logits = m(batch)
    last = logits[torch.arange(2), batch.last_positions]
    torch.testing.assert_close(lens.logits[-1], last, rtol=1e-5, atol=1e-5)
    assert lens.logits.shape == (m.cfg.n_layers + 1, 2, m.cfg.d_vocab)
    assert lens.labels[0] == "resid_pre 0" and lens.labels[-1] == f"resid_post {m.cfg.n_layers - 1}"


def test_rank_and_prob_agree_with_top(tiny_model):
    lens = logit_lens(tiny_model, "for i in range(10):")
    probs, ids = lens.top(3)
    assert torch.all(lens.rank(ids[-1, :, 0])[-1] == 0)
    torch.testing.assert_close(lens.prob(ids[-1, :, 0])[-1], probs[-1, :, 0])
    assert torch.all(lens.rank(ids[:, 0, 1][-1]) >= 0)
