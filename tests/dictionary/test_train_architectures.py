"""The trainer with every real architecture: recovery, exact resume, and saved = trained."""

from __future__ import annotations

import pytest
import torch
from train_stubs import ListSource

from mechscope.dictionary import DictionaryConfig, make_dictionary
from mechscope.dictionary.io import load_dictionary
from mechscope.dictionary.synthetic import SyntheticConfig, SyntheticData, mean_best_cosine
from mechscope.dictionary.train import TrainConfig, train


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_trainer_recovers_true_directions_topk(tmp_path):
    data = SyntheticData(SyntheticConfig(d=32, n_features=64, active=3, seed=1234))
    x, _ = data.sample(16384, torch.Generator().manual_seed(1))
    x = 7.0 * x + 2.0  # raw units and an offset: normalisation and the geometric median must cope
    cfg = TrainConfig(lr=3e-3, batch_size=256, total_tokens=256 * 800, output_dir=tmp_path, progress=False,
                      checkpoint_every=0, log_every=100, lr_warmup_steps=20)  # fmt: skip
    res = train(DictionaryConfig("topk", d_in=32, d_sae=128, k=3, hook_name="h"), ListSource({"h": x}), cfg)
    (d,) = res.dictionaries.values()
    assert mean_best_cosine(d.W_dec.detach(), data.directions) >= 0.95
    assert res.metrics[next(iter(res.metrics))]["fvu"] < 0.1


def _x(seed: int, n: int = 512, d: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(24, d, generator=g)
    codes = torch.rand(n, 24, generator=g) * (torch.rand(n, 24, generator=g) < 0.15)
    return 5.0 * codes @ dirs + 1.0


TENSORS = {"a": _x(1), "b": _x(2) @ torch.randn(8, 6, generator=torch.Generator().manual_seed(3))}

ARCHS = {
    "relu": DictionaryConfig("relu", d_in=8, d_sae=32, hook_name="a"),
    "topk": DictionaryConfig("topk", d_in=8, d_sae=32, k=2, aux_k=4, hook_name="a"),
    "batchtopk": DictionaryConfig("batchtopk", d_in=8, d_sae=32, k=2, aux_k=4, hook_name="a"),
    "jumprelu": DictionaryConfig(
        "jumprelu", d_in=8, d_sae=32, hook_name="a", jumprelu_bandwidth=0.05, jumprelu_init_threshold=0.05
    ),
    "matryoshka": DictionaryConfig(
        "matryoshka", d_in=8, d_sae=32, k=2, matryoshka_widths=(8, 32), hook_name="a"
    ),
    "transcoder": DictionaryConfig(
        "topk",
        d_in=8,
        d_sae=32,
        d_out=6,
        k=2,
        hook_name="a",
        hook_name_out="b",
        apply_b_dec_to_input=False,
        skip_connection=True,
    ),
}


def _cfg(out, **kw) -> TrainConfig:
    base = dict(lr=5e-3, batch_size=64, total_tokens=64 * 12, output_dir=out, progress=False, checkpoint_every=4,
                log_every=3, sparsity_coefficient=0.05, sparsity_warmup_steps=4, init_batches=2,
                dead_window_tokens=128)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


class Crash(RuntimeError):
    pass


def _crash(info):
    if info.step == 6:
        raise Crash


@pytest.mark.parametrize("arch", list(ARCHS))
def test_resume_is_exact_for_every_architecture(tmp_path, arch):
    full = train(ARCHS[arch], ListSource(TENSORS), _cfg(tmp_path / "full"))
    with pytest.raises(Crash):
        train(ARCHS[arch], ListSource(TENSORS), _cfg(tmp_path / "run"), callbacks=[_crash])
    src = ListSource(TENSORS)
    resumed = train(ARCHS[arch], src, _cfg(tmp_path / "run", resume=True))
    assert src.requests[0]["start"] == 4
    (a,), (b,) = full.dictionaries.values(), resumed.dictionaries.values()
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    if arch in ("batchtopk", "matryoshka"):
        assert float(a.threshold.abs().sum()) > 0  # the running threshold really was trained and restored


@pytest.mark.parametrize("arch", list(ARCHS))
def test_saved_dictionary_on_raw_equals_trained_on_normalised(tmp_path, arch):
    trained = {}

    def grab(info):
        if info.step == 12:
            (d,) = info.dictionaries.values()
            trained["config"], trained["state"] = d.config, {k: v.clone() for k, v in d.state_dict().items()}

    res = train(ARCHS[arch], ListSource(TENSORS), _cfg(tmp_path, checkpoint_every=0), callbacks=[grab])
    live = make_dictionary(trained["config"])
    live.load_state_dict(trained["state"])
    c = trained["config"].norm_scale
    c_out = trained["config"].norm_scale_out or c
    assert abs(c - 1) > 0.05 and (arch != "transcoder" or abs(c_out - c) > 1e-3)
    (path,) = res.paths.values()
    saved = load_dictionary(path)
    assert saved.config.norm_scale == 1.0 and saved.config.norm_scale_out is None
    x = TENSORS["a"][:100]
    with torch.no_grad():
        torch.testing.assert_close(saved.encode(x), live.encode(c * x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(saved(x), live(c * x) / c_out, rtol=1e-4, atol=1e-4)
