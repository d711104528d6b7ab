"""SAELens's file layout (v6): ``cfg.json`` + ``sae_weights.safetensors``.

What SAELens v6 writes (``SAE.save_model`` / ``TrainingSAE.save_inference_model``):

* ``cfg.json``: ``architecture``, ``d_in``, ``d_sae``, ``dtype``, ``device``,
  ``apply_b_dec_to_input``, ``normalize_activations``, ``reshape_activations``, the
  architecture's own fields (``k`` and ``rescale_acts_by_decoder_norm`` for ``topk``, ``d_out``
  for transcoders) and ``metadata`` (``sae_lens_version``, ``model_name``, ``hook_name``,
  ``hook_name_out``, ``context_size``, ``prepend_bos``, ``dataset_path``, ...; a trained SAE
  also has ``training_architecture`` and ``training_architecture_details``).
* ``sae_weights.safetensors``: ``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_out]``,
  ``b_dec``, ``threshold`` (JumpReLU), ``W_skip [d_out, d_in]`` (skip transcoders; note the
  orientation is the transpose of mechscope's ``W_skip [d_in, d_out]``).

Architecture mapping (mechscope -> SAELens; loading inverts it):

==============  ===========================  ===============================================
mechscope       SAE                          transcoder (skip: ``skip_transcoder`` family)
==============  ===========================  ===============================================
relu            standard                     transcoder / skip_transcoder
topk            topk (``k``; selection on    not in SAELens (refused)
                raw pre-activations, so
                ``rescale_acts_by_decoder_
                norm`` is false)
jumprelu        jumprelu                     jumprelu_transcoder / jumprelu_skip_transcoder
batchtopk       jumprelu (as SAELens saves   jumprelu_transcoder / ...
                BatchTopK); ``metadata.
                training_architecture`` =
                "batchtopk", ``k`` in the
                training details
matryoshka      jumprelu; training           jumprelu_transcoder / ...
                architecture
                "matryoshka_batchtopk"
==============  ===========================  ===============================================

The full mechscope config also rides along as ``metadata.mechscope_config`` (SAELens keeps
unknown metadata keys), so a mechscope file loads back as exactly what was saved.

Loading a file SAELens wrote: a TopK SAE with ``rescale_acts_by_decoder_norm`` (SAELens's
training default) selects on ``h * ||W_dec_i||`` and decodes ``f / ||W_dec_i||``; mechscope
folds the norms into the weights (``W_enc[:, i] *= n_i``, ``b_enc[i] *= n_i``,
``W_dec[i] /= n_i``), which is the same function. SAELens's JumpReLU is
``ReLU(h) * (h > theta)``, which equals ``h * (h > max(theta, 0))``; negative thresholds are
clamped to 0 on load. ``normalize_activations="expected_average_only_in"`` needs the scaling
factor, read from an ``activation_scaler.json`` beside the files (SAELens's own name); it
becomes ``norm_scale``. Per-token normalisations (``layer_norm``, ``constant_norm_rescale``)
and whitening are refused.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from ..errors import ArtifactError, MechscopeError
from .base import Dictionary, DictionaryConfig
from .io import (
    build_loaded,
    config_from_json,
    config_to_json,
    json_bytes,
    read_json,
    read_safetensors,
    state_tensors,
)

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SCALER_FILE = "activation_scaler.json"
SAELENS_VERSION = "6.0.0"
"""``metadata.sae_lens_version`` written by mechscope (SAELens reads files of 6.0.0 and later as v6)."""

_FROM_SAELENS: dict[str, tuple[str, bool, bool]] = {
    # SAELens architecture -> (mechscope architecture, transcoder, skip connection)
    "standard": ("relu", False, False),
    "topk": ("topk", False, False),
    "jumprelu": ("jumprelu", False, False),
    "transcoder": ("relu", True, False),
    "skip_transcoder": ("relu", True, True),
    "jumprelu_transcoder": ("jumprelu", True, False),
    "jumprelu_skip_transcoder": ("jumprelu", True, True),
}
_TRAINING_ARCH = {"batchtopk": "batchtopk", "matryoshka": "matryoshka_batchtopk"}
_CONFIG_KEYS = ("model_name", "hook_name", "hook_name_out")


# -- writing ----------------------------------------------------------------------------------


def _is_transcoder(config: DictionaryConfig) -> bool:
    return config.is_transcoder or config.skip_connection or config.out_dim != config.d_in


def saelens_architecture(config: DictionaryConfig) -> str:
    """The SAELens ``architecture`` a dictionary is saved as (see the module's table)."""
    arch = config.architecture
    if not _is_transcoder(config):
        return {"relu": "standard", "topk": "topk"}.get(arch, "jumprelu")
    if arch == "topk":
        raise MechscopeError(
            "SAELens has no TopK transcoder architecture; save this transcoder in the mechscope format"
        )
    if config.apply_b_dec_to_input:
        raise MechscopeError("SAELens transcoders require apply_b_dec_to_input=False")
    base = "transcoder" if arch == "relu" else "jumprelu_transcoder"
    return base.replace("transcoder", "skip_transcoder") if config.skip_connection else base


def saelens_cfg(config: DictionaryConfig) -> dict[str, Any]:
    """``cfg.json`` for a dictionary whose norm scale is already folded."""
    sl_arch = saelens_architecture(config)
    meta: dict[str, Any] = dict(config.metadata)
    meta.setdefault("sae_lens_version", SAELENS_VERSION)
    meta.setdefault("sae_lens_training_version", meta["sae_lens_version"])
    meta["model_name"] = config.model_name
    meta["hook_name"] = config.hook_name
    if "transcoder" in sl_arch:
        meta["hook_name_out"] = config.hook_name_out or config.hook_name
    if config.architecture in _TRAINING_ARCH:
        meta["training_architecture"] = _TRAINING_ARCH[config.architecture]
        details: dict[str, Any] = {"k": config.k}
        if config.architecture == "matryoshka":
            details["matryoshka_widths"] = list(config.matryoshka_widths)
        meta["training_architecture_details"] = details
    meta["mechscope_config"] = config_to_json(config)
    cfg: dict[str, Any] = {
        "architecture": sl_arch,
        "d_in": config.d_in,
        "d_sae": config.d_sae,
        "dtype": config.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": config.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": meta.pop("reshape_activations", "none"),
        "metadata": meta,
    }
    if sl_arch == "topk":
        cfg["k"] = config.k
        cfg["rescale_acts_by_decoder_norm"] = False
    if "transcoder" in sl_arch:
        cfg["d_out"] = config.out_dim
    return cfg


def saelens_files(d: Dictionary) -> dict[str, bytes]:
    """The two files of ``d`` in SAELens's layout (norm scale folded on a copy)."""
    from safetensors.torch import save

    c_out = d.config.norm_scale if d.config.norm_scale_out is None else d.config.norm_scale_out
    if d.config.norm_scale != 1.0 or c_out != 1.0:
        d = copy.deepcopy(d)
        d.fold_norm_scale()
    cfg = saelens_cfg(d.config)
    tensors = state_tensors(d)
    if "W_skip" in tensors:
        tensors["W_skip"] = tensors["W_skip"].T.contiguous()  # SAELens: [d_out, d_in]
    return {CFG_FILE: json_bytes(cfg), WEIGHTS_FILE: save(tensors)}


# -- reading ----------------------------------------------------------------------------------


def _legacy_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    """A pre-6.0 flat ``cfg.json`` (``hook_point``, ``activation_fn_str``...) in v6 shape."""
    meta = {k: v for k, v in cfg.items() if k not in ("d_in", "d_sae", "dtype", "device", "architecture")}
    if "hook_point" in meta:
        meta["hook_name"] = meta.pop("hook_point")
    out: dict[str, Any] = {k: cfg[k] for k in ("d_in", "d_sae", "dtype") if k in cfg}
    out["architecture"] = cfg.get("architecture", "standard")
    act = cfg.get("activation_fn", cfg.get("activation_fn_str"))
    if act == "topk" and (cfg.get("activation_fn_kwargs") or {}).get("k") is not None:
        out["architecture"], out["k"] = "topk", cfg["activation_fn_kwargs"]["k"]
    out["apply_b_dec_to_input"] = cfg.get("apply_b_dec_to_input", True)
    norm = cfg.get("normalize_activations")
    out["normalize_activations"] = "expected_average_only_in" if norm is True else (norm or "none")
    out["metadata"] = meta
    return out


def _norm_scale(cfg: dict[str, Any], directory: Path) -> float:
    mode = cfg.get("normalize_activations") or "none"
    if mode == "none":
        return 1.0
    if mode != "expected_average_only_in":
        raise ArtifactError(
            f"{directory / CFG_FILE}: normalize_activations={mode!r} is a per-token normalisation "
            "mechscope does not apply; only 'none' and 'expected_average_only_in' load"
        )
    scaler = directory / SCALER_FILE
    if not scaler.exists():
        raise ArtifactError(
            f"{directory / CFG_FILE}: normalize_activations='expected_average_only_in' but {scaler} is "
            "missing; write {'scaling_factor': <c>} there (SAELens keeps c in its registry or next to "
            "the checkpoint) or fold c into the weights first"
        )
    factor = read_json(scaler).get("scaling_factor")
    if not isinstance(factor, int | float) or factor <= 0:
        raise ArtifactError(f"{scaler}: scaling_factor must be a positive number, not {factor!r}")
    return float(factor)


def _dtype(value: Any, where: Path) -> str:
    name = str(value or "float32").removeprefix("torch.")
    if name not in ("float32", "float64", "float16", "bfloat16"):
        raise ArtifactError(f"{where}: unsupported dtype {value!r}")
    return name


def config_from_saelens(cfg: dict[str, Any], directory: Path) -> DictionaryConfig:
    """A ``DictionaryConfig`` for a ``cfg.json`` written by SAELens (or mechscope)."""
    where = directory / CFG_FILE
    if not isinstance(cfg, dict) or "d_in" not in cfg or "d_sae" not in cfg:
        raise ArtifactError(f"{where} is not an SAELens config (it needs d_in and d_sae)")
    if "metadata" not in cfg:
        cfg = _legacy_cfg(cfg)
    meta = dict(cfg.get("metadata") or {})
    if "mechscope_config" in meta:
        config = config_from_json(meta["mechscope_config"], str(where))
        if (config.d_in, config.d_sae) != (cfg["d_in"], cfg["d_sae"]):
            raise ArtifactError(f"{where}: d_in/d_sae disagree with metadata.mechscope_config")
        return config
    sl_arch = cfg.get("architecture", "standard")
    if sl_arch not in _FROM_SAELENS:
        raise ArtifactError(
            f"{where}: SAELens architecture {sl_arch!r} has no mechscope equivalent; "
            f"supported: {', '.join(_FROM_SAELENS)}"
        )
    if meta.get("hook_head_index") is not None:
        raise ArtifactError(f"{where}: single-head SAEs (hook_head_index) are not supported")
    arch, transcoder, skip = _FROM_SAELENS[sl_arch]
    if cfg.get("reshape_activations", "none") != "none":
        meta["reshape_activations"] = cfg["reshape_activations"]
    kept = {k: v for k, v in meta.items() if k not in _CONFIG_KEYS}
    hook_name = meta.get("hook_name") or ""
    return DictionaryConfig(
        architecture=arch,
        d_in=int(cfg["d_in"]),
        d_sae=int(cfg["d_sae"]),
        d_out=int(cfg["d_out"]) if transcoder and "d_out" in cfg else None,
        k=int(cfg["k"]) if arch == "topk" else None,
        hook_name=hook_name,
        hook_name_out=(meta.get("hook_name_out") or hook_name) if transcoder else None,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", not transcoder)),
        skip_connection=skip,
        norm_scale=_norm_scale(cfg, directory),
        model_name=meta.get("model_name") or "",
        dtype=_dtype(cfg.get("dtype"), where),
        metadata=kept,
    )


def _convert_tensors(
    cfg: dict[str, Any], config: DictionaryConfig, tensors: dict[str, torch.Tensor], where: Path
) -> dict[str, torch.Tensor]:
    """SAELens tensors -> mechscope's (orientation, dtypes, folded decoder norms)."""
    tensors = dict(tensors)
    for name in ("scaling_factor", "finetuning_scaling_factor"):
        if name in tensors:
            if not torch.all(tensors[name] == 1):
                raise ArtifactError(f"{where}: a fine-tuning scaling factor other than 1 is not supported")
            del tensors[name]
    if "W_skip" in tensors:
        tensors["W_skip"] = tensors["W_skip"].T.contiguous()
    dtype = getattr(torch, config.dtype)
    tensors = {k: v.to(torch.float32 if k == "threshold" else dtype) for k, v in tensors.items()}
    from_mechscope = "mechscope_config" in (cfg.get("metadata") or {})
    if from_mechscope:
        return tensors
    if config.architecture == "topk" and cfg.get("rescale_acts_by_decoder_norm") and "W_dec" in tensors:
        norms = tensors["W_dec"].norm(dim=-1)  # [d_sae]
        tensors["W_enc"] = tensors["W_enc"] * norms
        tensors["b_enc"] = tensors["b_enc"] * norms
        tensors["W_dec"] = tensors["W_dec"] / norms[:, None]
    if "threshold" in tensors:
        tensors["threshold"] = tensors["threshold"].clamp(min=0)
    return tensors


def load_saelens(directory: Path) -> Dictionary:
    """Load an SAELens-layout directory (``cfg.json`` + ``sae_weights.safetensors``)."""
    cfg = read_json(directory / CFG_FILE)
    config = config_from_saelens(cfg, directory)
    raw, _ = read_safetensors(directory / WEIGHTS_FILE)
    tensors = _convert_tensors(cfg, config, raw, directory / WEIGHTS_FILE)
    return build_loaded(config, tensors, directory / WEIGHTS_FILE)
