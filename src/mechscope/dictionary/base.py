"""The dictionary contract every architecture implements (SAEs and transcoders).

Shapes: ``x`` is ``[n, d_in]`` (rows are tokens), ``y`` is ``[n, d_out]`` (the target; for
an SAE ``y is x`` and ``d_out == d_in``), codes ``f`` are ``[n, d_sae]``.

Parameters use SAELens's names and orientation, so the SAELens file layout is a plain
state dict:

* ``W_enc``  ``[d_in, d_sae]``
* ``b_enc``  ``[d_sae]``
* ``W_dec``  ``[d_sae, d_out]``
* ``b_dec``  ``[d_out]``
* ``threshold`` ``[d_sae]`` (JumpReLU, and BatchTopK's inference threshold), fp32 always
* ``W_skip`` ``[d_in, d_out]`` (transcoders with a skip connection)

Pre-activations are ``h = (x - b_dec) @ W_enc + b_enc`` when ``apply_b_dec_to_input`` (SAEs)
and ``h = x @ W_enc + b_enc`` otherwise (transcoders, whose ``b_dec`` lives in output space).
The reconstruction is ``y_hat = f @ W_dec + b_dec (+ x @ W_skip)``.

Activation normalisation (see ``docs/dictionary.md``): training sees ``c * x`` (and ``c * y``)
for a fixed scalar ``c`` stored in the config as ``norm_scale``. ``fold_norm_scale`` folds it
into the weights so that the saved dictionary takes and returns raw activations:
``W_enc <- c W_enc``, ``b_dec <- b_dec / c``, ``W_dec <- W_dec / c`` ... (the exact rule is on
the method), after which ``norm_scale == 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu", "matryoshka")
"""Architectures by name (``DictionaryConfig.architecture``)."""


@dataclass(frozen=True)
class DictionaryConfig:
    """Everything needed to rebuild a dictionary's modules (not how it was trained)."""

    architecture: str
    """One of ``ARCHITECTURES``: relu (ReLU + L1), topk, batchtopk, jumprelu, matryoshka (BatchTopK)."""
    d_in: int
    """Width of the input activation."""
    d_sae: int
    """Number of latents (dictionary size)."""
    d_out: int | None = None
    """Width of the target activation; None means ``d_in`` (an SAE, or a same-width transcoder)."""
    k: int | None = None
    """Active latents per row for topk (per row on average for batchtopk/matryoshka)."""
    hook_name: str = ""
    """Hook the input is read from, in mechscope/TransformerLens names (``blocks.6.hook_resid_post``)."""
    hook_name_out: str | None = None
    """Transcoders: hook the target is read from; None for an SAE (target = input)."""
    apply_b_dec_to_input: bool = True
    """Subtract ``b_dec`` from the input before encoding (True for SAEs, False for transcoders)."""
    skip_connection: bool = False
    """Transcoders: add a learned linear skip ``x @ W_skip`` to the reconstruction."""
    matryoshka_widths: tuple[int, ...] = ()
    """Matryoshka: nested prefix widths, increasing, the last equal to ``d_sae``."""
    jumprelu_bandwidth: float = 0.001
    """JumpReLU: kernel bandwidth epsilon of the straight-through pseudo-gradient."""
    jumprelu_init_threshold: float = 0.001
    """JumpReLU: initial value of every threshold."""
    aux_k: int | None = None
    """TopK family: dead latents used per row by the AuxK loss; None means ``d_in // 2``."""
    aux_coefficient: float = 1.0 / 32
    """TopK family: weight alpha of the (variance-normalised) AuxK loss; 0 turns it off."""
    batchtopk_threshold_lr: float = 0.01
    """BatchTopK/Matryoshka: EMA rate of the running inference threshold (theta += lr (t - theta))."""
    norm_scale: float = 1.0
    """Scalar ``c`` the training inputs were multiplied by; 1.0 once folded into the weights."""
    norm_scale_out: float | None = None
    """Transcoders: scalar the training targets were multiplied by; None means ``norm_scale``."""
    model_name: str = ""
    """Model the activations came from (informational; written to cfg.json)."""
    dtype: str = "float32"
    """Parameter dtype (``threshold`` is always float32)."""
    metadata: dict[str, object] = field(default_factory=dict)
    """Free-form extra fields (context size, dataset, BOS policy, ...), kept through save/load."""

    @property
    def out_dim(self) -> int:
        """``d_out`` with the SAE default applied."""
        return self.d_in if self.d_out is None else self.d_out

    @property
    def is_transcoder(self) -> bool:
        """True when the target is a different hook from the input."""
        return self.hook_name_out is not None and self.hook_name_out != self.hook_name


