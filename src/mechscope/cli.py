"""The ``mechscope`` command line: thin subcommands that parse arguments and call the library.

    mechscope demo [--model NAME] [--out DIR]   run the demo and write a run directory
    mechscope patch --task ioi --sweep heads    localise a behaviour and write a result directory
    mechscope harvest --hooks H [...]           harvest activations into a sharded disk store
    mechscope train-sae --hook H [...]          train an SAE or transcoder (streamed or from a store)
    mechscope eval-sae --dictionary DIR [...]   evaluate a dictionary (reconstruction, sparsity, CE/KL)
    mechscope circuit --task ioi --method eap-ig  find a behaviour's circuit; faithfulness and graphs
    mechscope toy list | train NAME | analyze NAME --out DIR   the fully understood toy models
    mechscope models                            list the built-in models
    mechscope hooks MODEL                       list a model's hook points with their shapes
    mechscope --version

Errors mechscope raises on purpose (:class:`~mechscope.errors.MechscopeError`) print one
``error: ...`` line to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._config_cli import field_docs as _field_docs
from ._version import __version__
from .errors import MechscopeError

EXIT_ERROR = 2
"""Exit status for a deliberate mechscope error (argparse uses 2 for usage errors too)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors: keep argparse's status
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_ERROR)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        return int(args.func(args))
    except MechscopeError as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _parser() -> argparse.ArgumentParser:
    from ._cli_features import add_feature_commands
    from ._cli_investigate import add_investigate_commands
    from .pipeline.demo import DemoConfig

    docs = _field_docs(DemoConfig)
    defaults = DemoConfig()
    p = argparse.ArgumentParser(prog="mechscope", description="Mechanistic interpretability in one package.")
    p.add_argument("--version", action="version", version=f"mechscope {__version__}")
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the demo (factual recall and a logit lens) and write a report")
    demo.add_argument(
        "--model", default=defaults.model, help=f"{docs.get('model', '')} (default: %(default)s)"
    )
    demo.add_argument(
        "--out", type=Path, default=defaults.out, help=f"{docs.get('out', '')} (default: %(default)s)"
    )
    demo.add_argument(
        "--device",
        default=defaults.device,
        help="device for the model (default: CUDA when available, else CPU)",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="skip the localisation, circuit, dictionary and features stages (only factual recall and the logit lens)",
    )
    demo.add_argument(
        "--no-sae",
        action="store_true",
        help="skip the dictionary and features stages (training and evaluating a TopK SAE, about 45 s on 2 cores)",
    )
    demo.add_argument(
        "--no-features",
        action="store_true",
        help="skip the features stage (statistics, explanations, report cards, dashboards, steering)",
    )
    demo.set_defaults(func=_cmd_demo)

    add_investigate_commands(sub)
    _add_patch(sub)
    _add_dictionary_commands(sub)
    _add_circuit(sub)
    add_feature_commands(sub)
    _add_serve(sub)
    _add_toy(sub)

    models = sub.add_parser("models", help="list the built-in models")
    models.set_defaults(func=_cmd_models)

    hooks = sub.add_parser("hooks", help="list every hook point of a model with its shape")
    hooks.add_argument("model", help="a built-in name, a .gguf file, a local HF directory or a hub id")
    hooks.add_argument("--device", default="cpu", help="device to load the model on (default: %(default)s)")
    hooks.set_defaults(func=_cmd_hooks)
    return p


