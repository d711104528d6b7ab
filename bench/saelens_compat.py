"""SAELens compatibility: mechscope's SAELens-format files load in SAELens, and SAELens's in mechscope.

Run inside the SAELens environment (``bash bench/setup_saelens.sh`` creates it):

    bench/.venv-saelens/bin/python bench/saelens_compat.py

What is checked
---------------
1. **mechscope -> SAELens.** For every mechscope architecture (relu, topk, batchtopk,
   jumprelu, matryoshka) and every transcoder kind SAELens has (ReLU and JumpReLU, with and
   without a skip connection), a dictionary with random parameters (positive thresholds)
   is saved with ``save_dictionary(d, path, format="saelens")`` and loaded with SAELens's own
   ``SAE.load_from_disk(path)``. SAELens must pick the expected class, and its ``encode``,
   ``decode`` and ``forward`` must equal mechscope's ``encode``, ``decode`` and ``forward`` on
   random inputs: the same latents active, and relative differences
   ``max |a - b| / max |b|`` at most ``TOL`` (fp32 rounding). A dictionary with an unfolded
   ``norm_scale`` is included: the save folds it, and SAELens (raw activations in) must
   agree with mechscope on raw activations.
2. **SAELens -> mechscope.** SAEs created by SAELens (``StandardSAE``, ``TopKSAE`` with and
   without ``rescale_acts_by_decoder_norm``, ``JumpReLUSAE`` with some negative thresholds,
   BatchTopK and Matryoshka training SAEs saved with ``save_inference_model``, and the four
   transcoder classes), with random parameters, are saved by SAELens (``save_model`` /
   ``save_inference_model``) and loaded with ``mechscope.dictionary.load_dictionary``; the
   outputs must agree the same way.

Results go to ``bench/results/saelens_compat.json`` (versions, every case, its max
differences and whether it passed). Takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import torch

TOL = 1e-6
"""Largest accepted relative difference, ``max |mechscope - SAELens| / max |SAELens|`` (fp32)."""
D_IN, D_SAE, D_OUT, K = 16, 64, 12, 5
HOOK = "blocks.3.hook_resid_post"
TC_HOOKS = {"hook_name": "blocks.3.ln2.hook_normalized", "hook_name_out": "blocks.3.hook_mlp_out"}


def randomise_(module: torch.nn.Module, seed: int, negative_thresholds: bool = False) -> None:
    """Every parameter random (thresholds positive unless asked), decoder rows of varied norm."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            v = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name == "threshold":
                v = v * 0.5 if negative_thresholds else v.abs() * 0.5
            elif name == "W_dec":
                v = v * (0.2 + torch.rand(p.shape[0], 1, generator=g))  # rows of norm != 1
            elif name.startswith("b_"):
                v = v * 0.1
            p.copy_(v.to(p.dtype))
        for name, b in module.named_buffers():
            if name == "topk_threshold":
                b.copy_(torch.tensor(0.3))


def compare(ms, sl, x: torch.Tensor, skip: bool) -> dict[str, float | bool]:
    """Relative max differences (max |a - b| / max |b|) of encode, decode and forward, and code supports."""
    with torch.no_grad():
        f_ms, f_sl = ms.encode(x), sl.encode(x)
        dec_ms = ms.decode(f_ms, x) if skip else ms.decode(f_ms)
        dec_sl = sl.decode(f_ms)
        if skip:
            dec_sl = dec_sl + x @ sl.W_skip.T

        def rel(a: torch.Tensor, b: torch.Tensor) -> float:
            return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))

        return {
            "encode": rel(f_ms, f_sl),
            "decode": rel(dec_ms, dec_sl),
            "forward": rel(ms(x), sl(x)),
            "same_active_latents": bool(torch.equal(f_ms != 0, f_sl != 0)),
            "l0": float((f_ms != 0).float().sum(-1).mean()),
        }


def passed(diffs: dict) -> bool:
    return (
        bool(diffs["same_active_latents"]) and max(diffs["encode"], diffs["decode"], diffs["forward"]) <= TOL
    )