@dataclass
class ForwardOutput:
    """One training forward: the reconstruction, the codes and the loss terms."""

    y_hat: torch.Tensor
    """``[n, d_out]`` reconstruction (in the normalised units training sees)."""
    codes: torch.Tensor
    """``[n, d_sae]`` dense codes, or the values ``[n, k]`` when ``indices`` is set."""
    indices: torch.Tensor | None
    """``[n, k]`` latent indices of ``codes`` for the sparse TopK path, else None."""
    loss: torch.Tensor
    """Scalar total loss to backpropagate."""
    losses: dict[str, torch.Tensor]
    """Named scalar terms (``mse``, ``sparsity``, ``auxk`` ...), detached, for logging."""
    fired: torch.Tensor
    """``[d_sae]`` bool: which latents fired on this batch (dead-latent tracking)."""


class Dictionary(nn.Module):
    """Base class: parameters, encode/decode, and the hooks the trainer calls.

    Subclasses implement ``activation`` (pre-activations to codes) and ``training_forward``;
    they may override ``after_step`` (e.g. decoder renormalisation, threshold EMA) and
    ``encode_sparse`` / ``decode_sparse`` (TopK family). Everything else is shared.
    """

    def __init__(self, config: DictionaryConfig) -> None:
        super().__init__()
        self.config = config
        dtype = getattr(torch, config.dtype)
        d_in, d_sae, d_out = config.d_in, config.d_sae, config.out_dim
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_out, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_out, dtype=dtype))
        self.W_skip: nn.Parameter | None = None
        if config.skip_connection:
            self.W_skip = nn.Parameter(torch.zeros(d_in, d_out, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Decoder rows: random directions of norm 0.1; encoder: the decoder's transpose."""
        with torch.no_grad():
            w = torch.randn(self.W_dec.shape, generator=generator, dtype=torch.float32)
            w = 0.1 * w / w.norm(dim=1, keepdim=True)
            self.W_dec.copy_(w)
            if self.W_enc.shape == self.W_dec.T.shape:
                self.W_enc.copy_(w.T[: self.W_enc.shape[0]])
            else:  # transcoder with d_in != d_out
                e = torch.randn(self.W_enc.shape, generator=generator, dtype=torch.float32)
                self.W_enc.copy_(0.1 * e / e.norm(dim=0, keepdim=True))
            self.b_enc.zero_()
            self.b_dec.zero_()

    # -- inference ------------------------------------------------------------------------

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., d_in] -> [..., d_sae]`` encoder pre-activations ``h``."""
        if self.config.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activation(self, h: torch.Tensor) -> torch.Tensor:
        """``[..., d_sae] -> [..., d_sae]`` codes from pre-activations (inference rule)."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., d_in] -> [..., d_sae]`` dense codes (inference: thresholds, not batch TopK)."""
        return self.activation(self.pre_acts(x))

    def decode(self, f: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """``[..., d_sae] -> [..., d_out]``; ``x`` is needed only for the skip connection."""
        y = f @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise ValueError("this transcoder has a skip connection: decode(f, x) needs x")
            y = y + x @ self.W_skip
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., d_in] -> [..., d_out]`` reconstruction (what splicing into a model uses)."""
        return self.decode(self.encode(x), x)

    # -- training -------------------------------------------------------------------------

    def training_forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        sparsity_coefficient: float = 0.0,
        dead_mask: torch.Tensor | None = None,
    ) -> ForwardOutput:
        """One training forward on ``x`` ``[n, d_in]`` against target ``y`` (default ``x``).

        ``sparsity_coefficient`` is the current (warmed-up) weight of the sparsity term
        (ignored by TopK-style architectures); ``dead_mask`` ``[d_sae]`` marks latents
        considered dead, for auxiliary losses.
        """
        raise NotImplementedError

    def before_optimizer_step(self) -> None:
        """Called after ``backward`` and before the optimiser step (e.g. gradient projection)."""

    def after_step(self) -> None:
        """Called after the optimiser step (e.g. decoder renormalisation)."""

    def fold_norm_scale(self) -> DictionaryConfig:
        """Fold ``config.norm_scale`` (c) into the weights; the result takes raw activations.

        Training saw ``x' = c x`` and ``y' = c_out y`` (``c_out = c`` for an SAE). The codes
        are kept equal to the trained codes (feature activations stay in trained units), so
        thresholds and ``b_enc`` are unchanged and
        ``W_enc <- c W_enc``, ``W_dec <- W_dec / c_out``, ``b_dec <- b_dec / c_out``,
        ``W_skip <- W_skip * c / c_out``. Returns (and installs) the config with both scales 1.
        """
        import dataclasses

        c = float(self.config.norm_scale)
        c_out = c if self.config.norm_scale_out is None else float(self.config.norm_scale_out)
        with torch.no_grad():
            self.W_enc.mul_(c)
            self.W_dec.div_(c_out)
            self.b_dec.div_(c_out)
            if self.W_skip is not None:
                self.W_skip.mul_(c / c_out)
        self.config = dataclasses.replace(self.config, norm_scale=1.0, norm_scale_out=None)
        return self.config
