"""Text to tokens, with an explicit BOS policy and correct padding.

BOS policy (``prepend_bos``):

* ``None`` (default): exactly what the model's own tokenizer does with
  ``add_special_tokens=True`` — the way the model is run in Hugging Face, so logits match
  HF. Gemma's tokenizer adds ``<bos>``; GPT-2's and SmolLM2's add nothing.
* ``True``: exactly one BOS token first (never two, even if the text starts with one).
* ``False``: no special tokens at all.

Padding: a list of prompts is padded on the right (default) or left. The attention mask
marks real tokens and the position ids count real tokens only, so each prompt's logits and
activations at its real positions equal its unbatched run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import TokenizationError


@dataclass(frozen=True)
class TokenBatch:
    """Padded token ids with their attention mask."""

    tokens: Tensor
    """Token ids, ``[batch pos]`` (long)."""
    attention_mask: Tensor
    """1 at real tokens, 0 at padding, ``[batch pos]`` (long)."""
    padding_side: str = "right"
    """Where the padding is: ``"right"`` or ``"left"``."""

    @property
    def position_ids(self) -> Tensor:
        """Position of each token among its prompt's real tokens, ``[batch pos]`` (0 at padding)."""
        return (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    @property
    def lengths(self) -> Tensor:
        """Number of real tokens per prompt, ``[batch]``."""
        return self.attention_mask.long().sum(-1)

    @property
    def last_positions(self) -> Tensor:
        """Index of each prompt's last real token, ``[batch]``."""
        if self.padding_side == "left":
            return torch.full_like(self.lengths, self.tokens.shape[1] - 1)
        return self.lengths - 1

    @property
    def is_padded(self) -> bool:
        """Whether any position is padding."""
        return bool((self.attention_mask == 0).any())

    def to(self, device: torch.device | str) -> TokenBatch:
        """The same batch on ``device``."""
        return TokenBatch(self.tokens.to(device), self.attention_mask.to(device), self.padding_side)


def encode(tokenizer: Any, texts: Sequence[str], prepend_bos: bool | None) -> list[list[int]]:
    """Token ids of each text under the BOS policy described in the module docstring."""
    if tokenizer is None:
        raise TokenizationError(
            "this model has no tokenizer; pass token ids (a LongTensor) or load the model with a tokenizer"
        )
    if isinstance(texts, str):
        texts = [texts]
    if prepend_bos is None:
        ids = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    else:
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        if prepend_bos:
            bos = tokenizer.bos_token_id
            if bos is None:
                raise TokenizationError("prepend_bos=True but the tokenizer defines no BOS token")
            ids = [[bos, *(x[1:] if x and x[0] == bos else x)] for x in ids]
    for text, x in zip(texts, ids):
        if not x:
            raise TokenizationError(
                f"prompt {text!r} has no tokens; pass prepend_bos=True or a non-empty prompt"
            )
    return [list(x) for x in ids]


def pad(ids: Sequence[Sequence[int]], pad_id: int, padding_side: str = "right") -> TokenBatch:
    """Pad token id lists into a :class:`TokenBatch`."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    width = max(len(x) for x in ids)
    tokens = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        sl = slice(width - len(x), width) if padding_side == "left" else slice(0, len(x))
        tokens[i, sl] = torch.tensor(x, dtype=torch.long)
        mask[i, sl] = 1
    return TokenBatch(tokens, mask, padding_side)


def pad_id_of(tokenizer: Any) -> int:
    """The id used for padding: the tokenizer's pad token, else EOS, else 0 (it is masked anyway)."""
    if tokenizer is None:
        return 0
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def decode_each(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each token id decoded on its own (``" Paris"`` keeps its leading space)."""
    if tokenizer is None:
        raise TokenizationError("this model has no tokenizer to decode with")
    return [
        tokenizer.decode([int(t)], skip_special_tokens=False, clean_up_tokenization_spaces=False) for t in ids
    ]
