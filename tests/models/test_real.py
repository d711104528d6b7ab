"""The same contracts on the real pretrained models, plus the behaviours they are known for.

SmolLM2-135M-Instruct (Llama, GQA 9/3) and Gemma 3 270M (MQA 4/1, QK-norm, sandwich norms,
local/global layers). Each is converted from its GGUF once and cached (see models/zoo.py).
"""

from __future__ import annotations

import pytest
import torch

import mechscope
from conftest import windows
from contracts import (
    check_attention,
    check_component_reconstructions,
    check_every_hook_fires,
    check_generate,
    check_logits_match_hf,
    check_residual_identities,
    check_writes,
)
from models.test_batching import check_padding_equivalence

pytestmark = pytest.mark.real

_MODELS: dict[str, mechscope.HookedModel] = {}


@pytest.fixture(params=["smollm2-135m", "gemma3-270m"], scope="module")
def real_model(request) -> mechscope.HookedModel:
    if request.param not in _MODELS:
        _MODELS[request.param] = mechscope.load_model(request.param, device="cpu")
    return _MODELS[request.param]


def _top1(model, prompt: str) -> str:
    with torch.no_grad():
        logits = model(prompt)
    return model.to_string(logits[0, -1].argmax()[None])


def test_factual_recall(real_model):
    assert _top1(real_model, "The Eiffel Tower is located in the city of") == " Paris"


def test_indirect_object_identification(real_model):
    assert _top1(real_model, "When Mary and John went to the store, John gave a drink to") == " Mary"
    assert _top1(real_model, "When Tom and Anna went to the park, Anna gave a ball to") == " Tom"


def test_contracts(real_model):
    toks = real_model.to_tokens("The capital of France is Paris, and")
    check_logits_match_hf(real_model, toks)
    cache = check_every_hook_fires(real_model, toks)
    check_residual_identities(real_model, cache)
    check_attention(real_model, cache, windows(real_model))
    del cache
    check_component_reconstructions(real_model, toks)


def test_every_write_takes_effect(real_model):
    check_writes(real_model, real_model.to_tokens("Paris is in France"), chunk=48)


def test_generate(real_model):
    check_generate(real_model, real_model.to_tokens("The Eiffel Tower is in"), n=5)
    text = real_model.generate("The Eiffel Tower is located in the city of", max_new_tokens=2)
    assert "Paris" in text


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding(real_model, side):
    prompts = ["The Eiffel Tower is located in the city of", "Hello", "When Mary and John went to the store"]
    check_padding_equivalence(
        real_model, prompts, side, sites=["blocks.3.hook_resid_post", "ln_final.hook_normalized"]
    )