def mechscope_to_saelens(tmp: Path) -> list[dict]:
    from sae_lens import SAE

    from mechscope.dictionary import DictionaryConfig, make_dictionary
    from mechscope.dictionary.io import save_dictionary

    tc = dict(d_out=D_OUT, apply_b_dec_to_input=False, **TC_HOOKS)
    cases = {
        "relu": (DictionaryConfig("relu", D_IN, D_SAE, hook_name=HOOK), "StandardSAE"),
        "topk": (DictionaryConfig("topk", D_IN, D_SAE, k=K, hook_name=HOOK), "TopKSAE"),
        "batchtopk": (DictionaryConfig("batchtopk", D_IN, D_SAE, k=K, hook_name=HOOK), "JumpReLUSAE"),
        "jumprelu": (DictionaryConfig("jumprelu", D_IN, D_SAE, hook_name=HOOK), "JumpReLUSAE"),
        "matryoshka": (
            DictionaryConfig("matryoshka", D_IN, D_SAE, k=K, matryoshka_widths=(16, 32, 64), hook_name=HOOK),
            "JumpReLUSAE",
        ),
        "topk, norm_scale 2.5 unfolded": (
            DictionaryConfig("topk", D_IN, D_SAE, k=K, hook_name=HOOK, norm_scale=2.5),
            "TopKSAE",
        ),
        "relu transcoder": (DictionaryConfig("relu", D_IN, D_SAE, **tc), "Transcoder"),
        "relu skip transcoder": (
            DictionaryConfig("relu", D_IN, D_SAE, skip_connection=True, **tc),
            "SkipTranscoder",
        ),
        "jumprelu transcoder": (DictionaryConfig("jumprelu", D_IN, D_SAE, **tc), "JumpReLUTranscoder"),
        "jumprelu skip transcoder": (
            DictionaryConfig("jumprelu", D_IN, D_SAE, skip_connection=True, **tc),
            "JumpReLUSkipTranscoder",
        ),
    }
    results = []
    for i, (name, (config, expected_cls)) in enumerate(cases.items()):
        d = make_dictionary(config)
        randomise_(d, seed=i)
        d.eval()
        path = tmp / f"ms-{i}"
        save_dictionary(d, path, format="saelens")
        sl = SAE.load_from_disk(path)
        x = torch.randn(256, D_IN, generator=torch.Generator().manual_seed(100 + i))
        if config.norm_scale != 1.0:  # mechscope's unfolded dictionary takes scaled inputs
            import copy

            ref = copy.deepcopy(d)
            ref.fold_norm_scale()
            d = ref
        diffs = compare(d, sl, x, config.skip_connection)
        ok = type(sl).__name__ == expected_cls and passed(diffs)
        results.append(
            {
                "case": name,
                "saelens_class": type(sl).__name__,
                "expected_class": expected_cls,
                **diffs,
                "ok": ok,
            }
        )
    return results


