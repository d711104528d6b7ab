"""Tiny random-initialised models of every supported family, saved and loaded for real.

Each variant is a ``(family, variant)`` pair; :func:`build` writes the model (and a tiny
trained BPE tokenizer) with ``save_pretrained`` so tests go through ``load_model(dir)``.
"""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 256
SEQ_WINDOW = 4  # sliding windows shorter than test prompts, so the window really binds


def _configs() -> dict[str, object]:
    from transformers import (
        Gemma2Config,
        Gemma3TextConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
    )

    # initializer_range well above the default 0.02, so attention patterns are far from uniform
    common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.2)
    llama_like = dict(
        hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, **common
    )
    return {
        "gpt2": GPT2Config(
            n_embd=64,
            n_layer=3,
            n_head=4,
            n_positions=64,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        ),
        "gpt_neox-parallel": GPTNeoXConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            use_parallel_residual=True,
            max_position_embeddings=64,
            **common,
        ),
        "gpt_neox-sequential": GPTNeoXConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            use_parallel_residual=False,
            max_position_embeddings=64,
            **common,
        ),
        "llama-mha": LlamaConfig(num_key_value_heads=4, **llama_like),
        "llama-gqa": LlamaConfig(num_key_value_heads=2, **llama_like),
        "llama-mqa": LlamaConfig(num_key_value_heads=1, **llama_like),
        "mistral-gqa": MistralConfig(
            num_key_value_heads=2, sliding_window=SEQ_WINDOW, head_dim=16, **llama_like
        ),
        "qwen2-gqa": Qwen2Config(num_key_value_heads=2, **llama_like),
        "gemma2-gqa": Gemma2Config(
            num_key_value_heads=2,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=SEQ_WINDOW,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
            **llama_like,
        ),
        "gemma3-mqa": Gemma3TextConfig(
            num_key_value_heads=1,
            head_dim=32,
            query_pre_attn_scalar=32,
            sliding_window=SEQ_WINDOW,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            **llama_like,
        ),
    }


VARIANTS: tuple[str, ...] = tuple(
    [
        "gpt2",
        "gpt_neox-parallel",
        "gpt_neox-sequential",
        "llama-mha",
        "llama-gqa",
        "llama-mqa",
        "mistral-gqa",
        "qwen2-gqa",
        "gemma2-gqa",
        "gemma3-mqa",
    ]
)


def build(variant: str, out_dir: Path, seed: int = 0) -> Path:
    """Save a random model of ``variant`` (and a tokenizer) to ``out_dir``; return it."""
    from transformers import AutoModelForCausalLM

    config = _configs()[variant]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # random norms/biases too, so that no site is trivially zero or one
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(out_dir)
    tiny_tokenizer().save_pretrained(out_dir)
    return out_dir


def tiny_tokenizer():
    """A BPE tokenizer with ``VOCAB`` entries trained on Python's own prose docs."""
    import pydoc_data.topics as topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = list(topics.topics.values())[:200]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<pad>", "<bos>", "<eos>", "<unk>"], limit_alphabet=100
    )
    tok.train_from_iterator(text, trainer)
    assert tok.get_vocab_size() <= VOCAB
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
