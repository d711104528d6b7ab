"""Bad input gets a clear error that says what to do."""

from __future__ import annotations

import pytest
import torch

import mechscope
import tiny
from mechscope import (
    HookError,
    HookShapeError,
    ModelLoadError,
    TokenizationError,
    UnknownHookError,
    UnsupportedArchitectureError,
)


@pytest.fixture(scope="module")
def llama(tiny_dirs):
    return mechscope.load_model(tiny_dirs["llama-gqa"], device="cpu")


def _toks():
    return torch.randint(4, tiny.VOCAB, (1, 6), generator=torch.Generator().manual_seed(0))


def test_unknown_hook_suggests_closest(llama):
    with pytest.raises(UnknownHookError) as e:
        llama.run_with_cache(_toks(), names=["blocks.1.hook_resid_pr"])
    assert "blocks.1.hook_resid_pre" in str(e.value)
    with pytest.raises(UnknownHookError, match=r"did you mean 'blocks\.0\.attn\.hook_q'"):
        llama.run_with_hooks(_toks(), [("blocks.0.attn.hook_qq", lambda t, h: None)])
    with pytest.raises(UnknownHookError, match=r"layer 7 is out of range.*blocks\.2\.hook_mlp_out"):
        llama.run_with_cache(_toks(), names=["blocks.7.hook_mlp_out"])
    with pytest.raises(UnknownHookError, match="hook_embed"):
        llama.run_with_cache(_toks(), names=["hook_embd"])
    # A TransformerLens name this model does not have (pre-rotary queries) points at the real ones.
    with pytest.raises(UnknownHookError, match="hook_q"):
        llama.run_with_cache(_toks(), names=["blocks.0.attn.hook_rot_q"])


def test_missing_site_on_parallel_model_says_so(tiny_dirs):
    neox = mechscope.load_model(tiny_dirs["gpt_neox-parallel"], device="cpu")
    with pytest.raises(UnknownHookError, match="no 'hook_resid_mid' site"):
        neox.run_with_cache(_toks(), names=["blocks.0.hook_resid_mid"])


def test_wrong_shape_names_hook_and_both_shapes(llama):
    with pytest.raises(HookShapeError) as e:
        llama.run_with_hooks(_toks(), [("blocks.1.mlp.hook_post", lambda t, h: t[..., :-1])])
    msg = str(e.value)
    assert "blocks.1.mlp.hook_post" in msg and "(1, 6, 95)" in msg and "(1, 6, 96)" in msg
    with pytest.raises(HookError, match=r"dtype torch\.float64"):
        llama.run_with_hooks(_toks(), [("blocks.0.hook_resid_pre", lambda t, h: t.double())])
    with pytest.raises(HookError, match="returned list"):
        llama.run_with_hooks(_toks(), [("blocks.0.hook_resid_pre", lambda t, h: [t])])


def test_unsupported_architecture_lists_supported(tmp_path):
    from transformers import AutoModelForCausalLM, OPTConfig

    AutoModelForCausalLM.from_config(
        OPTConfig(
            vocab_size=64,
            hidden_size=32,
            num_hidden_layers=1,
            ffn_dim=64,
            num_attention_heads=4,
            word_embed_proj_dim=32,
        )
    ).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError) as e:
        mechscope.load_model(tmp_path)
    for family in ("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "gemma2", "gemma3_text"):
        assert family in str(e.value)
    assert "'opt'" in str(e.value)


def test_adapter_refuses_unhandled_config_features(tmp_path):
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    AutoModelForCausalLM.from_config(
        GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=4, add_cross_attention=True)
    ).save_pretrained(tmp_path / "xattn")
    with pytest.raises(UnsupportedArchitectureError, match="add_cross_attention"):
        mechscope.load_model(tmp_path / "xattn")
    with pytest.warns(UserWarning, match="add_cross_attention"):
        mechscope.load_model(tmp_path / "xattn", strict=False)
    # A field this transformers version does not know is refused rather than ignored.
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4
    )
    cfg.attention_sink_tokens = 4
    with pytest.raises(UnsupportedArchitectureError, match="attention_sink_tokens=4"):
        mechscope.wrap(AutoModelForCausalLM.from_config(cfg))


def test_bare_base_model_is_refused():
    from transformers import LlamaConfig, LlamaModel

    base = LlamaModel(
        LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4
        )
    )
    with pytest.raises(UnsupportedArchitectureError, match="ForCausalLM"):
        mechscope.wrap(base)


def test_text_without_tokenizer(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig

    hf = AutoModelForCausalLM.from_config(
        LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4
        )
    )
    m = mechscope.wrap(hf)
    with pytest.raises(TokenizationError, match="no tokenizer"):
        m("hello")
    assert m(torch.tensor([[1, 2, 3]])).shape == (1, 3, 64)


def test_bad_paths(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        mechscope.load_model(tmp_path / "nope" / "model.gguf")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="neither a model directory"):
        mechscope.load_model(tmp_path / "weights.bin")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="could not load"):
        mechscope.load_model(empty)


def test_bos_policy(llama):
    t = llama.tokenizer
    plain = llama.to_tokens("def f")
    with_bos = llama.to_tokens("def f", prepend_bos=True)
    assert with_bos[0, 0] == t.bos_token_id and torch.equal(with_bos[0, 1:], plain[0])
    # Never two BOS tokens, even when the text already starts with one.
    again = llama.to_tokens(t.bos_token + "def f", prepend_bos=True)
    assert torch.equal(again, with_bos)
    with pytest.raises(TokenizationError, match="no tokens"):
        llama.to_tokens("")
    assert llama.to_str_tokens("def f") == [t.decode([i]) for i in plain[0].tolist()]


def test_multi_device_dispatch_is_refused():
    from transformers import AutoModelForCausalLM, LlamaConfig

    hf = AutoModelForCausalLM.from_config(
        LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
        )
    )
    hf.model.layers[1]._hf_hook = object()  # what accelerate's dispatch_model leaves on each layer
    with pytest.raises(mechscope.MechscopeError, match="accelerate"):
        mechscope.wrap(hf)
