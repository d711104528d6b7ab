"""``run_train_sae``: from a tiny model's streamed activations or a harvested store to a saved dictionary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

import tiny
from mechscope._config_cli import add_config_options, config_from_args
from mechscope.dictionary.io import load_dictionary
from mechscope.dictionary.train import TrainConfig
from mechscope.errors import MechscopeError
from mechscope.pipeline.train_sae import TrainSAEConfig, run_train_sae

TEXT = "\n\n".join(
    f"Document {i}: the quick brown fox jumps over the lazy dog {i} times, and the function returns {i * 7}."
    for i in range(60)
)


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> Path:
    return tiny.build("gpt2", tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text(TEXT)
    return path


def _train(out: Path, **kw) -> TrainConfig:
    base = dict(batch_size=64, total_tokens=64 * 6, output_dir=out, progress=False, init_batches=1,
                checkpoint_every=0, log_every=2, lr=1e-3)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def test_streaming_topk_sae(tmp_path, tiny_gpt2, corpus):
    cfg = TrainSAEConfig(
        architecture="topk", hook="blocks.1.hook_resid_post", expansion=2, k=4, model=str(tiny_gpt2),
        corpus=str(corpus), ctx_len=16, model_batch_size=4, buffer_tokens=256, train=_train(tmp_path / "run"),
    )  # fmt: skip
    messages: list[str] = []
    res = run_train_sae(cfg, progress=messages.append)
    assert res.steps == 6 and any("saved" in m for m in messages)
    (path,) = res.paths.values()
    d = load_dictionary(path)
    c = d.config
    assert (c.architecture, c.d_in, c.d_sae, c.k, c.hook_name) == (
        "topk",
        64,
        128,
        4,
        "blocks.1.hook_resid_post",
    )
    assert c.model_name == str(tiny_gpt2) and c.metadata["ctx_len"] == 16 and c.metadata["bos"] == "bos"
    assert c.metadata["training"]["steps"] == 6 and c.norm_scale == 1.0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in lines] == [2, 4, 6]


def test_transcoder_from_a_harvested_store(tmp_path, tiny_gpt2, corpus):
    from mechscope.data import TokenStream, open_documents
    from mechscope.dictionary.store import harvest
    from mechscope.models import load_model

    model = load_model(tiny_gpt2, device="cpu")
    stream = TokenStream(open_documents(str(corpus)), model, ctx_len=16)
    hooks = ["blocks.0.hook_mlp_in", "blocks.0.hook_mlp_out"]
    harvest(
        model,
        stream,
        hooks,
        tmp_path / "store",
        n_tokens=1024,
        batch_size=8,
        shard_tokens=256,
        progress=False,
    )
    cfg = TrainSAEConfig(
        architecture="relu", hook=hooks[0], hook_out=hooks[1], d_sae=96, skip_connection=True,
        store=tmp_path / "store", train=_train(tmp_path / "run", total_tokens=64 * 10, lr=3e-3),
    )  # fmt: skip
    res = run_train_sae(cfg)
    d = load_dictionary(next(iter(res.paths.values())))
    c = d.config
    assert (
        c.is_transcoder
        and c.hook_name_out == hooks[1]
        and not c.apply_b_dec_to_input
        and d.W_skip is not None
    )
    assert (c.d_in, c.d_out, c.d_sae) == (64, 64, 96) and c.metadata["store"] == str(tmp_path / "store")
    # it predicts the MLP output from the MLP input better than the mean does (on the store's rows)
    from mechscope.dictionary.store import DiskStore

    batch = next(DiskStore(tmp_path / "store").batches(256, seed=5, hooks=hooks))
    with torch.no_grad():
        err = (d(batch[hooks[0]]) - batch[hooks[1]]).pow(2).sum()
    var = (batch[hooks[1]] - batch[hooks[1]].mean(0)).pow(2).sum()
    assert float(err / var) < 1.0


def test_config_errors(tmp_path, tiny_gpt2, corpus):
    with pytest.raises(MechscopeError, match="skip_connection needs a transcoder"):
        run_train_sae(TrainSAEConfig(hook="blocks.0.hook_mlp_in", skip_connection=True, model=str(tiny_gpt2),
                                     corpus=str(corpus), ctx_len=16, train=_train(tmp_path)))  # fmt: skip


def test_cli_options_cover_every_field():
    parser = argparse.ArgumentParser()
    add_config_options(parser, TrainSAEConfig)
    text = parser.format_help()
    for flag in ("--architecture", "--hook-out", "--expansion", "--store", "--lr", "--total-tokens", "--resume",
                 "--normalisation", "--b-dec-init", "--distributed", "--logging"):  # fmt: skip
        assert flag in text, flag
    args = parser.parse_args(
        ["--architecture", "batchtopk", "--k", "16", "--lr", "1e-4", "--output-dir", "x"]
    )
    cfg = config_from_args(TrainSAEConfig, args)
    assert (cfg.architecture, cfg.k, cfg.train.lr, cfg.train.output_dir) == ("batchtopk", 16, 1e-4, Path("x"))
    assert cfg.train.batch_size == TrainConfig().batch_size


@pytest.mark.real
def test_streaming_from_smollm2_on_the_stdlib_corpus(tmp_path):
    cfg = TrainSAEConfig(
        architecture="topk", hook="blocks.15.hook_resid_pre", expansion=2, k=8, model="smollm2-135m",
        corpus="stdlib", ctx_len=64, model_batch_size=8, buffer_tokens=1024,
        train=_train(tmp_path, batch_size=256, total_tokens=256 * 4, log_every=1, device="cpu"),
    )  # fmt: skip
    res = run_train_sae(cfg)
    (name,) = res.dictionaries
    d, last = res.dictionaries[name], res.metrics[name]
    assert (d.config.d_in, d.config.d_sae, d.config.model_name) == (576, 1152, "smollm2-135m")
    assert last["step"] == 4 and last["l0"] == pytest.approx(8.0) and 0 < last["fvu"] < 1.5
    assert d.config.metadata["training"]["normalisation"] == "unit_mean_squared_norm"
