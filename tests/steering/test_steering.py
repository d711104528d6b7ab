"""Steering: alpha = 0 is the identity exactly; vectors land where they say; CAA, ActAdd and
feature clamping do what they claim; on SmolLM2 a sentiment vector moves sentiment."""

from __future__ import annotations

import pytest
import torch

from known import true_features
from mechscope import DEFAULT_MODEL, load_model
from mechscope.errors import MechscopeError
from mechscope.steering import (
    SteeringVector,
    actadd,
    add_feature,
    caa,
    clamp_feature,
    steer,
    steer_features,
    steering_hooks,
    strength_sweep,
    token_logodds,
)

HOOK = "blocks.1.hook_resid_pre"


def _record(model, tokens, name, hooks=()):
    store = {}

    def keep(t, point):
        store["x"] = t.detach().clone()

    with torch.no_grad(), model.hooks([*hooks, (name, keep)]):
        logits = model(tokens)
    return logits, store["x"]


def test_alpha_zero_is_the_identity(tiny_model):
    model = tiny_model
    tokens = torch.randint(3, model.cfg.d_vocab, (2, 7), generator=torch.Generator().manual_seed(0))
    v = SteeringVector(HOOK, torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        ref = model(tokens)
        with steer(model, v, alpha=0.0):
            same = model(tokens)
        with steer(model, v, alpha=2.0):
            moved = model(tokens)
    assert torch.equal(same, ref) and not torch.equal(moved, ref)
    gen = model.generate(tokens, max_new_tokens=4)
    assert torch.equal(model.generate(tokens, max_new_tokens=4, fwd_hooks=steering_hooks(v, 0.0)), gen)


def test_vectors_land_where_they_say(tiny_model):
    model = tiny_model
    tokens = torch.randint(3, model.cfg.d_vocab, (2, 7), generator=torch.Generator().manual_seed(2))
    d = model.cfg.d_model
    everywhere = SteeringVector(HOOK, torch.randn(d, generator=torch.Generator().manual_seed(3)))
    _, plain = _record(model, tokens, HOOK)
    _, steered = _record(model, tokens, HOOK, steering_hooks(everywhere, 1.5))
    torch.testing.assert_close(steered, plain + 1.5 * everywhere.vector)
    first = SteeringVector(HOOK, torch.randn(3, d, generator=torch.Generator().manual_seed(4)))  # ActAdd form
    _, steered = _record(model, tokens, HOOK, steering_hooks(first, 2.0))
    torch.testing.assert_close(steered[:, :3], plain[:, :3] + 2.0 * first.vector)
    assert torch.equal(steered[:, 3:], plain[:, 3:])
    with pytest.raises(MechscopeError, match="the vector"):
        _record(model, tokens, HOOK, steering_hooks(SteeringVector(HOOK, torch.ones(d + 1)), 1.0))


def test_caa_and_actadd_are_the_differences_they_claim():
    model = load_model(DEFAULT_MODEL, device="cpu")
    hook = "blocks.6.hook_resid_pre"
    pos, neg = ["I love it", "A great day"], ["I hate it", "A bad day"]

    def last(p):
        return model.run_with_cache(p, names=[hook])[1][hook][0, -1]

    expected = (last(pos[0]) + last(pos[1])) / 2 - (last(neg[0]) + last(neg[1])) / 2
    torch.testing.assert_close(caa(model, pos, neg, hook).vector, expected, atol=1e-5, rtol=1e-5)
    a = actadd(model, " Love", " Hate", hook)  # " Hate" is two tokens: " Love" is extended with zeros
    acts = [model.run_with_cache(p, names=[hook])[1][hook][0] for p in (" Love", " Hate")]
    k = max(len(x) for x in acts)
    padded = [torch.cat([x, x.new_zeros(k - len(x), x.shape[1])]) for x in acts]
    assert a.vector.shape == (k, model.cfg.d_model)
    torch.testing.assert_close(a.vector, padded[0] - padded[1])
    with pytest.raises(MechscopeError, match="at least one"):
        caa(model, [], neg, hook)


def test_sentiment_vector_moves_sentiment_on_smollm2():
    model = load_model(DEFAULT_MODEL, device="cpu")
    hook = "blocks.12.hook_resid_pre"
    pos = [
        "I loved it. It was wonderful and",
        "What a great, happy day, I feel",
        "This is excellent, beautiful work and",
    ]
    neg = [
        "I hated it. It was awful and",
        "What a terrible, sad day, I feel",
        "This is horrible, ugly work and",
    ]
    v = caa(model, pos, neg, hook)
    metric = token_logodds(model, [" great", " good", " wonderful"], [" bad", " terrible", " awful"])
    rows = strength_sweep(
        model, ["I think the movie was", "My day today was"], lambda a: steering_hooks(v, a), [-4.0, 0.0, 4.0],
        metric, max_new_tokens=4,
    )  # fmt: skip
    shifts = [r.shift for r in rows]
    assert shifts[0] < -0.5 and shifts[1] == 0.0 and shifts[2] > 0.5
    assert all(len(r.texts) == 2 and r.texts[0].startswith("I think the movie was") for r in rows)


def test_clamping_a_feature_sets_it_and_nothing_else():
    model = load_model("toy/compiled_features", device="cpu")
    dic, truth = true_features()
    tokens = torch.arange(32).view(4, 8)  # every token once
    _, out = _record(model, tokens, "blocks.0.hook_mlp_out", [clamp_feature(dic, 3, 2.5)])
    f = dic.encode(out.reshape(-1, out.shape[-1]))
    expected = truth.feature_acts[tokens.flatten()].clone()
    expected[:, 3] = 2.5
    torch.testing.assert_close(f, expected, atol=1e-5, rtol=0)
    # the output follows the known unembedding: feature 3 promotes token 3 by exactly its activation
    with torch.no_grad(), model.hooks([clamp_feature(dic, 3, 2.5)]):
        clamped = model(tokens)
    with torch.no_grad():
        base = model(tokens)
    torch.testing.assert_close(
        clamped[..., 3] - base[..., 3], 2.5 - truth.feature_acts[tokens, 3], atol=1e-5, rtol=0
    )
    with torch.no_grad(), model.hooks([add_feature(dic, 3, 0.0)]):
        assert torch.equal(model(tokens), base)
    with pytest.raises(MechscopeError, match="out of range"):
        clamp_feature(dic, 99, 1.0)


def test_steer_features_several_at_chosen_positions():
    model = load_model("toy/compiled_features", device="cpu")
    dic, truth = true_features()
    tokens = torch.arange(32).view(4, 8)
    hook = steer_features(dic, {3: 2.5, 7: 0.0}, positions=[1, -1])
    _, out = _record(model, tokens, "blocks.0.hook_mlp_out", [hook])
    f = dic.encode(out.reshape(-1, out.shape[-1])).view(4, 8, -1)
    expected = truth.feature_acts[tokens].clone()  # [4, 8, d_sae]
    expected[:, [1, 7], 3] = 2.5
    expected[:, [1, 7], 7] = 0.0
    torch.testing.assert_close(f, expected, atol=1e-5, rtol=0)
    # adding: the logit of the promoted token rises by exactly alpha, only where asked
    with torch.no_grad():
        base = model(tokens)
        with model.hooks([steer_features(dic, {5: 1.5}, mode="add", positions=[0])]):
            added = model(tokens)
    shift = added[..., 5] - base[..., 5]
    torch.testing.assert_close(shift[:, 0], torch.full((4,), 1.5), atol=1e-5, rtol=0)
    assert shift[:, 1:].abs().max() < 1e-6
    with torch.no_grad(), model.hooks([steer_features(dic, {5: 0.0, 2: 0.0}, mode="add")]):
        assert torch.equal(model(tokens), base)
    with (
        pytest.raises(MechscopeError, match="outside the prompt"),
        model.hooks([steer_features(dic, {5: 1.0}, positions=[9])]),
    ):
        model(tokens)
    with pytest.raises(MechscopeError, match="mode must be"):
        steer_features(dic, {5: 1.0}, mode="set")