def _add_patch(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from .interventions import SWEEPS
    from .pipeline.patch import METHODS, PatchJobConfig

    docs, d = _field_docs(PatchJobConfig), PatchJobConfig()
    p = sub.add_parser("patch", help="localise a behaviour: patch, attribute or ablate every site of a sweep")
    p.add_argument("--model", default=d.model, help=f"{docs.get('model', '')} (default: %(default)s)")
    p.add_argument("--task", default=d.task, help=f"{docs.get('task', '')} (default: %(default)s)")
    p.add_argument(
        "--sweep", default=d.sweep, choices=list(SWEEPS), help="which sites (default: %(default)s)"
    )
    p.add_argument(
        "--method",
        default=d.method,
        choices=list(METHODS),
        help=f"{docs.get('method', '')} (default: %(default)s)",
    )
    p.add_argument("--out", type=Path, default=d.out, help=f"{docs.get('out', '')} (default: %(default)s)")
    p.add_argument("--n", type=int, default=d.n, help=f"{docs.get('n', '')} (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"{docs.get('seed', '')} (default: %(default)s)")
    p.add_argument(
        "--direction", default=d.direction, choices=["denoise", "noise"], help="(default: %(default)s)"
    )
    p.add_argument("--metric", default=None, help="metric name (default: the task's own)")
    p.add_argument(
        "--mode",
        default=d.mode,
        choices=["fast", "batched", "loop"],
        help="engine mode (default: %(default)s)",
    )
    p.add_argument("--layers", type=int, nargs="*", default=None, help="restrict to these blocks")
    p.add_argument("--top", type=int, default=10, help="how many top sites to print (default: %(default)s)")
    p.add_argument(
        "--device", default=None, help="device for the model (default: CUDA when available, else CPU)"
    )
    p.set_defaults(func=_cmd_patch)


def _cmd_patch(args: argparse.Namespace) -> int:
    from .pipeline.patch import PatchJobConfig, run_patch

    config = PatchJobConfig(
        task=args.task, sweep=args.sweep, model=args.model, out=args.out, method=args.method, n=args.n,
        seed=args.seed, direction=args.direction, metric=args.metric, mode=args.mode,
        layers=tuple(args.layers) if args.layers else None, device=args.device,
    )  # fmt: skip
    out, result = run_patch(config, progress=_progress)
    base = result.baseline
    print(f"{result.method} of {result.sweep} on {result.info.get('task')}: {result.metric} clean {result.clean:.3f}, "
          f"corrupted {result.corrupted:.3f}")  # fmt: skip
    print(f"top {args.top} sites by |effect| (value, effect vs {base:.3f}):")
    names = [a.name for a in result.axes]
    for labels, value in result.top(args.top):
        site = ", ".join(f"{n} {lab}" for n, lab in zip(names, labels))
        print(f"  {site:<44} {value:8.3f}  ({value - base:+.3f})")
    print(f"Wrote {out} (open {out / 'heatmap.html'})")
    return 0


def _add_dictionary_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """harvest, train-sae and eval-sae: every option generated from the config dataclass."""
    from ._config_cli import add_config_commands
    from .pipeline.eval_sae import EvalSAEConfig
    from .pipeline.harvest import HarvestConfig
    from .pipeline.train_sae import TrainSAEConfig

    commands = [
        ("harvest", HarvestConfig, "harvest activations of one or several hooks into a sharded disk store", _cmd_harvest),
        ("train-sae", TrainSAEConfig, "train an SAE or transcoder on a model's activations", _cmd_train_sae),
        ("eval-sae", EvalSAEConfig, "evaluate a dictionary: MSE, FVU, L0, dead/dense, CE recovered, KL", _cmd_eval_sae),
    ]  # fmt: skip
    add_config_commands(sub, commands)


def _config(args: argparse.Namespace) -> Any:
    from ._config_cli import config_from_args

    return config_from_args(args.config_class, args)


def _cmd_harvest(args: argparse.Namespace) -> int:
    import os

    from .pipeline.harvest import run_harvest

    store = run_harvest(_config(args), progress=_progress)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one line from rank 0
        print(
            f"Wrote {store.root}: {store.n_tokens} rows of {', '.join(store.hooks)} in {store.n_shards} shards"
        )
    return 0


def _cmd_train_sae(args: argparse.Namespace) -> int:
    from .pipeline.train_sae import run_train_sae

    result = run_train_sae(_config(args), progress=_progress)
    for name, path in result.paths.items():
        metrics = result.metrics.get(name, {})
        keys = ("loss", "fvu", "l0", "dead_fraction")  # the last logged step's headline numbers
        shown = ", ".join(f"{k} {metrics[k]:.4g}" for k in keys if isinstance(metrics.get(k), float))
        print(f"Wrote {path} ({result.steps} steps, {result.tokens} tokens{'; ' + shown if shown else ''})")
    return 0


def _cmd_eval_sae(args: argparse.Namespace) -> int:
    from .pipeline.eval_sae import run_eval_sae

    out, result = run_eval_sae(_config(args), progress=_progress)
    print(result.summary())
    print(f"Wrote {out} (metrics.json, density.png)")
    return 0


def _add_circuit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from ._config_cli import add_config_options
    from .pipeline.circuit import CircuitJobConfig

    text = "find the circuit of a behaviour (EAP-IG, EAP, exact edge patching, ACDC) and its faithfulness"
    p = sub.add_parser("circuit", help=text, description=f"{text}. {CircuitJobConfig.__doc__ or ''}")
    add_config_options(p, CircuitJobConfig)
    p.add_argument("--top", type=int, default=10, help="how many top edges to print (default: %(default)s)")
    p.set_defaults(func=_cmd_circuit, config_class=CircuitJobConfig)


def _cmd_circuit(args: argparse.Namespace) -> int:
    from .pipeline.circuit import run_circuit

    out, circuit, faith = run_circuit(_config(args), progress=_progress)
    print(f"top {args.top} edges ({circuit.method}, {circuit.ablation} ablation, metric {circuit.metric}):")
    for name, score in circuit.top_edges(args.top):
        print(f"  {name:<28} {score:+.4f}")
    print("faithfulness by circuit size:")
    for frac, n, f in zip(faith.fractions, faith.n_edges, faith.faithfulness, strict=True):
        print(f"  {frac:>6.1%} of edges ({n:>5} kept): {f:.3f}")
    print(f"CPR {faith.cpr:.3f}, CMD {faith.cmd:.3f}")
    print(f"Wrote {out} (open {out / 'graph.html'})")
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "serve",
        help="browse run directories in a local web UI (127.0.0.1 only, unless told otherwise)",
        description="Serve every artifact under RUN_DIR... read-only: runs, features, patching results, "
        "circuits. Binds 127.0.0.1 by default; any other --host prints a warning.",
    )
    p.add_argument("roots", nargs="+", type=Path, metavar="RUN_DIR", help="directories to serve")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8765, help="port (default: %(default)s; 0 picks a free one)")
    p.add_argument("--model", default=None, help="a model for the prompt, attention, lens and steering views")
    p.add_argument("--sae", type=Path, default=None, help="a dictionary for per-token features and steering")
    p.add_argument(
        "--device", default=None, help="device for --model (default: CUDA when available, else CPU)"
    )
    p.add_argument("--open", action="store_true", help="open the UI in a browser")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    for root in args.roots:
        if not root.is_dir():
            raise MechscopeError(f"{root} is not a directory")
    backend = None
    if args.model is not None:
        from .pipeline.ui_backend import ModelBackend

        backend = ModelBackend(args.model, args.sae, device=args.device)
    elif args.sae is not None:
        raise MechscopeError("--sae needs --model")
    serve(list(args.roots), host=args.host, port=args.port, model=backend, open_browser=args.open)
    return 0


