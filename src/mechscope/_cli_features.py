"""The feature commands of the CLI: ``features``, ``explain``, ``steer`` and ``probe``.

Every option is generated from the job's config dataclass (see :mod:`mechscope._config_cli`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _config(args: argparse.Namespace) -> Any:
    from ._config_cli import config_from_args

    return config_from_args(args.config_class, args)


def add_feature_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the four commands on the CLI's subparsers."""
    from ._config_cli import add_config_commands
    from .pipeline.features_job import ExplainJobConfig, FeaturesJobConfig
    from .pipeline.steer_probe import ProbeJobConfig, SteerJobConfig

    commands = [
        ("features", FeaturesJobConfig, "feature statistics of a dictionary over a corpus, with dashboards",
         _cmd_features),
        ("explain", ExplainJobConfig, "explain, score and validate the features of a feature artifact",
         _cmd_explain),
        ("steer", SteerJobConfig, "steer with dictionary features or a CAA/ActAdd vector and sweep the strength",
         _cmd_steer),
        ("probe", ProbeJobConfig, "train a linear probe for a concept at one hook", _cmd_probe),
    ]  # fmt: skip
    add_config_commands(sub, commands)


def _cmd_features(args: argparse.Namespace) -> int:
    from .pipeline.features_job import run_features

    out, summary = run_features(_config(args), progress=_progress)
    print(f"{summary['n_tokens']} tokens, {summary['fired']} of {summary['d_sae']} features fired "
          f"({summary['seconds']:.0f} s)")  # fmt: skip
    index = out / "dashboards" / "index.html"
    print(f"Wrote {out}" + (f" (open {index})" if summary["dashboards"] else ""))
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from .pipeline.features_job import run_explain

    out, rows = run_explain(_config(args), progress=_progress)
    print(f"{'feature':>8}  {'detect':>6} {'fuzz':>6} {'sim':>6}  {'card':<8} explanation")
    for r in rows:
        s = r["scores"]
        print(f"{r['feature']:>8}  {s.get('detection', float('nan')):6.2f} {s.get('fuzzing', float('nan')):6.2f} "
              f"{s.get('simulation', float('nan')):6.2f}  {r.get('verdict') or '-':<8} {r['explanation']}")  # fmt: skip
    print(f"Wrote {out} (explanations.json, scores.json, dashboards/)")
    return 0


def _cmd_steer(args: argparse.Namespace) -> int:
    from .pipeline.steer_probe import run_steer

    out, rows = run_steer(_config(args), progress=_progress)
    for r in rows:
        print(f"strength {r.alpha:+g}: metric shift {r.shift:+.3f}")
        for text in r.texts:
            print(f"    {text!r}")
    print(f"Wrote {out / 'steer.json'}")
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from .pipeline.steer_probe import run_probe

    out, s = run_probe(_config(args), progress=_progress)
    print(f"probe at {s['hook']}: train accuracy {s['train_accuracy']:.3f}, validation accuracy "
          f"{s['val_accuracy']:.3f}, validation AUROC {s['val_auroc']:.3f}")  # fmt: skip
    if "best_feature" in s:
        print(f"best single feature: {s['best_feature']} (validation AUROC {s['best_feature_auroc']:.3f})")
    print(f"Wrote {out} (probe.safetensors, probe.json, summary.json)")
    return 0
