"""The ``medbench`` command line. Bad input: one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from medbench import hparams
from medbench.data.catalog import DATASETS, DEFAULT_DATA_ROOT
from medbench.errors import MedbenchError
from medbench.evaluation import Protocol
from medbench.harness.grid import DEFAULT_DB, GridSpec
from medbench.method import get_method, list_methods

EXIT_USAGE = 2
DEFAULTS = Protocol()

# Modules that add sub-commands: each defines ``register(subparsers)`` and sets ``func`` on its
# parser (``func(args) -> int``). Keeps one idea per module instead of one growing cli.py.
COMMAND_MODULES: list[str] = ["medbench.reports.commands"]


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def parse_method_args(items: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``dc:lr_img=0.1,init=noise``, a YAML file ``{dc: {lr_img: 0.1}}``, or ``key=value`` when
    the grid has exactly one method."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if item.endswith((".yaml", ".yml")):
            try:
                loaded = yaml.safe_load(Path(item).read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise MedbenchError(f"{item}: cannot read method arguments ({exc})") from None
            if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
                raise MedbenchError(f"{item}: expected a mapping of method name to its settings")
            for name, values in loaded.items():
                out.setdefault(str(name), {}).update(values)
            continue
        name, sep, rest = item.partition(":")
        if not sep or "=" in name:
            if len(methods) != 1:
                raise MedbenchError(f"--method-args {item!r}: say which method, e.g. dc:{item}")
            name, rest = methods[0], item
        out.setdefault(name, {}).update(hparams.parse_key_values(rest))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="medbench", description="Benchmark dataset distillation on medical images.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")

    p = sub.add_parser("datasets", help="list registered datasets and whether they are present")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                   help="MedMNIST root folder (default: %(default)s, as medmnist)")
    p.add_argument("--size", type=int, default=28, help="image size to check for (default: %(default)s)")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("methods", help="list registered distillation methods")
    p.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'd*'")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("run", help="distil and evaluate a grid of cells, storing each result",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("grid")
    g.add_argument("--methods", type=_str_list, default=("random",), help="comma-separated method names")
    g.add_argument("--datasets", type=_str_list, default=("bloodmnist",),
                   help="comma-separated dataset names or paths to MedMNIST-layout .npz files")
    g.add_argument("--ipc", type=_int_list, default=(1, 10, 50), help="images per class, comma-separated")
    g.add_argument("--seeds", type=_int_list, default=(0,), help="distillation seeds, comma-separated")
    g.add_argument("--size", type=int, default=None,
                   help="image size for MedMNIST sets (28, 64, 128, 224); default 28, or an npz file's own")
    g.add_argument("--method-args", action="append", default=[], metavar="SPEC",
                   help="method hyper-parameters: NAME:key=value,... or a YAML file {NAME: {key: value}}; "
                        "repeatable")
    e = p.add_argument_group("evaluation protocol (one for every method)")
    e.add_argument("--eval-models", type=_positive(int), default=DEFAULTS.eval_models,
                   help="networks trained per cell")
    e.add_argument("--epochs", type=_positive(int), default=DEFAULTS.epochs, help="training epochs per network")
    e.add_argument("--full-epochs", type=_positive(int), default=DEFAULTS.full_epochs,
                   help="epochs when training on the full training set")
    e.add_argument("--lr", type=_positive(float), default=DEFAULTS.lr,
                   help="SGD learning rate (a method's learned lr replaces it)")
    e.add_argument("--batch-size", type=_positive(int), default=DEFAULTS.batch_size, help="training batch size")
    e.add_argument("--model", default=DEFAULTS.model, help="evaluation network")
    e.add_argument("--width", type=_positive(int), default=DEFAULTS.width, help="ConvNet width")
    e.add_argument("--depth", type=_positive(int), default=None,
                   help="ConvNet depth (default: 3 for 28 px, 4 for 64, 5 for 128)")
    e.add_argument("--norm", default=DEFAULTS.norm, choices=["instance", "batch", "none"], help="ConvNet norm")
    e.add_argument("--eval-augment", default=DEFAULTS.augment, help="train-time augmentation of eval networks")
    r = p.add_argument_group("data, storage, device")
    r.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="MedMNIST root folder")
    r.add_argument("--download", action="store_true",
                   help="fetch missing MedMNIST files with medmnist's download (MD5-checked)")
    r.add_argument("--db", type=Path, default=DEFAULT_DB, help="SQLite results database")
    r.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    r.add_argument("--retry-failed", action="store_true", help="run failed cells again")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    r.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="format of the final table")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("results", help="show stored results, one row per cell")
    p.add_argument("--db", type=Path, default=DEFAULT_DB, help="SQLite results database (default: %(default)s)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_results)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def _version() -> str:
    from medbench import __version__

    return __version__


def cmd_datasets(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    rows = []
    for name in DATASETS.names():
        src = DATASETS.get(name)
        rows.append({
            "dataset": name, "classes": src.num_classes, "channels": src.channels,
            "sizes": ",".join(map(str, src.sizes)),
            f"present ({args.size} px)": "yes" if src.is_present(args.size, args.data_root.expanduser()) else "no",
            "license": src.license, "notes": f"unsupported: {src.unsupported}" if src.unsupported else "",
        })
    print(tabulate(rows, headers="keys", tablefmt="github"))
    print(f"\ndata root: {args.data_root.expanduser()}  ·  any MedMNIST-layout .npz path also works")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    rows = [{"method": n, "description": get_method(n).description} for n in list_methods(args.pattern)]
    print(tabulate(rows, headers="keys", tablefmt="github") if rows else f"no method matches {args.pattern!r}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from medbench.harness.runner import run_grid
    from medbench.summary import format_summary

    protocol = hparams.build(Protocol, {
        "model": args.model, "width": args.width, "depth": args.depth, "norm": args.norm,
        "epochs": args.epochs, "full_epochs": args.full_epochs, "lr": args.lr, "batch_size": args.batch_size,
        "eval_models": args.eval_models, "augment": args.eval_augment,
    }, context="protocol")
    spec = GridSpec(
        methods=args.methods, datasets=args.datasets, ipcs=args.ipc, seeds=args.seeds, size=args.size,
        method_args=parse_method_args(args.method_args, args.methods), protocol=protocol,
        data_root=args.data_root.expanduser(), download=args.download, db=args.db, device=args.device,
        retry_failed=args.retry_failed,
    )
    summary = run_grid(spec, progress=not args.no_progress)
    print(format_summary(summary, args.format))
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from medbench.api import results
    from medbench.summary import format_summary

    if not args.db.is_file():
        raise MedbenchError(f"{args.db}: no results database here (run `medbench run` first or pass --db)")
    print(format_summary(results(args.db), args.format))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MedbenchError as exc:
        print(f"medbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("medbench: interrupted; every finished cell is stored and will be skipped next time",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
