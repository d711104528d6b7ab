"""Modular addition: the committed checkpoint grokked and computes with a few Fourier frequencies;
the Fourier tools are right on closed-form inputs; training runs and resumes exactly."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from mechscope import load_model
from mechscope.errors import CheckpointError
from mechscope.toys.fourier import embedding_spectrum, fourier_basis, frequency_energy
from mechscope.toys.modular import ModularRecipe, all_pairs, last_logits, split, train_modular_addition
from mechscope.toys.modular_analysis import (
    analyze_modular,
    exclude_logits,
    key_frequencies,
    logit_fve,
    loss_and_accuracy,
    neuron_clusters,
    restrict_logits,
)
from mechscope.toys.registry import PACKAGED
from mechscope.toys.transformer import build

RECIPE = ModularRecipe()
P = RECIPE.p


@pytest.fixture(scope="module")
def report():
    if not (PACKAGED / "modular_addition" / "config.json").is_file():
        pytest.fail("the committed modular_addition checkpoint is missing")
    return analyze_modular(load_model("toy/modular_addition", device="cpu"), RECIPE)


def test_committed_checkpoint_grokked(report):
    assert report.test_acc >= 0.999 and report.train_acc == 1.0


def test_embedding_is_sparse_in_frequency(report):
    assert report.embed_top6_fraction >= 0.90
    assert abs(sum(report.embed_spectrum) - 1.0) < 1e-5


def test_key_frequencies_carry_the_computation(report):
    assert 3 <= len(report.key_freqs) <= 8
    assert set(report.key_freqs) <= set(report.embed_top_freqs)
    assert report.restricted[1] >= 0.99  # keeping only the key frequencies keeps the accuracy
    assert report.excluded[1] <= 0.05  # removing them leaves about chance (1/113 = 0.009)
    assert report.excluded[0] > 10 * report.full[0] + 1.0
    # removing any one key frequency hurts far more than removing any other frequency
    per = report.excluded_per_freq
    assert min(per[k - 1] for k in report.key_freqs) > max(
        v for k, v in enumerate(per, start=1) if k not in report.key_freqs
    )
    assert report.logit_fve > 0.5
    assert sum(report.cluster_sizes.values()) > 0.5 * len(report.neuron_freq)


def test_committed_training_curves():
    training = json.loads((PACKAGED / "modular_addition" / "training.json").read_text())
    history = training["history"]
    assert history[-1]["step"] == RECIPE.steps and history[-1]["test_acc"] >= 0.999
    # grokking: the training set is memorised long before the test set is solved
    memorised = next(h["step"] for h in history if h["train_acc"] == 1.0)
    solved = next(h["step"] for h in history if h["test_acc"] >= 0.99)
    assert solved > 3 * memorised
    assert training["seconds"] < 30 * 60
    assert (PACKAGED / "modular_addition" / "training.png").stat().st_size > 10_000


def test_fourier_basis_is_orthonormal_and_parseval():
    basis = fourier_basis(P)
    torch.testing.assert_close(basis @ basis.T, torch.eye(P), atol=1e-5, rtol=0)
    x = torch.randn(P, 7, generator=torch.Generator().manual_seed(0))
    energy = frequency_energy(basis @ x)
    assert energy.shape == ((P + 1) // 2,)
    torch.testing.assert_close(energy.sum(), x.pow(2).sum(), rtol=1e-5, atol=0)
    # a pure cosine of frequency 5 has all its energy at 5
    wave = torch.cos(2 * math.pi * 5 * torch.arange(P) / P)[:, None]
    assert frequency_energy(basis @ wave).argmax().item() == 5
    with pytest.raises(ValueError, match="odd"):
        fourier_basis(8)


def test_neuron_clusters_find_planted_frequencies():
    a = torch.arange(P).repeat_interleave(P).double()
    b = torch.arange(P).repeat(P).double()
    w = lambda k: 2 * math.pi * k / P  # noqa: E731
    neurons = torch.stack(
        [
            torch.relu(torch.cos(w(14) * a) + torch.cos(w(14) * b)),  # a ReLU of a sum: freq 14, nearly all
            torch.cos(w(41) * (a + b)),  # exactly freq 41 (a product term)
            torch.cos(w(7) * a) + torch.cos(w(30) * b),  # split between two frequencies
            torch.zeros_like(a),  # dead
        ],
        dim=1,
    ).float()
    freq, frac = neuron_clusters(neurons, P)
    assert freq[:2].tolist() == [14, 41] and frac[0] > 0.85 and frac[1] > 0.999
    assert 0.45 < frac[2] < 0.55 and freq[3] == 0 and frac[3] == 0
    assert key_frequencies(freq.repeat(10), frac.repeat(10), threshold=0.85, min_neurons=10) == [14, 41]


def test_restricted_and_excluded_logits_on_a_closed_form():
    _, answers = all_pairs(P)
    s = answers.double()[:, None] - torch.arange(P, dtype=torch.float64)[None]  # a + b - c
    keys = [3, 17]
    logits = sum(torch.cos(2 * math.pi * k * s / P) for k in keys).float() * 20
    noise = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0))
    assert loss_and_accuracy(logits, answers)[1] == 1.0
    torch.testing.assert_close(restrict_logits(logits + 0.0, P, keys), logits, atol=1e-3, rtol=0)
    # the logits live in the key frequencies' components: excluding them leaves what else was there
    torch.testing.assert_close(
        exclude_logits(logits + noise, P, keys), exclude_logits(noise, P, keys), atol=1e-3, rtol=0
    )
    assert (exclude_logits(noise, P, keys) - noise).abs().max() < 0.5 * noise.abs().max()
    assert loss_and_accuracy(exclude_logits(logits, P, keys), answers)[1] < 0.05
    assert logit_fve(logits, P, keys) > 0.999
    assert logit_fve(noise, P, keys) < 0.01


def test_last_logits_is_the_full_forward():
    model = build(RECIPE.spec(), seed=1).eval()
    tokens, _ = all_pairs(P)
    with torch.no_grad():
        torch.testing.assert_close(
            last_logits(model, tokens[::97]),
            model(input_ids=tokens[::97]).logits[:, -1],
            atol=1e-5,
            rtol=1e-5,
        )


def test_split_is_seeded_and_disjoint():
    train, test = split(RECIPE)
    assert len(train) == int(0.3 * P * P) and len(set(train.tolist()) & set(test.tolist())) == 0
    assert torch.equal(split(RECIPE)[0], train) and not torch.equal(split(replace(RECIPE, seed=1))[0], train)


def test_training_smoke_and_exact_resume(tmp_path):
    """A few real full-batch steps: the loss falls, history is logged, a resumed run is bit-identical."""
    small = replace(RECIPE, steps=12, eval_every=4, checkpoint_every=6)
    straight, res = train_modular_addition(small, progress=False)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert [h["step"] for h in res.history] == [4, 8, 12] and len(res.history[0]["embed_spectrum"]) == 57
    train_modular_addition(replace(small, steps=6), out=tmp_path, progress=False)
    resumed, res2 = train_modular_addition(small, out=tmp_path, progress=False)
    # the 6-step run evaluated at its last step too; the resumed run keeps that history
    assert res2.resumed_from == 6 and [h["step"] for h in res2.history] == [4, 6, 8, 12]
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match="training config"):
        train_modular_addition(replace(small, steps=20, lr=5e-3), out=tmp_path, progress=False)


def test_spectrum_of_the_trained_embedding_matches_the_report(report):
    model = load_model("toy/modular_addition", device="cpu")
    spectrum = embedding_spectrum(model.hf_model, P)
    assert spectrum[1:].argsort(descending=True)[:6].add(1).tolist() == report.embed_top_freqs
