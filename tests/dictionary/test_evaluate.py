"""Evaluation metrics: hand computations on fixed tensors, and splicing into a tiny model.

The model-level tests recompute every LM metric by hand with plain ``run_with_cache`` /
``run_with_hooks`` calls and an explicit CE/KL formula, and use an exactly-reconstructing
dictionary (ReLU with ``W_enc = [I, -I]``, ``W_dec = [I; -I]``: ``relu(x) - relu(-x) = x``
in floating point) for the FVU 0 / CE recovered 1 checks.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import tiny
from mechscope.dictionary import DictionaryConfig, make_dictionary
from mechscope.dictionary.evaluate import (
    LMStats,
    ReconstructionStats,
    density_histogram,
    evaluate_dictionary,
    lm_result,
    plot_density,
    reconstruction_result,
)
from mechscope.dictionary.splice import ce_kl
from mechscope.errors import MechscopeError

# -- hand computations on fixed tensors -------------------------------------------------------


def test_reconstruction_metrics_by_hand():
    y = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.0, 0.0], [2.0, 2.0]])
    y_hat = torch.tensor([[1.0, 1.0], [3.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    codes = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.5, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    stats = ReconstructionStats(d_out=2, d_sae=3)
    stats.update(y[:3], y_hat[:3], codes[:3])  # two uneven batches: the merge must be exact
    stats.update(y[3:], y_hat[3:], codes[3:])
    r = reconstruction_result(stats, dense_threshold=0.5, n_bins=4)
    # squared errors per token: 1, 1, 1, 0 -> 3; mean of y = (1.5, 1.0)
    # deviations^2: (0.25+1) + (2.25+1) + (2.25+1) + (0.25+1) = 9
    assert r["n_tokens"] == 4
    assert r["mse"] == pytest.approx(3 / 8)
    assert r["mse_per_token"] == pytest.approx(3 / 4)
    assert r["fvu"] == pytest.approx(3 / 9)
    assert r["explained_variance"] == pytest.approx(6 / 9)
    cos = [(1 + 2) / (math.sqrt(5) * math.sqrt(2)), 9 / (3 * math.sqrt(10)), 0.0, 1.0]
    assert r["cosine_similarity"] == pytest.approx(sum(cos) / 4)
    assert r["l0"] == pytest.approx((1 + 2 + 0 + 1) / 4)
    # latent 0 fires on 3/4 tokens (dense at 0.5), latent 1 on 1/4, latent 2 never (dead)
    assert r["dead_fraction"] == pytest.approx(1 / 3)
    assert r["dense_fraction"] == pytest.approx(1 / 3)
    assert r["feature_frequency"].tolist() == [0.75, 0.25, 0.0]
    # n = 4 -> lo = min(floor(log10(1/4)), -1) = -1; 4 bins of width 0.25 on [-1, 0]
    assert r["density_edges"] == pytest.approx((-1.0, -0.75, -0.5, -0.25, 0.0))
    # log10(0.75) = -0.125 -> last bin; log10(0.25) = -0.602 -> second bin
    assert r["density_counts"] == (0, 1, 0, 1)


def test_fvu_uses_the_variance_about_the_mean_not_about_zero():
    y = torch.tensor([[10.0], [11.0], [9.0], [10.0]])
    y_hat = torch.full_like(y, 10.0)
    stats = ReconstructionStats(1, 1)
    stats.update(y, y_hat, torch.ones(4, 1))
    r = reconstruction_result(stats)
    assert r["fvu"] == pytest.approx(1.0)  # predicting the mean explains nothing
    assert r["dead_fraction"] == 0 and r["dense_fraction"] == 1


def test_density_histogram_by_hand():
    freq = torch.tensor([0.0, 0.001, 0.005, 0.05, 0.5, 1.0])
    edges, counts = density_histogram(freq, n_tokens=1000, n_bins=3)
    assert edges == pytest.approx([-3.0, -2.0, -1.0, 0.0])
    # log10: -3 -> bin 0; -2.30 -> bin 0; -1.30 -> bin 1; -0.30 -> bin 2; 0 -> bin 2; dead not counted
    assert counts == [2, 1, 2]


def test_ce_and_kl_by_hand():
    logits_clean = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]])
    logits_run = torch.tensor([[[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])
    tokens = torch.tensor([[2, 1, 0]])
    lc, lr = torch.log_softmax(logits_clean, -1), torch.log_softmax(logits_run, -1)
    sel = torch.tensor([[True, False]])  # only position 0 (predicting tokens[1] = 1) counts

    def softmax(v):
        z = sum(math.exp(a) for a in v)
        return [math.exp(a) / z for a in v]

    p0, q0 = softmax([2.0, 0.0, -1.0]), softmax([0.0, 0.0, 0.0])
    ce, kl, n = ce_kl(lc, lr, tokens, sel)
    assert n == 1
    assert ce == pytest.approx(-math.log(q0[1]))
    assert kl == pytest.approx(sum(p * math.log(p / q) for p, q in zip(p0, q0)))
    ce_all, _, n_all = ce_kl(lc, lr, tokens, torch.tensor([[True, True]]))
    q1 = softmax([3.0, 0.0, 0.0])
    assert n_all == 2 and ce_all == pytest.approx(-math.log(q0[1]) - math.log(q1[0]))


def test_lm_result_formulas():
    stats = LMStats(("sae", "zero", "mean"))
    stats.count = 4
    stats.ce_clean = 4 * 2.0
    stats.ce = {"sae": 4 * 2.5, "zero": 4 * 7.0, "mean": 4 * 4.0}
    stats.kl = {"sae": 4 * 0.1, "zero": 4 * 3.0, "mean": 4 * 1.0}
    r = lm_result(stats)
    assert r["ce_recovered_zero"] == pytest.approx((7.0 - 2.5) / (7.0 - 2.0))
    assert r["ce_recovered_mean"] == pytest.approx((4.0 - 2.5) / (4.0 - 2.0))
    assert r["delta_lm_loss"] == pytest.approx(0.5)
    assert (r["kl_sae"], r["kl_zero"], r["kl_mean"]) == pytest.approx((0.1, 3.0, 1.0))


# -- on a tiny model --------------------------------------------------------------------------

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import mechscope

    return mechscope.load_model(tiny.build("llama-mha", tmp_path_factory.mktemp("m") / "llama"), device="cpu")


@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(0)
    t = torch.randint(4, tiny.VOCAB, (5, 12), generator=g)
    t[:, 0] = 1  # BOS
    t[2, 6] = 1  # and one BOS mid-context (packing policy "doc")
    return t


def identity_dictionary(d: int, **kw):
    """ReLU dictionary with W_enc = [I, -I], W_dec = [I; -I]: reconstructs exactly."""
    sae = make_dictionary(DictionaryConfig("relu", d, 2 * d, **kw))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def random_topk(d: int, seed: int = 0, **kw):
    sae = make_dictionary(DictionaryConfig("topk", d, 4 * d, k=8, hook_name=HOOK, **kw))
    g = torch.Generator().manual_seed(seed)
    sae.reset_parameters(generator=g)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(sae.W_enc.shape, generator=g) / math.sqrt(d))
        sae.b_dec.copy_(torch.randn(d, generator=g) * 0.1)
    return sae


def hand_lm(model, tokens, mask, out_site, replacement):
    """Mean CE and KL(clean || run) with ``replacement(act, mask)`` written at ``out_site``."""
    with torch.no_grad():
        lc = torch.log_softmax(model(tokens).float(), -1)

        def hook(t, _h):
            return replacement(t, mask)

        lr = torch.log_softmax(model.run_with_hooks(tokens, fwd_hooks=[(out_site, hook)]).float(), -1)
    ce = kl = 0.0
    n = 0
    for b in range(tokens.shape[0]):
        for t in range(tokens.shape[1] - 1):
            if mask[b, t]:
                ce += -float(lr[b, t, tokens[b, t + 1]])
                kl += float((lc[b, t].exp() * (lc[b, t] - lr[b, t])).sum())
                n += 1
    ce_clean = sum(
        -float(lc[b, t, tokens[b, t + 1]])
        for b in range(tokens.shape[0])
        for t in range(tokens.shape[1] - 1)
        if mask[b, t]
    )
    return ce / n, kl / n, ce_clean / n


def test_identity_dictionary_gives_fvu_0_and_ce_recovered_1(model, tokens):
    d = model.cfg.d_model
    r = evaluate_dictionary(model, identity_dictionary(d, hook_name=HOOK), tokens, batch_size=2)
    assert r.n_tokens == int((tokens != 1).sum())  # every BOS is left out
    assert r.fvu == 0.0 and r.mse == 0.0
    assert r.cosine_similarity == pytest.approx(1.0, abs=1e-12)
    assert r.ce_sae == pytest.approx(r.ce_clean, abs=1e-6)
    assert r.ce_recovered_zero == pytest.approx(1.0, abs=1e-6)
    assert r.ce_recovered_mean == pytest.approx(1.0, abs=1e-6)
    assert r.delta_lm_loss == pytest.approx(0.0, abs=1e-6)
    assert r.kl_sae == pytest.approx(0.0, abs=1e-6)
    assert r.l0 == pytest.approx(d, abs=0.01)  # one of each +/- pair fires per dimension
    # the baselines are real ablations: they change the loss and differ from each other
    assert r.kl_zero > 1e-3 and r.kl_mean > 1e-3 and r.ce_zero != r.ce_mean


def test_lm_metrics_equal_hand_splicing(model, tokens):
    d = model.cfg.d_model
    sae = random_topk(d)
    r = evaluate_dictionary(model, sae, tokens, batch_size=3)
    mask = tokens != 1
    _, cache = model.run_with_cache(tokens, names=[HOOK])
    x = cache[HOOK]  # [b pos d]
    with torch.no_grad():
        x_hat = sae(x)
    mean = x[mask].double().mean(0).float()

    def with_sae(t, m):
        return torch.where(m[..., None], x_hat, t)

    def with_zero(t, m):
        return torch.where(m[..., None], torch.zeros_like(t), t)

    def with_mean(t, m):
        return torch.where(m[..., None], mean.expand_as(t), t)

    ce_sae, kl_sae, ce_clean = hand_lm(model, tokens, mask, HOOK, with_sae)
    ce_zero, kl_zero, _ = hand_lm(model, tokens, mask, HOOK, with_zero)
    ce_mean, kl_mean, _ = hand_lm(model, tokens, mask, HOOK, with_mean)
    assert r.n_lm_tokens == int(mask[:, :-1].sum())
    tol = dict(rel=1e-5, abs=1e-6)
    assert r.ce_clean == pytest.approx(ce_clean, **tol)
    assert r.ce_sae == pytest.approx(ce_sae, **tol)
    assert r.ce_zero == pytest.approx(ce_zero, **tol)
    assert r.ce_mean == pytest.approx(ce_mean, **tol)
    assert (r.kl_sae, r.kl_zero, r.kl_mean) == pytest.approx((kl_sae, kl_zero, kl_mean), **tol)
    assert r.ce_recovered_zero == pytest.approx((ce_zero - ce_sae) / (ce_zero - ce_clean), rel=1e-4)
    assert r.ce_recovered_mean == pytest.approx((ce_mean - ce_sae) / (ce_mean - ce_clean), rel=1e-4)
    # reconstruction metrics against a dense computation over the same tokens
    err = (x - x_hat)[mask].double()
    xs = x[mask].double()
    assert r.fvu == pytest.approx(float(err.pow(2).sum() / (xs - xs.mean(0)).pow(2).sum()), rel=1e-6)
    assert r.mse == pytest.approx(float(err.pow(2).mean()), rel=1e-6)
    assert r.l0 == pytest.approx(8.0)  # TopK with k = 8 and non-negative selections
    f = sae.encode(x)[mask]
    assert r.dead_fraction == pytest.approx(float(((f != 0).sum(0) == 0).float().mean()))


def test_custom_mask_and_bos(model, tokens):
    sae = random_topk(model.cfg.d_model, seed=1)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, 3:7] = True
    r = evaluate_dictionary(model, sae, tokens, mask=mask, lm_metrics=False)
    assert r.n_tokens == 20 and r.n_lm_tokens == 0 and math.isnan(r.ce_sae)
    sae.train()
    r_all = evaluate_dictionary(model, sae, tokens, exclude_bos=False, lm_metrics=False)
    assert r_all.n_tokens == tokens.numel()
    assert sae.training  # the caller's module is left in the mode it was in
    with pytest.raises(MechscopeError, match="mask"):
        evaluate_dictionary(model, sae, tokens, mask=mask[:, :5])


def test_special_token_and_outlier_masks(model, tokens):
    sae = random_topk(model.cfg.d_model, seed=4)
    toks = tokens.clone()
    toks[1, 4] = 2  # EOS, a special token
    r = evaluate_dictionary(model, sae, toks, exclude_special=True, lm_metrics=False)
    assert r.n_tokens == int(((toks != 1) & (toks != 2)).sum())
    # outliers: drop tokens whose norm exceeds factor x the median over the context's kept tokens
    factor = 1.05
    _, cache = model.run_with_cache(toks, names=[HOOK])
    norms = cache[HOOK].norm(dim=-1)
    expected = 0
    for b in range(toks.shape[0]):
        kept = [float(norms[b, t]) for t in range(toks.shape[1]) if toks[b, t] != 1]
        med = sorted(kept)[(len(kept) - 1) // 2]  # torch's median: the lower middle value
        expected += sum(1 for v in kept if not v > factor * med)
    r = evaluate_dictionary(model, sae, toks, outlier_factor=factor, lm_metrics=False, batch_size=2)
    assert r.n_tokens == expected < int((toks != 1).sum())


def test_transcoder_splices_its_prediction_at_the_output_hook(model, tokens):
    d = model.cfg.d_model
    tc = make_dictionary(
        DictionaryConfig(
            "relu", d, 3 * d, hook_name="blocks.1.ln2.hook_normalized",
            hook_name_out="blocks.1.hook_mlp_out", apply_b_dec_to_input=False, skip_connection=True,
        )
    )  # fmt: skip
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        tc.W_skip.copy_(torch.randn(d, d, generator=g) * 0.05)
    r = evaluate_dictionary(model, tc, tokens, batch_size=5)
    mask = tokens != 1
    _, cache = model.run_with_cache(tokens, names=["blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"])
    with torch.no_grad():
        pred = tc(cache["blocks.1.ln2.hook_normalized"])
    y = cache["blocks.1.hook_mlp_out"]
    ce_sae, kl_sae, _ = hand_lm(
        model, tokens, mask, "blocks.1.hook_mlp_out", lambda t, m: torch.where(m[..., None], pred, t)
    )
    assert r.ce_sae == pytest.approx(ce_sae, rel=1e-5)
    assert r.kl_sae == pytest.approx(kl_sae, rel=1e-5, abs=1e-7)
    err, ys = (y - pred)[mask].double(), y[mask].double()
    assert r.fvu == pytest.approx(float(err.pow(2).sum() / (ys - ys.mean(0)).pow(2).sum()), rel=1e-6)
    assert r.info["hook_name_out"] == "blocks.1.hook_mlp_out"


def test_unfolded_norm_scale_is_applied(model, tokens):
    import copy

    sae = random_topk(model.cfg.d_model, seed=2, norm_scale=0.5)
    folded = copy.deepcopy(sae)
    folded.fold_norm_scale()
    a = evaluate_dictionary(model, sae, tokens)
    b = evaluate_dictionary(model, folded, tokens)
    assert a.fvu == pytest.approx(b.fvu, rel=1e-5) and a.ce_sae == pytest.approx(b.ce_sae, rel=1e-5)
    assert a.l0 == b.l0


def test_hook_z_sites_are_flattened(model, tokens):
    n = model.cfg.n_heads * model.cfg.d_head
    sae = identity_dictionary(n, hook_name="blocks.0.attn.hook_z")
    r = evaluate_dictionary(model, sae, tokens)
    assert r.fvu == 0.0 and r.ce_recovered_mean == pytest.approx(1.0, abs=1e-6)


def test_result_serialises_and_plots(model, tokens, tmp_path):
    r = evaluate_dictionary(model, random_topk(model.cfg.d_model), tokens, lm_metrics=False)
    data = r.as_dict()
    json.dumps(data, allow_nan=False)  # NaN metrics (not computed) become null
    assert data["ce_sae"] is None and data["fvu"] == r.fvu and "feature_frequency" not in data
    assert r.feature_frequency is not None and r.feature_frequency.shape == (4 * model.cfg.d_model,)
    assert sum(r.density_counts) == round((1 - r.dead_fraction) * 4 * model.cfg.d_model)
    png = plot_density(r, tmp_path / "density.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["density.png"]
    assert "FVU" in r.summary()


def test_a_gemmascope_directory_loads_and_evaluates(model, tokens, tmp_path):
    import numpy as np

    from mechscope.dictionary.io import load_dictionary

    d = model.cfg.d_model
    path = tmp_path / "gemma-scope-2b-pt-res" / "layer_1" / "width_16k" / "average_l0_20"
    path.mkdir(parents=True)
    eye = np.eye(d, dtype=np.float32)
    np.savez(path / "params.npz", W_enc=np.concatenate([eye, -eye], 1), W_dec=np.concatenate([eye, -eye], 0),
             b_enc=np.zeros(2 * d, np.float32), b_dec=np.zeros(d, np.float32),
             threshold=np.zeros(2 * d, np.float32))  # fmt: skip
    gs = load_dictionary(path)
    assert gs.config.hook_name == HOOK  # from the release path: layer_1 of a residual-stream release
    r = evaluate_dictionary(model, gs, tokens)
    assert r.fvu == 0.0 and r.ce_recovered_zero == pytest.approx(1.0, abs=1e-6)


def test_needs_a_hook_name(model, tokens):
    with pytest.raises(MechscopeError, match="hook_name"):
        evaluate_dictionary(model, identity_dictionary(model.cfg.d_model), tokens)


def test_eval_sae_pipeline_writes_metrics_plot_and_frequencies(model, tmp_path):
    from mechscope.dictionary.io import save_dictionary
    from mechscope.pipeline.eval_sae import EvalSAEConfig, run_eval_sae

    sae = identity_dictionary(model.cfg.d_model, hook_name=HOOK, model_name=str(model.cfg.name))
    save_dictionary(sae, tmp_path / "sae", format="saelens")
    text = tmp_path / "corpus.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    messages: list[str] = []
    config = EvalSAEConfig(
        dictionary=tmp_path / "sae", source=str(text), ctx_len=16, n_ctx=4, start=1, batch_size=2,
        out=tmp_path / "eval", progress_bar=False,
    )  # fmt: skip
    out, result = run_eval_sae(config, progress=messages.append)
    assert out == tmp_path / "eval"
    assert sorted(p.name for p in out.iterdir()) == [
        "density.png",
        "feature_frequency.safetensors",
        "metrics.json",
    ]
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["kind"] == "sae_eval" and meta["config"]["n_ctx"] == 4
    assert meta["metrics"]["fvu"] == 0.0 and meta["metrics"]["n_tokens"] == 4 * 15
    assert meta["metrics"]["ce_recovered_mean"] == pytest.approx(1.0, abs=1e-6)
    assert result.info["n_ctx"] == 4 and any("FVU" in m for m in messages)


@pytest.mark.real
def test_smollm2_identity_and_baselines():
    import mechscope
    from mechscope.data import TokenStream, stdlib_documents

    model = mechscope.load_model("smollm2-135m", device="cpu")
    tokens = TokenStream(stdlib_documents(), model, ctx_len=64).take(4)
    hook = "blocks.15.hook_resid_post"
    r = evaluate_dictionary(
        model, identity_dictionary(model.cfg.d_model, hook_name=hook), tokens, batch_size=4
    )
    assert r.fvu == 0.0 and r.kl_sae == pytest.approx(0.0, abs=1e-5)
    assert r.ce_recovered_zero == pytest.approx(1.0, abs=1e-5)
    assert r.ce_recovered_mean == pytest.approx(1.0, abs=1e-5)
    # on a trained model, both ablations hurt, and zeroing the residual stream hurts most
    assert r.ce_zero > r.ce_mean > r.ce_clean + 0.5
    assert r.kl_zero > r.kl_mean > 0.1