def saelens_to_mechscope(tmp: Path) -> list[dict]:
    import sae_lens as sl
    from sae_lens.saes.sae import SAEMetadata

    from mechscope.dictionary.io import load_dictionary

    def meta(tc: bool = False) -> SAEMetadata:
        extra = {"hook_name_out": TC_HOOKS["hook_name_out"]} if tc else {}
        hook = TC_HOOKS["hook_name"] if tc else HOOK
        return SAEMetadata(model_name="tiny", hook_name=hook, context_size=128, prepend_bos=True, **extra)

    base = dict(d_in=D_IN, d_sae=D_SAE)
    tcb = dict(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, apply_b_dec_to_input=False)
    cases = [
        ("StandardSAE", lambda: sl.StandardSAE(sl.StandardSAEConfig(**base, metadata=meta())), "save_model", "relu"),
        ("TopKSAE (rescale off)", lambda: sl.TopKSAE(sl.TopKSAEConfig(**base, k=K, metadata=meta())), "save_model", "topk"),
        ("TopKSAE (rescale_acts_by_decoder_norm)",
         lambda: sl.TopKSAE(sl.TopKSAEConfig(**base, k=K, rescale_acts_by_decoder_norm=True, metadata=meta())),
         "save_model", "topk"),
        ("TopKTrainingSAE -> save_inference_model",
         lambda: sl.TopKTrainingSAE(sl.TopKTrainingSAEConfig(**base, k=K, metadata=meta())),
         "save_inference_model", "topk"),
        ("JumpReLUSAE (some thresholds < 0)",
         lambda: sl.JumpReLUSAE(sl.JumpReLUSAEConfig(**base, metadata=meta())), "save_model", "jumprelu"),
        ("BatchTopKTrainingSAE -> save_inference_model",
         lambda: sl.BatchTopKTrainingSAE(sl.BatchTopKTrainingSAEConfig(**base, k=K, metadata=meta())),
         "save_inference_model", "jumprelu"),
        ("MatryoshkaBatchTopKTrainingSAE -> save_inference_model",
         lambda: sl.MatryoshkaBatchTopKTrainingSAE(
             sl.MatryoshkaBatchTopKTrainingSAEConfig(**base, k=K, matryoshka_widths=[16, 32, 64], metadata=meta())),
         "save_inference_model", "jumprelu"),
        ("Transcoder", lambda: sl.Transcoder(sl.TranscoderConfig(**tcb, metadata=meta(True))), "save_model", "relu"),
        ("SkipTranscoder", lambda: sl.SkipTranscoder(sl.SkipTranscoderConfig(**tcb, metadata=meta(True))),
         "save_model", "relu"),
        ("JumpReLUTranscoder",
         lambda: sl.JumpReLUTranscoder(sl.JumpReLUTranscoderConfig(**tcb, metadata=meta(True))), "save_model", "jumprelu"),
        ("JumpReLUSkipTranscoder",
         lambda: sl.JumpReLUSkipTranscoder(sl.JumpReLUSkipTranscoderConfig(**tcb, metadata=meta(True))),
         "save_model", "jumprelu"),
    ]  # fmt: skip
    results = []
    for i, (name, build, save, arch) in enumerate(cases):
        sae = build()
        randomise_(sae, seed=50 + i, negative_thresholds="thresholds < 0" in name)
        sae.eval()
        path = tmp / f"sl-{i}"
        getattr(sae, save)(path)
        # the reference is SAELens's own inference SAE, loaded back from the files it wrote
        ref = sl.SAE.load_from_disk(path)
        d = load_dictionary(path)
        x = torch.randn(256, D_IN, generator=torch.Generator().manual_seed(200 + i))
        skip = hasattr(ref, "W_skip")
        diffs = compare(d, ref, x, skip)
        ok = d.config.architecture == arch and passed(diffs)
        if "transcoder" in type(ref).__name__.lower():
            ok = ok and d.config.hook_name_out == TC_HOOKS["hook_name_out"] and d.config.out_dim == D_OUT
        results.append({"case": name, "mechscope_architecture": arch, **diffs, "ok": ok})
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "saelens_compat.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    import sae_lens

    import mechscope

    with tempfile.TemporaryDirectory() as tmp:
        forward = mechscope_to_saelens(Path(tmp))
        reverse = saelens_to_mechscope(Path(tmp))
    for title, rows in (("mechscope -> SAELens", forward), ("SAELens -> mechscope", reverse)):
        print(title)
        for r in rows:
            print(f"  {'ok  ' if r['ok'] else 'FAIL'} {r['case']:<52} encode {r['encode']:.1e}  "
                  f"decode {r['decode']:.1e}  forward {r['forward']:.1e}  L0 {r['l0']:.1f}")  # fmt: skip
    result = {
        "sae_lens_version": sae_lens.__version__,
        "mechscope_version": mechscope.__version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "tolerance": TOL,
        "shapes": {"d_in": D_IN, "d_sae": D_SAE, "d_out_transcoders": D_OUT, "k": K, "rows": 256},
        "mechscope_to_saelens": forward,
        "saelens_to_mechscope": reverse,
        "all_ok": all(r["ok"] for r in forward + reverse),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"all ok: {result['all_ok']}  -> {args.out}")
    return 0 if result["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
