"""The model views' backend against direct computations on a tiny Llama (and its errors)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from mechscope.errors import MechscopeError

TEXT = "the quick brown fox jumps"


def _tensor(t):
    return np.frombuffer(base64.b64decode(t["data"]), dtype="<f4").reshape(t["shape"])


def test_prompt_attention_and_lens_equal_direct_runs(backend):
    m = backend.model
    out = backend.prompt(TEXT, top_k=3)
    logits = m(TEXT)[0, -1].float().softmax(-1)
    assert [n["prob"] for n in out["next"]] == pytest.approx(logits.topk(3).values.tolist(), rel=1e-5)
    assert out["tokens"] == [str(t) for t in m.to_str_tokens(TEXT)]
    assert len(out["features"]) == len(out["tokens"]) and all(len(f) <= 4 for f in out["features"])
    att = backend.attention(TEXT, 2)
    _, cache = m.run_with_cache(TEXT, names=["blocks.2.attn.hook_pattern"])
    np.testing.assert_allclose(
        _tensor(att["patterns"]), cache["blocks.2.attn.hook_pattern"][0].numpy(), rtol=1e-6
    )
    lens = backend.lens(TEXT, "prob")
    values = _tensor(lens["values"])
    assert values.shape == (m.cfg.n_layers + 1, len(out["tokens"]))
    final = m(TEXT)[0].float().softmax(-1).max(-1).values  # the last point is the model's own output
    np.testing.assert_allclose(values[-1], final.numpy(), rtol=1e-4)
    assert len(lens["hover"]) == values.shape[0] and len(lens["hover"][0]) == values.shape[1]


def test_steering_identity_and_errors(backend, tmp_path):
    run = backend.steer(TEXT, {3: 0.0}, mode="add", max_new_tokens=4, out_dir=tmp_path)
    assert run["identity"] and run["before"] == run["after"]
    assert (tmp_path / run["saved"].split("/")[-1] / "meta.json").is_file()
    moved = backend.steer(TEXT, {3: 50.0}, mode="add", max_new_tokens=4)
    assert not moved["identity"]
    with pytest.raises(MechscopeError, match="out of range"):
        backend.attention(TEXT, 99)
    with pytest.raises(MechscopeError, match="empty"):
        backend.prompt("")
    with pytest.raises(MechscopeError, match="statistic"):
        backend.lens(TEXT, "entropy")