def _add_toy(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    toy = sub.add_parser("toy", help="toy models that are fully understood: list, train, analyze")
    toy_sub = toy.add_subparsers(title="toy commands", metavar="ACTION")
    toy_sub.add_parser("list", help="list the toys and where each model comes from").set_defaults(
        func=_cmd_toy_list
    )
    train = toy_sub.add_parser("train", help="train a toy with its default recipe and save it")
    train.add_argument("name", help="a toy from `mechscope toy list`")
    train.add_argument("--out", type=Path, default=None, help="base directory (default: the user cache)")
    train.set_defaults(func=_cmd_toy_train)
    analyze = toy_sub.add_parser("analyze", help="analyse a toy: plots, metrics.json and index.html")
    analyze.add_argument("name", help="a toy from `mechscope toy list`")
    analyze.add_argument("--out", type=Path, required=True, help="directory to write into")
    analyze.set_defaults(func=_cmd_toy_analyze)

    def usage(args: argparse.Namespace) -> int:
        toy.print_help(sys.stderr)
        return EXIT_ERROR

    toy.set_defaults(func=usage)


def _toy_entry(name: str) -> Any:
    from .toys import TOYS

    if name not in TOYS:
        from difflib import get_close_matches

        close = get_close_matches(name, list(TOYS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise MechscopeError(f"no toy {name!r}{hint} Known: {', '.join(TOYS)}")
    return TOYS[name]


def _cmd_toy_list(args: argparse.Namespace) -> int:
    from .toys import TOYS
    from .toys.catalog import status

    width = max(len(n) for n in TOYS)
    for name, entry in TOYS.items():
        print(f"{name:<{width}}  [{status(name)}]  {entry.description}")
    return 0


def _cmd_toy_train(args: argparse.Namespace) -> int:
    entry = _toy_entry(args.name)
    if entry.train is None:
        raise MechscopeError(f"toy {args.name!r} is compiled (hand-set weights), not trained")
    where = entry.train(args.out)
    print(f"Saved {args.name} to {where}")
    return 0


def _cmd_toy_analyze(args: argparse.Namespace) -> int:
    entry = _toy_entry(args.name)
    page = entry.analyze(args.out)
    print(f"Wrote {args.out} (open {page})")
    return 0


def _progress(msg: str) -> None:
    print(f"mechscope: {msg}", file=sys.stderr, flush=True)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .pipeline.demo import DemoConfig, run_demo

    config = DemoConfig(
        model=args.model, out=args.out, device=args.device, localise=not args.quick, circuit=not args.quick,
        sae=not (args.quick or args.no_sae), features=not args.no_features,
    )  # fmt: skip
    run_dir = run_demo(config, progress=_progress)
    print(f"Wrote {run_dir} (open {run_dir / 'index.html'})")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import BUILTIN, DEFAULT_MODEL

    for name, spec in BUILTIN.items():
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(
            f"{name}{default}\n    {spec.description}\n    licence: {spec.license}\n    install: {spec.install}"
        )
    return 0


def _cmd_hooks(args: argparse.Namespace) -> int:
    from .models import load_model

    model = load_model(args.model, device=args.device)
    names = model.hook_names
    width = max(len(n) for n in names)
    print(f"# {model!r}")
    for name in names:
        info = model.hook_info(name)
        note = "  (on demand)" if info.on_demand else ""
        print(f"{name:<{width}}  [{info.shape}]{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
