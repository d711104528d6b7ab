"""Dictionaries with known decoders, for tests: a ReLU SAE whose encoder is its decoder's transpose
(exact on orthonormal directions), e.g. the compiled features model's true features."""

from __future__ import annotations

import torch

from mechscope.dictionary.base import DictionaryConfig
from mechscope.dictionary.registry import make_dictionary


def relu_dictionary(w_dec, b_dec=None, b_enc=0.0, hook_name=""):
    """A ReLU dictionary with decoder ``w_dec [d_sae, d]``, encoder ``w_dec.T`` and biases as given."""
    d_sae, d = w_dec.shape
    dic = make_dictionary(DictionaryConfig("relu", d_in=d, d_sae=d_sae, hook_name=hook_name))
    with torch.no_grad():
        dic.W_dec.copy_(w_dec)
        dic.W_enc.copy_(w_dec.T)
        dic.b_enc.fill_(b_enc)
        dic.b_dec.copy_(torch.zeros(d) if b_dec is None else b_dec)
    return dic.eval()


def true_features(b_enc=0.0):
    """The compiled features model's ground truth and a dictionary of its true features."""
    from mechscope.toys.compiled import COMPILED

    truth = COMPILED["compiled_features"]()[1]
    return relu_dictionary(truth.feature_directions, b_enc=b_enc, hook_name=truth.feature_hook), truth
