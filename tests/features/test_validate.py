"""The report card on the compiled features model, whose features, tokens and logit effects are known."""

from __future__ import annotations

import pytest
import torch

from known import true_features
from mechscope import load_model
from mechscope.errors import MechscopeError
from mechscope.features.validate import (
    ValidationConfig,
    causal_check,
    logit_effects,
    precision_recall,
    validate,
)


@pytest.fixture(scope="module")
def setup():
    model = load_model("toy/compiled_features", device="cpu")
    dic, truth = true_features(b_enc=-1e-4)
    held = torch.randint(0, 32, (200, 3), generator=torch.Generator().manual_seed(1))
    return model, dic, truth, held


def _fires_on(truth, feature):
    return set((truth.feature_acts[:, feature] > 0).nonzero().flatten().tolist())


def test_a_correct_explanation_passes_and_a_wrong_one_does_not(setup):
    model, dic, truth, held = setup
    feature, other = 3, 11
    assert not _fires_on(truth, feature) & _fires_on(truth, other)
    steer = torch.tensor([[0, 1, 2], [4, 5, 6]])
    for expl, verdicts in ((feature, {"pass"}), (other, {"partial", "fail"})):
        toks = _fires_on(truth, expl)
        card = validate(model, dic, feature, f"tokens {sorted(toks)}", held,
                        lambda j, toks=toks: bool(set(held[j].tolist()) & toks), steer,
                        ValidationConfig(max_new_tokens=4))  # fmt: skip
        assert card.verdict in verdicts
        assert card.causal_shift < 0 and card.steer_shift > 0  # the checks read the feature, not the text
        assert card.promoted[0] == feature  # feature i promotes token i in this model
        if expl == feature:
            assert card.precision == 1.0 and card.recall == 1.0
        else:  # chance: the share of contexts where feature 3 fires anyway (1 - (30/32)^3 = 0.18)
            assert card.precision < 0.4 and card.recall < 0.5
        assert card.n_predicted == min(32, sum(bool(set(r.tolist()) & toks) for r in held))
        assert len(card.generations) == 2 and card.generations[0][0].startswith("0 1 2")
        assert card.to_json()["verdict"] == card.verdict
        assert card.to_json()["generations"][0]["before"] == card.generations[0][0]
        assert card.promoted_tokens == [str(i) for i in card.promoted]  # no tokenizer: the ids


def test_causal_shift_is_the_known_logit_change(setup):
    model, dic, truth, _ = setup
    feature = 5
    token = sorted(_fires_on(truth, feature))[0]
    ctx = torch.tensor([[token]])
    up, down = logit_effects(model, dic, feature, 1)
    shift, n = causal_check(model, dic, feature, ctx, up, down)
    assert n == 1
    # zeroing the feature removes its activation from the promoted token's logit (and its share
    # from the suppressed one's): a log-odds change computed by hand from the logits
    with torch.no_grad():
        base = model(ctx)[0, 0].log_softmax(-1)
        act = float(truth.feature_acts[token, feature]) - 1e-4
        w = (dic.W_dec[feature] @ model.W_U).detach()
        ablated = (model(ctx)[0, 0] - act * w).log_softmax(-1)
    want = (ablated[up] - ablated[down] - base[up] + base[down]).item()
    assert shift == pytest.approx(want, abs=1e-4)


def test_precision_recall_counts_and_errors(setup):
    model, dic, truth, held = setup
    fired = [bool(set(r.tolist()) & _fires_on(truth, 2)) for r in held]
    assert precision_recall(model, dic, 2, held, fired) == (1.0, 1.0, sum(fired), sum(fired))
    assert precision_recall(model, dic, 2, held, [True] * len(held))[0] == pytest.approx(
        sum(fired) / len(held)
    )
    with pytest.raises(MechscopeError, match="predictions for"):
        precision_recall(model, dic, 2, held, [True])
    with pytest.raises(MechscopeError, match="out of range"):
        validate(model, dic, 99, "x", held, lambda j: True, torch.tensor([[0]]))
    with pytest.raises(MechscopeError, match="never fires"):
        causal_check(
            model, dic, 2, torch.tensor([[31, 31]]) * 0 + _absent(truth, 2), *logit_effects(model, dic, 2, 1)
        )


def _absent(truth, feature):
    return next(t for t in range(32) if t not in _fires_on(truth, feature))
