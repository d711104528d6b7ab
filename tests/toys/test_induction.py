"""Induction heads: the committed checkpoint has them, the scores are what they say, training runs."""

from __future__ import annotations

import json

import pytest
import torch

from mechscope import load_model
from mechscope.toys.induction import (
    InductionRecipe,
    ablate_head,
    analyze_induction,
    eval_batch,
    head_scores,
    k_composition,
    repeated_sequences,
    split_losses,
    train_induction,
)
from mechscope.toys.registry import PACKAGED
from mechscope.toys.transformer import build

RECIPE = InductionRecipe()


@pytest.fixture(scope="module")
def trained():
    if not (PACKAGED / "induction" / "config.json").is_file():
        pytest.fail("the committed induction checkpoint is missing")
    return load_model("toy/induction", device="cpu")


@pytest.fixture(scope="module")
def report(trained):
    return analyze_induction(trained, RECIPE)


def test_data_repeats_with_the_drawn_period():
    tokens, periods = repeated_sequences(RECIPE, 32, torch.Generator().manual_seed(0))
    assert tokens.shape == (32, RECIPE.n_ctx)
    assert periods.min() >= RECIPE.min_period and periods.max() <= RECIPE.max_period
    for row, p in zip(tokens, periods.tolist(), strict=True):
        assert torch.equal(row[p:], row[:-p])


def test_scores_read_the_right_diagonals():
    """A hand-set model whose layer-0 head copies position i - 1 exactly scores 1 there, ~0 elsewhere."""
    model = load_model_from(build(RECIPE.spec(), seed=0))
    period = RECIPE.n_ctx // 2
    tokens = eval_batch(RECIPE, period, batch=4)

    def prev_pattern(t, hook):  # [batch, head, q, k]
        t = torch.zeros_like(t)
        t[:, :, 0, 0] = 1.0
        idx = torch.arange(1, t.shape[-1])
        t[:, :, idx, idx - 1] = 1.0
        return t

    def prefix_pattern(t, hook):
        t = torch.zeros_like(t)
        q = torch.arange(t.shape[-1])
        t[:, :, q, (q - period + 1).clamp(min=0)] = 1.0
        return t

    with model.hooks(
        [("blocks.0.attn.hook_pattern", prev_pattern), ("blocks.1.attn.hook_pattern", prefix_pattern)]
    ):
        prev, prefix = head_scores(model, tokens, period)
    assert torch.equal(prev[0], torch.ones(RECIPE.n_heads)) and torch.equal(
        prefix[1], torch.ones(RECIPE.n_heads)
    )
    assert prev[1].max() < 0.05 and prefix[0].max() < 0.05


def load_model_from(hf):
    from mechscope import wrap

    return wrap(hf.eval())


def test_untrained_model_has_no_induction_heads():
    r = analyze_induction(load_model_from(build(RECIPE.spec(), seed=0)), RECIPE)
    assert max(r.prefix_matching[1]) < 0.2 and max(r.prev_token[0]) < 0.3
    assert r.loss_repeated > 3.5  # no better than guessing among 64 tokens (ln 64 = 4.16)


def test_committed_checkpoint_has_a_previous_token_head_and_an_induction_head(report):
    assert max(report.prev_token[0]) >= 0.5
    assert max(report.prefix_matching[1]) >= 0.5


def test_repeated_tokens_are_predicted_first_occurrences_are_not(report):
    assert report.loss_first > 3.5  # unpredictable: about ln 64
    assert report.loss_repeated < 1.0


def test_ablating_the_top_induction_head_costs_at_least_one_nat(report):
    assert report.loss_repeated_ablated - report.loss_repeated >= 1.0


def test_ablating_a_head_changes_only_that_head(trained):
    """Zeroing a layer-1 head through hook_z leaves the other head's z untouched."""
    tokens = eval_batch(RECIPE, RECIPE.n_ctx // 2, batch=4)
    layer, head = 1, 0
    seen = {}
    record = lambda t, h: seen.setdefault("z", t.clone())  # noqa: E731
    trained.run_with_hooks(tokens, [*ablate_head(layer, head), ("blocks.1.attn.hook_z", record)])
    _, cache = trained.run_with_cache(tokens, names=["blocks.1.attn.hook_z"])
    assert torch.equal(seen["z"][:, :, head], torch.zeros_like(seen["z"][:, :, head]))
    assert torch.equal(seen["z"][:, :, 1 - head], cache["blocks.1.attn.hook_z"][:, :, 1 - head])
    base = split_losses(trained, tokens, RECIPE.n_ctx // 2)
    assert base["repeated"] < base["first"]


def test_k_composition_is_strongest_from_the_previous_token_head(trained, report):
    kc = torch.tensor(k_composition(trained).tolist())
    assert kc.shape == (RECIPE.n_heads, RECIPE.n_heads)
    layer, prev_head = report.prev_token_head
    assert layer == 0
    assert int(kc[:, report.induction_head[1]].argmax()) == prev_head


def test_training_smoke_a_few_steps():
    recipe = InductionRecipe(steps=5, batch=8)
    model, losses, seconds = train_induction(recipe, progress=False)
    assert len(losses) == 5 and all(torch.isfinite(torch.tensor(losses)))
    assert not model.training and seconds > 0


def test_report_page_is_written(trained, tmp_path):
    from mechscope.toys.induction_plots import write_induction_report

    page = write_induction_report(trained, tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"index.html", "metrics.json", "scores.png", "attention.png", "loss.png"} <= names
    text = page.read_text()
    assert "Induction heads" in text and all(f'src="{n}"' in text for n in ("scores.png", "attention.png"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["report"]["induction_head"] == [1, 0]


def test_the_trained_model_continues_a_repeated_block_by_generation(trained):
    block = torch.randint(0, RECIPE.d_vocab, (1, 20), generator=torch.Generator().manual_seed(7))
    out = trained.generate(torch.cat([block, block[:, :3]], 1), max_new_tokens=10, stop_at_eos=False)
    assert torch.equal(out[0, 23:], block[0, 3:13])
