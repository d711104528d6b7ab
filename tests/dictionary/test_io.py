"""Dictionary files: mechscope's and SAELens's layouts, Gemma Scope's params.npz, and bad files.

Directories in the SAELens and Gemma Scope layouts are built by hand here, from the
documented layouts (SAELens v6 ``cfg.json`` + ``sae_weights.safetensors``; Gemma Scope
``params.npz``), and the loaded dictionaries are compared with the formulas those projects
use (written out below), not with mechscope's own code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mechscope.dictionary import DictionaryConfig, make_dictionary
from mechscope.dictionary import io as dio
from mechscope.dictionary.io import detect_format, load_dictionary, save_dictionary
from mechscope.errors import ArtifactError, MechscopeError

HOOK = "blocks.1.hook_resid_post"
TC = dict(
    hook_name="blocks.1.ln2.hook_normalized",
    hook_name_out="blocks.1.hook_mlp_out",
    apply_b_dec_to_input=False,
)

CONFIGS = {
    "relu": DictionaryConfig("relu", 8, 24, hook_name=HOOK, model_name="tiny"),
    "topk": DictionaryConfig("topk", 8, 24, k=4, hook_name=HOOK),
    "batchtopk": DictionaryConfig("batchtopk", 8, 24, k=4, hook_name=HOOK),
    "jumprelu": DictionaryConfig(
        "jumprelu", 8, 24, hook_name=HOOK, metadata={"context_size": 64, "prepend_bos": True}
    ),
    "matryoshka": DictionaryConfig("matryoshka", 8, 24, k=4, matryoshka_widths=(6, 12, 24), hook_name=HOOK),
    "relu-transcoder": DictionaryConfig("relu", 8, 24, d_out=6, **TC),
    "jumprelu-skip-transcoder": DictionaryConfig("jumprelu", 8, 24, d_out=6, skip_connection=True, **TC),
    "relu-bf16": DictionaryConfig("relu", 8, 24, hook_name=HOOK, dtype="bfloat16"),
    "topk-unfolded-scale": DictionaryConfig("topk", 8, 24, k=4, hook_name=HOOK, norm_scale=2.5),
}


def randomised(config: DictionaryConfig, seed: int = 0):
    """A dictionary of ``config`` with every parameter random (thresholds positive)."""
    d = make_dictionary(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in d.named_parameters():
            v = torch.randn(p.shape, generator=g)
            p.copy_(v.abs() * 0.3 if name == "threshold" else v)
        for _name, b in d.named_buffers():
            if b.is_floating_point():
                b.copy_(torch.randn(b.shape, generator=g).abs())
    return d


def files_of(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mechscope", "saelens"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_save_load_save_is_bit_exact(tmp_path, name, fmt):
    if fmt == "saelens" and name == "topk-unfolded-scale":
        pytest.skip("covered by test_saelens_save_folds_the_norm_scale")
    d = randomised(CONFIGS[name])
    save_dictionary(d, tmp_path / "a", format=fmt)
    assert detect_format(tmp_path / "a") == fmt
    loaded = load_dictionary(tmp_path / "a")
    save_dictionary(loaded, tmp_path / "b", format=fmt)
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")
    assert loaded.config == d.config
    assert type(loaded) is type(d)
    for (k, v), (k2, v2) in zip(sorted(d.state_dict().items()), sorted(loaded.state_dict().items())):
        assert k == k2 and v.dtype == v2.dtype and torch.equal(v, v2), k
    x = torch.randn(7, 8).to(getattr(torch, d.config.dtype))
    assert torch.equal(d(x), loaded(x))


def test_mechscope_layout(tmp_path):
    d = randomised(CONFIGS["matryoshka"])
    save_dictionary(d, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "weights.safetensors"]
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["format"] == "mechscope.dictionary" and cfg["format_version"] == 1
    assert cfg["config"]["matryoshka_widths"] == [6, 12, 24]
    assert cfg["config"]["architecture"] == "matryoshka"
    w = load_file(tmp_path / "m" / "weights.safetensors")
    assert w["threshold"].dtype == torch.float32 and w["W_enc"].shape == (8, 24)


@pytest.mark.parametrize(
    "name, arch, extra",
    [
        ("relu", "standard", {}),
        ("topk", "topk", {"k": 4, "rescale_acts_by_decoder_norm": False}),
        ("jumprelu", "jumprelu", {}),
        ("batchtopk", "jumprelu", {}),
        ("matryoshka", "jumprelu", {}),
        ("relu-transcoder", "transcoder", {"d_out": 6}),
        ("jumprelu-skip-transcoder", "jumprelu_skip_transcoder", {"d_out": 6}),
    ],
)
def test_saelens_layout_fields(tmp_path, name, arch, extra):
    config = CONFIGS[name]
    d = randomised(config)
    save_dictionary(d, tmp_path / "s", format="saelens")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg["architecture"] == arch
    for key in ("d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input", "normalize_activations"):
        assert key in cfg
    assert (cfg["d_in"], cfg["d_sae"], cfg["normalize_activations"]) == (8, 24, "none")
    assert cfg["apply_b_dec_to_input"] == config.apply_b_dec_to_input
    for k, v in extra.items():
        assert cfg[k] == v
    meta = cfg["metadata"]
    assert meta["hook_name"] == config.hook_name and meta["sae_lens_version"].startswith("6.")
    if "transcoder" in arch:
        assert meta["hook_name_out"] == config.hook_name_out
    if name == "batchtopk":
        assert meta["training_architecture"] == "batchtopk"
        assert meta["training_architecture_details"]["k"] == 4
    if name == "matryoshka":
        assert meta["training_architecture"] == "matryoshka_batchtopk"
        assert meta["training_architecture_details"]["matryoshka_widths"] == [6, 12, 24]
    if name == "jumprelu":
        assert meta["context_size"] == 64 and meta["prepend_bos"] is True
    w = load_file(tmp_path / "s" / "sae_weights.safetensors")
    if config.skip_connection:
        assert w["W_skip"].shape == (6, 8)  # SAELens orientation [d_out, d_in]
        assert torch.equal(w["W_skip"], d.W_skip.detach().T)


def test_saelens_save_folds_the_norm_scale(tmp_path):
    d = randomised(CONFIGS["topk-unfolded-scale"])
    before = {k: v.clone() for k, v in d.state_dict().items()}
    save_dictionary(d, tmp_path / "s", format="saelens")
    assert d.config.norm_scale == 2.5 and all(torch.equal(before[k], v) for k, v in d.state_dict().items())
    loaded = load_dictionary(tmp_path / "s")
    assert loaded.config.norm_scale == 1.0
    x = torch.randn(9, 8, dtype=torch.float64).float()
    # unfolded: the dictionary sees 2.5 x and its output is in scaled units
    torch.testing.assert_close(loaded(x), d(2.5 * x) / 2.5, rtol=1e-5, atol=1e-5)


def test_saelens_refuses_topk_transcoders(tmp_path):
    d = make_dictionary(DictionaryConfig("topk", 8, 24, d_out=6, k=4, **TC))
    with pytest.raises(MechscopeError, match="TopK transcoder"):
        save_dictionary(d, tmp_path / "s", format="saelens")
    assert not (tmp_path / "s").exists()


# -- directories written the way SAELens and Gemma Scope write them -----------------------------


def write_saelens(path: Path, cfg: dict, tensors: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file(tensors, str(path / "sae_weights.safetensors"))
    return path


def sl_cfg(arch: str, **kw) -> dict:
    meta = {"sae_lens_version": "6.54.12", "model_name": "gpt2", "hook_name": HOOK, "context_size": 128}
    meta.update(kw.pop("metadata", {}))
    base = {"architecture": arch, "d_in": 8, "d_sae": 24, "dtype": "float32", "device": "cpu",
            "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none"}  # fmt: skip
    return {**base, **kw, "metadata": meta}


def sl_weights(seed=1, d_out=8, threshold=False):
    g = torch.Generator().manual_seed(seed)
    t = {
        "W_enc": torch.randn(8, 24, generator=g),
        "b_enc": torch.randn(24, generator=g) * 0.1,
        "W_dec": torch.randn(24, d_out, generator=g) * 0.5,
        "b_dec": torch.randn(d_out, generator=g) * 0.1,
    }
    if threshold:
        t["threshold"] = torch.randn(24, generator=g) * 0.5  # some negative: SAELens's ReLU binds
    return t


def test_loads_saelens_standard(tmp_path):
    t = sl_weights()
    d = load_dictionary(write_saelens(tmp_path / "s", sl_cfg("standard"), t))
    assert d.config.architecture == "relu" and d.config.hook_name == HOOK and d.config.model_name == "gpt2"
    assert d.config.metadata["context_size"] == 128
    x = torch.randn(10, 8)
    f = torch.relu((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"])
    torch.testing.assert_close(d(x), f @ t["W_dec"] + t["b_dec"])


def test_loads_saelens_topk_with_decoder_norm_rescaling(tmp_path):
    t = sl_weights(2)
    cfg = sl_cfg("topk", k=3, rescale_acts_by_decoder_norm=True)
    d = load_dictionary(write_saelens(tmp_path / "s", cfg, t))
    assert d.config.architecture == "topk" and d.config.k == 3
    x = torch.randn(10, 8)
    # SAELens TopKSAE: select on h * ||W_dec_i||, ReLU the top k, decode (f / ||W_dec_i||) @ W_dec
    n = t["W_dec"].norm(dim=-1)
    h = ((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]) * n
    vals, idx = h.topk(3, dim=-1)
    f = torch.zeros_like(h).scatter(-1, idx, vals.relu())
    ref = (f / n) @ t["W_dec"] + t["b_dec"]
    torch.testing.assert_close(d(x), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(d.encode(x), f, rtol=1e-5, atol=1e-5)


def test_loads_saelens_jumprelu_and_batchtopk(tmp_path):
    t = sl_weights(3, threshold=True)
    for name, meta in (("j", {}), ("b", {"training_architecture": "batchtopk"})):
        d = load_dictionary(write_saelens(tmp_path / name, sl_cfg("jumprelu", metadata=meta), t))
        assert d.config.architecture == "jumprelu"
        x = torch.randn(10, 8)
        h = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
        f = torch.relu(h) * (h > t["threshold"])  # SAELens JumpReLUSAE.encode
        torch.testing.assert_close(d.encode(x), f)
        torch.testing.assert_close(d(x), f @ t["W_dec"] + t["b_dec"])


@pytest.mark.parametrize("skip", [False, True])
def test_loads_saelens_transcoders(tmp_path, skip):
    t = sl_weights(4, d_out=6, threshold=True)
    if skip:
        t["W_skip"] = torch.randn(6, 8)  # [d_out, d_in]
    arch = "jumprelu_skip_transcoder" if skip else "jumprelu_transcoder"
    cfg = sl_cfg(
        arch, d_out=6, apply_b_dec_to_input=False, metadata={"hook_name_out": "blocks.1.hook_mlp_out"}
    )
    d = load_dictionary(write_saelens(tmp_path / "s", cfg, t))
    assert d.config.is_transcoder and d.config.out_dim == 6 and d.config.skip_connection == skip
    assert d.config.hook_name_out == "blocks.1.hook_mlp_out"
    x = torch.randn(10, 8)
    h = x @ t["W_enc"] + t["b_enc"]
    ref = (torch.relu(h) * (h > t["threshold"])) @ t["W_dec"] + t["b_dec"]
    if skip:
        ref = ref + x @ t["W_skip"].T
    torch.testing.assert_close(d(x), ref)


def test_saelens_norm_scaling_factor(tmp_path):
    t = sl_weights(5)
    cfg = sl_cfg("standard", normalize_activations="expected_average_only_in")
    path = write_saelens(tmp_path / "s", cfg, t)
    with pytest.raises(ArtifactError, match=r"activation_scaler\.json"):
        load_dictionary(path)
    (path / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 3.0}))
    d = load_dictionary(path)
    assert d.config.norm_scale == 3.0
    cfg["normalize_activations"] = "layer_norm"
    (path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="layer_norm"):
        load_dictionary(path)


def test_loads_pre_v6_saelens_config(tmp_path):
    cfg = {"d_in": 8, "d_sae": 24, "dtype": "torch.float32", "hook_point": HOOK, "model_name": "gpt2",
           "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 5}, "context_size": 128}  # fmt: skip
    d = load_dictionary(write_saelens(tmp_path / "s", cfg, sl_weights(6)))
    assert (d.config.architecture, d.config.k, d.config.hook_name) == ("topk", 5, HOOK)


def test_unsupported_saelens_architecture(tmp_path):
    path = write_saelens(tmp_path / "s", sl_cfg("gated"), sl_weights(7))
    with pytest.raises(ArtifactError, match="gated"):
        load_dictionary(path)


def write_gemmascope(path: Path, d_in=8, d_sae=24, d_out=8, seed=8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "W_enc": rng.standard_normal((d_in, d_sae)).astype(np.float32),
        "W_dec": rng.standard_normal((d_sae, d_out)).astype(np.float32),
        "b_enc": (0.1 * rng.standard_normal(d_sae)).astype(np.float32),
        "b_dec": (0.1 * rng.standard_normal(d_out)).astype(np.float32),
        "threshold": np.abs(0.5 * rng.standard_normal(d_sae)).astype(np.float32),
    }
    path.mkdir(parents=True)
    np.savez(path / "params.npz", **arrays)
    return arrays


def test_loads_gemmascope_release_directory(tmp_path):
    path = tmp_path / "gemma-scope-2b-pt-res" / "layer_7" / "width_16k" / "average_l0_71"
    a = write_gemmascope(path)
    d = load_dictionary(path)
    assert d.config.architecture == "jumprelu" and not d.config.apply_b_dec_to_input
    assert d.config.hook_name == "blocks.7.hook_resid_post" and d.config.model_name == "gemma-2-2b"
    x = torch.randn(10, 8)
    h = x @ torch.from_numpy(a["W_enc"]) + torch.from_numpy(a["b_enc"])  # Gemma Scope: no b_dec subtraction
    f = h * (h > torch.from_numpy(a["threshold"]))
    torch.testing.assert_close(d.encode(x), f)
    torch.testing.assert_close(d(x), f @ torch.from_numpy(a["W_dec"]) + torch.from_numpy(a["b_dec"]))
    # a loaded Gemma Scope SAE saves and reloads in both writable formats
    for fmt in ("mechscope", "saelens"):
        save_dictionary(d, tmp_path / fmt, format=fmt)
        assert torch.equal(load_dictionary(tmp_path / fmt)(x), d(x))


def test_gemmascope_hooks(tmp_path):
    tc = tmp_path / "gemma-scope-2b-pt-transcoders" / "layer_3" / "width_16k" / "average_l0_10"
    write_gemmascope(tc)
    d = load_dictionary(tc)
    assert (d.config.hook_name, d.config.hook_name_out) == (
        "blocks.3.ln2.hook_normalized",
        "blocks.3.hook_mlp_out",
    )
    assert d.config.is_transcoder
    plain = tmp_path / "somewhere"
    write_gemmascope(plain)
    assert load_dictionary(plain).config.hook_name == ""
    assert (
        load_dictionary(plain, hook_name="blocks.2.hook_resid_post").config.hook_name
        == "blocks.2.hook_resid_post"
    )


def test_gemmascope_rejects_pickles_and_partial_files(tmp_path):
    path = tmp_path / "g"
    path.mkdir()
    np.savez(path / "params.npz", W_enc=np.zeros((2, 3), np.float32), W_dec=np.array([{"a": 1}], dtype=object),
             b_enc=np.zeros(3, np.float32), b_dec=np.zeros(2, np.float32), threshold=np.zeros(3, np.float32))  # fmt: skip
    with pytest.raises(ArtifactError, match=r"params\.npz"):
        load_dictionary(path)
    a = write_gemmascope(tmp_path / "h")
    np.savez(tmp_path / "h" / "params.npz", **{k: v for k, v in a.items() if k != "threshold"})
    with pytest.raises(ArtifactError, match="threshold"):
        load_dictionary(tmp_path / "h")
    raw = (tmp_path / "h" / "params.npz").read_bytes()
    (tmp_path / "h" / "params.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ArtifactError, match=r"params\.npz"):
        load_dictionary(tmp_path / "h")


# -- bad files --------------------------------------------------------------------------------


@pytest.fixture(params=["mechscope", "saelens"])
def saved(request, tmp_path):
    fmt = request.param
    save_dictionary(randomised(CONFIGS["jumprelu"]), tmp_path / "d", format=fmt)
    names = (
        ("config.json", "weights.safetensors")
        if fmt == "mechscope"
        else ("cfg.json", "sae_weights.safetensors")
    )
    return tmp_path / "d", names


def test_truncated_weights(saved):
    path, (_, weights) = saved
    raw = (path / weights).read_bytes()
    (path / weights).write_bytes(raw[: len(raw) - 40])
    with pytest.raises(ArtifactError, match=weights):
        load_dictionary(path)


def test_missing_weights_file(saved):
    path, (_, weights) = saved
    (path / weights).unlink()
    with pytest.raises(ArtifactError, match=f"{weights} is missing"):
        load_dictionary(path)


def test_bad_json(saved):
    path, (cfg, _) = saved
    text = (path / cfg).read_text()
    (path / cfg).write_text(text[: len(text) // 2])
    with pytest.raises(ArtifactError, match=f"{cfg} is not valid JSON"):
        load_dictionary(path)


def test_missing_and_misshapen_tensors(saved):
    path, (_, weights) = saved
    t = load_file(path / weights)
    del t["threshold"]
    save_file(t, str(path / weights))
    with pytest.raises(ArtifactError, match="missing threshold"):
        load_dictionary(path)
    t["threshold"] = torch.zeros(23)
    save_file(t, str(path / weights))
    with pytest.raises(ArtifactError, match=r"threshold has shape \(23,\), expected \(24,\)"):
        load_dictionary(path)
    t["threshold"] = torch.zeros(24)
    t["extra"] = torch.zeros(1)
    save_file(t, str(path / weights))
    with pytest.raises(ArtifactError, match="unexpected extra"):
        load_dictionary(path)


def test_mechscope_config_checks(tmp_path):
    save_dictionary(randomised(CONFIGS["relu"]), tmp_path / "d")
    cfg_path = tmp_path / "d" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["config"]["frobnicate"] = 1
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="frobnicate"):
        load_dictionary(tmp_path / "d")
    del cfg["config"]["frobnicate"]
    cfg["format_version"] = 99
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="format_version 99"):
        load_dictionary(tmp_path / "d")
    cfg["format_version"] = 1
    del cfg["config"]["d_sae"]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="lacks d_sae"):
        load_dictionary(tmp_path / "d")


def test_not_a_dictionary(tmp_path):
    with pytest.raises(ArtifactError, match="holds no dictionary"):
        load_dictionary(tmp_path)
    with pytest.raises(ArtifactError, match="not a directory"):
        load_dictionary(tmp_path / "nope")


# -- atomic writes ----------------------------------------------------------------------------


def test_save_replaces_a_dictionary_but_not_other_directories(tmp_path):
    a, b = randomised(CONFIGS["relu"], 1), randomised(CONFIGS["topk"], 2)
    save_dictionary(a, tmp_path / "d")
    save_dictionary(b, tmp_path / "d", format="saelens")  # replaces, format and all
    assert detect_format(tmp_path / "d") == "saelens"
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(MechscopeError, match="refusing"):
        save_dictionary(a, tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "other"]


def test_interrupted_save_leaves_nothing_behind(tmp_path, monkeypatch):
    d = randomised(CONFIGS["relu"])
    save_dictionary(d, tmp_path / "d")
    before = files_of(tmp_path / "d")
    calls = []

    def failing(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return Path(path).write_bytes(data)

    monkeypatch.setattr(dio, "atomic_write_bytes", failing)
    with pytest.raises(OSError, match="disk full"):
        save_dictionary(randomised(CONFIGS["relu"], 5), tmp_path / "d")
    calls.clear()
    with pytest.raises(OSError, match="disk full"):
        save_dictionary(d, tmp_path / "new")
    assert files_of(tmp_path / "d") == before  # the old dictionary is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temporary or partial directory
