"""Probes find a planted direction and a real concept; the best feature is found; the monitor's
scores are the probe's scores of the tokens the model read."""

from __future__ import annotations

import pytest
import torch

from mechscope import DEFAULT_MODEL, load_model
from mechscope.dictionary.base import DictionaryConfig
from mechscope.dictionary.registry import make_dictionary
from mechscope.errors import ArtifactError, MechscopeError
from mechscope.steering import Probe, auroc, best_feature, collect, monitor, train_probe


def _planted(n=400, d=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(d, generator=gen), dim=0)
    x = torch.randn(n, d, generator=gen) * 2 + 3.0  # offset and spread: the probe standardises
    y = (x - 3.0) @ direction > 0
    x = x + y[:, None] * 1.5 * direction  # a margin along the direction
    return x, y, direction


def test_probe_recovers_a_planted_direction(tmp_path):
    x, y, direction = _planted()
    probe = train_probe(x, y, hook="blocks.0.hook_resid_post")
    cos = torch.nn.functional.cosine_similarity(probe.direction, direction, dim=0)
    assert cos > 0.95 and probe.val_accuracy >= 0.97 and probe.val_auroc >= 0.99
    torch.testing.assert_close(probe.score(x[:5]), x[:5] @ probe.direction + probe.bias)
    loaded = Probe.load(probe.save(tmp_path / "p"))
    assert torch.equal(loaded.direction, probe.direction) and loaded.val_auroc == probe.val_auroc
    with pytest.raises(ArtifactError):
        Probe.load(tmp_path / "missing")
    with pytest.raises(MechscopeError, match="labels"):
        train_probe(x, y[:-1], hook="h")


def test_shuffled_labels_stay_near_chance():
    x, y, _ = _planted(n=800)
    aucs = []
    for seed in range(5):
        shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]
        aucs.append(train_probe(x, shuffled, hook="h", seed=seed).val_auroc)
    assert abs(sum(aucs) / len(aucs) - 0.5) < 0.06 and max(abs(a - 0.5) for a in aucs) < 0.15


def test_best_feature_is_the_planted_one():
    x, y, direction = _planted(d=8)
    dic = make_dictionary(DictionaryConfig("relu", d_in=8, d_sae=6))
    with torch.no_grad():
        w = torch.nn.functional.normalize(
            torch.randn(6, 8, generator=torch.Generator().manual_seed(3)), dim=1
        )
        w[4] = direction
        dic.W_dec.copy_(w)
        dic.W_enc.copy_(w.T)
        dic.b_enc.zero_()
        dic.b_dec.fill_(3.0)
    feature, score = best_feature(dic, x, y)
    assert feature == 4 and score > 0.95
    assert auroc(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([True, True, False])) == 1.0


def test_real_concept_on_smollm2_and_the_monitor():
    model = load_model(DEFAULT_MODEL, device="cpu")
    code = ["def f(x):\n    return x + 1", "for i in range(10):\n    print(i)", "import os\npath = os.getcwd()",
            "class A:\n    pass", "x = [i * i for i in xs]", "if x is None:\n    raise ValueError(x)",
            "with open(p) as f:\n    data = f.read()", "return {k: v for k, v in items}"]  # fmt: skip
    prose = ["The cat sat quietly on the warm mat.", "We walked along the river at dawn.",
             "She wrote a long letter to her friend.", "The museum opens early on Sundays.",
             "Rain fell softly over the old town.", "He laughed at the story about the dog.",
             "Our garden is full of roses this year.", "They sailed across the lake in summer."]  # fmt: skip
    hook = "blocks.10.hook_resid_post"
    x = collect(model, code + prose, hook, reduce="mean")
    y = torch.tensor([True] * len(code) + [False] * len(prose))
    probe = train_probe(x, y, hook, val_fraction=0.5, seed=1)
    assert probe.val_accuracy >= 0.85 and probe.val_auroc >= 0.9
    run = monitor(model, "def add(a, b):", probe, threshold=0.0, max_new_tokens=6)
    flags = run.flags
    assert run.text.startswith("def add(a, b):") and len(flags) == len(run.ids) - 1
    # the monitor's scores are the probe's scores of the same tokens read in one pass
    _, cache = model.run_with_cache(run.ids[None, : len(flags)], names=[hook])
    torch.testing.assert_close(
        torch.tensor([f.score for f in flags]), probe.score(cache[hook][0]), atol=1e-3, rtol=1e-3
    )
    assert all(f.flagged == (f.score > 0) for f in flags)
