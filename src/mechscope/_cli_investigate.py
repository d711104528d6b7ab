"""``mechscope investigate`` and ``mechscope compare`` (see docs/investigate.md)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .errors import MechscopeError

__all__ = ["add_investigate_commands", "print_result"]


def add_investigate_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``investigate`` and ``compare``."""
    p = sub.add_parser(
        "investigate",
        help="one resumable run from a behaviour to a validated explanation (config file or --model/--task)",
        description="Run an investigation: evaluate, localise, circuit, dictionaries, features, explain, "
        "checks, report. Rerunning with the same --out skips every stage whose inputs are unchanged "
        "and resumes an interrupted run at its first incomplete stage.",
    )
    p.add_argument(
        "config", nargs="?", type=Path, help="a TOML investigation config (or give --model and --task)"
    )
    p.add_argument("--out", type=Path, help="run directory (default: runs/investigate-<YYYYmmdd-HHMMSS>)")
    p.add_argument(
        "--model",
        help="model (built-in name, toy/<name>, local dir or .gguf); with --task, instead of CONFIG",
    )
    p.add_argument(
        "--task", help="behaviour: a built-in task (ioi, factual, induction, greater_than) or a JSONL file"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of every random choice (with --model/--task; default 0)"
    )
    p.add_argument("--allow-hub", action="store_true", help="accept a hub id as the model (downloads it)")
    p.add_argument(
        "--demo",
        action="store_true",
        help="the built-in demo (what `make demo` runs): SmolLM2-135M on IOI, then factual recall with IOI's "
        "dictionaries, then compare; --out defaults to runs/demo, and a rerun skips what is up to date",
    )
    p.add_argument("--device", help="with --demo: the device (default: the configs' auto)")
    p.set_defaults(func=_cmd_investigate)

    c = sub.add_parser(
        "compare", help="compare two investigation runs: components, circuit and features side by side"
    )
    c.add_argument("run_a", type=Path, help="first run directory")
    c.add_argument("run_b", type=Path, help="second run directory")
    c.add_argument("--out", type=Path, help="also write the comparison as a self-contained HTML page here")
    c.set_defaults(func=_cmd_compare)


def _config(args: argparse.Namespace) -> Any:
    from .investigate.config import ConfigError, from_flags
    from .investigate.run import read_config
    from .investigate.session import known_tasks
    from .models.zoo import BUILTIN

    if args.config is not None:
        if args.model or args.task:
            raise ConfigError(["give either CONFIG or --model and --task, not both"])
        return read_config(args.config, allow_hub=args.allow_hub)
    if not (args.model and args.task):
        raise ConfigError(["model.name, behaviour.task: give a CONFIG file, or both --model and --task"])
    return from_flags(args.model, args.task, seed=args.seed, known_models=tuple(BUILTIN),
                      known_tasks=known_tasks(), allow_hub=args.allow_hub)  # fmt: skip


def print_result(result: Any) -> None:
    """The ten-line summary, the report's path and how to resume."""
    lines = result.summary.get("headline", [])
    print("\n".join(lines))
    if result.report_path.is_file():
        print(f"report: {result.report_path}")
    print(f"run directory: {result.run_dir} (rerun with --out {result.run_dir} to resume or update)")


def _cmd_investigate(args: argparse.Namespace) -> int:
    from .investigate.run import investigate

    if args.demo:
        return _cmd_demo(args)
    config = _config(args)
    out = args.out or Path("runs") / f"investigate-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        result = investigate(config, out)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: rerun with --out {out} to resume at the first incomplete stage", file=sys.stderr
        )
        return 130
    failed = [r.name for r in result.report.stages if r.status == "failed"]
    print_result(result)
    if failed:
        raise MechscopeError(f"stage {failed[0]!r} failed; rerun with --out {out} to resume there")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .investigate.compare import compare_runs, format_comparison, render_comparison

    cmp = compare_runs(args.run_a, args.run_b)
    print(format_comparison(cmp))
    if args.out is not None:
        from ._fs import atomic_write_text

        atomic_write_text(args.out, render_comparison(cmp))
        print(f"wrote {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .investigate.demo import run_demo_investigation

    if args.config is not None or args.task:
        raise MechscopeError(
            "--demo runs the built-in configs; give no CONFIG or --task (--model and --device apply)"
        )
    out = args.out or Path("runs") / "demo"
    t0 = time.perf_counter()
    try:
        ioi, factual, cmp = run_demo_investigation(out, model=args.model, device=args.device)
    except KeyboardInterrupt:
        print(
            "\ninterrupted: run the same command again to resume at the first incomplete stage",
            file=sys.stderr,
        )
        return 130
    for name, result in (("IOI", ioi), ("factual recall", factual)):
        print(f"\n== {name} ==")
        print_result(result)
    print("\n== compare ==")
    print(cmp["verdict"])
    print(f"comparison: {out / 'compare.html'}")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0
