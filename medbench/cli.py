"""The ``medbench`` command line. Bad input: one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from medbench import hparams
from medbench.data.catalog import DATASETS, DEFAULT_DATA_ROOT
from medbench.errors import EXIT_UNFINISHED, GridUnfinished, MedbenchError
from medbench.evaluation import Protocol
from medbench.evaluation.batched import BATCHINGS, COMPILE_MODES
from medbench.evaluation.protocols import DEFAULT_PROTOCOL, PROTOCOLS, named_protocol
from medbench.harness.grid import DEFAULT_DB, GridSpec
from medbench.harness.gridfile import preset_path, read_grid_file
from medbench.launch import interrupted
from medbench.method import SELECTION_METRICS, get_method, list_methods
from medbench.storage.files import check_writable, read_yaml

EXIT_USAGE = 2
DEFAULTS = Protocol()

# Modules that add sub-commands: each defines ``register(subparsers)`` and sets ``func`` on its
# parser (``func(args) -> int``). Keeps one idea per module instead of one growing cli.py.
COMMAND_MODULES: list[str] = ["medbench.reports.commands", "medbench.sharing.commands", "medbench.crossarch",
                                 "medbench.bench", "medbench.tuning.commands"]


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _seconds_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seconds, got {text!r}") from None
    if not values or not all(0 < v < math.inf for v in values):
        raise argparse.ArgumentTypeError(f"budget seconds must be positive, got {text!r}")
    return values


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text}")
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
            loaded = read_yaml(item, "method arguments") or {}
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


def add_grid_arguments(p: argparse.ArgumentParser) -> None:
    """The grid, protocol and data options ``run`` and ``tune`` share."""
    p.add_argument("grid", nargs="?", type=Path, help="a grid YAML file (see examples/)")
    p.add_argument("--preset", help="a named grid shipped with medbench, e.g. covid19-mtt")
    g = p.add_argument_group("grid")
    g.add_argument("--methods", type=_str_list, help="comma-separated method names (default: random)")
    g.add_argument("--datasets", type=_str_list,
                   help="comma-separated dataset names, MedMNIST-layout .npz paths or class folders "
                        "(default: bloodmnist)")
    g.add_argument("--ipc", type=_int_list, help="images per class, comma-separated (default: 1,10,50)")
    g.add_argument("--seeds", type=_int_list,
                   help="seeds, comma-separated: each is one random subset or one distillation run, the unit "
                        "of replication (default: 0,1,2)")
    g.add_argument("--size", type=int,
                   help="image size for MedMNIST sets (28, 64, 128, 224); default 28, or an npz file's own")
    g.add_argument("--method-args", action="append", default=[], metavar="SPEC",
                   help="method hyper-parameters: NAME:key=value,... or a YAML file {NAME: {key: value}}; "
                        "repeatable")
    g.add_argument("--drop-duplicates", action="store_true", default=None,
                   help="remove from val the images that are exact copies of training images, and from test those "
                        "that are copies of train or val images (another dataset: such cells never pool with others)")
    g.add_argument("--selection-metric", choices=SELECTION_METRICS,
                   help="the val score by which a method keeps its checkpoint, random:candidates=N its subset, "
                        "and a tuning trial is scored (default: balanced_accuracy; accuracy rewards predicting "
                        "the majority class of an imbalanced val split)")
    e = p.add_argument_group("evaluation protocol (one for every method; options below override the named one)")
    e.add_argument("--protocol",
                   help=f"named evaluation protocol: {', '.join(PROTOCOLS.names())} (default: {DEFAULT_PROTOCOL}; "
                        "`medbench protocols` lists their settings and sources)")
    e.add_argument("--eval-models", type=_positive(int),
                   help=f"networks trained per cell (default: {DEFAULTS.eval_models})")
    e.add_argument("--epochs", type=_positive(int),
                   help="training epochs per network (default: the protocol's; dsa: 1000, dc: 300)")
    e.add_argument("--full-epochs", type=_positive(int),
                   help=f"epochs when training on the full training set (default: {DEFAULTS.full_epochs})")
    e.add_argument("--lr", type=_positive(float),
                   help=f"SGD learning rate; a method's learned lr replaces it (default: {DEFAULTS.lr})")
    e.add_argument("--batch-size", type=_positive(int), help=f"training batch size (default: {DEFAULTS.batch_size})")
    e.add_argument("--model", help=f"evaluation network (default: {DEFAULTS.model})")
    e.add_argument("--width", type=_positive(int), help=f"ConvNet width (default: {DEFAULTS.width})")
    e.add_argument("--depth", type=_positive(int), help="ConvNet depth (default: 3 for 28 px, 4 for 64, 5 for 128)")
    e.add_argument("--norm", choices=["instance", "batch", "none"], help=f"ConvNet norm (default: {DEFAULTS.norm})")
    e.add_argument("--eval-augment", dest="augment",
                   help="train-time augmentation of eval networks: none or dsa "
                        "(default: the protocol's; dsa: dsa, dc: none)")
    r = p.add_argument_group("data and storage")
    r.add_argument("--data-root", type=Path, help=f"MedMNIST root folder (default: {DEFAULT_DATA_ROOT})")
    r.add_argument("--download", action="store_true", default=None,
                   help="fetch missing MedMNIST files with medmnist's download (MD5-checked)")
    r.add_argument("--db", type=Path, help=f"SQLite results database (default: {DEFAULT_DB})")
    r.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: auto)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="medbench", description="Benchmark dataset distillation on medical images.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")

    p = sub.add_parser("datasets", help="list registered datasets and whether they are present")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                   help="MedMNIST root folder (default: %(default)s, as medmnist)")
    p.add_argument("--size", type=int, default=28, help="image size to check for (default: %(default)s)")
    p.add_argument("--check", metavar="NAME|PATH",
                   help="print one dataset's facts instead: split sizes, class balance, the majority-class rate, "
                        "exact duplicates within and across splits")
    p.add_argument("--near", action="store_true",
                   help="with --check: also count near-duplicates across splits (equal perceptual hashes)")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("methods", help="list registered distillation methods")
    p.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'd*'")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser(
        "run", help="distil and evaluate a grid of cells, storing each result",
        description="Run a grid (methods × datasets × IPC × seeds) from options, a grid file or a preset. "
                    "Options given here override the file. Stored cells are skipped (resume).")
    add_grid_arguments(p)
    r = p.add_argument_group("execution")
    r.add_argument("--workers", type=_positive(int), help="cells run in parallel in a local process pool")
    r.add_argument("--executor", choices=["local", "process", "ray"],
                   help="local (in-process, default), process (pool of --workers) or ray")
    r.add_argument("--ray-address", help="join a Ray cluster: auto or HOST:PORT (default: start a local one)")
    r.add_argument("--eval-batching", choices=BATCHINGS,
                   help="train the K eval networks one at a time or together; same results (default: auto)")
    r.add_argument("--eval-compile", choices=list(COMPILE_MODES),
                   help="torch.compile the eval networks (inductor), or also replay them as CUDA graphs "
                        "(cuda-graphs); pays only for long evaluations: 3-8 s compilation per shape (default: off)")
    r.add_argument("--retry-failed", action="store_true", default=None, help="run failed cells again")
    r.add_argument("--no-wait", dest="wait", action="store_false", default=None,
                   help="after this process's own cells, do not wait for the cells other processes on the database "
                        "are computing: stop with exit status 3 and say how many are left (default: wait, taking "
                        "over the cells of processes that died)")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    r.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="format of the final table (default: table)")
    r.add_argument("--report", type=Path, metavar="DIR",
                   help="afterwards, write the leaderboard, results.csv and index.html of the database here "
                        "(as `medbench report --db DB --out DIR`)")
    r.add_argument("--budget-seconds", type=_seconds_list, metavar="S[,S...]",
                   help="stop every iterative method at the first iteration that ends past S wall-clock seconds "
                        "of distillation (val scoring not counted), keeping its val-chosen checkpoint; several "
                        "budgets run each such cell once per budget (equal-compute comparisons; default: no limit)")
    r.add_argument("--no-matched-baselines", dest="matched_baselines", action="store_false", default=None,
                   help="do not add the matched baselines (random choosing among as many subsets as a method "
                        "has checkpoints, tiled random for tiled sets, random_soft for soft labels) and plain "
                        "random that the report compares every method with")
    r.add_argument("--tuned", action="store_true", default=None,
                   help="use the configuration `medbench tune` stored for each method, dataset, size and IPC "
                        "(where there is none, the parameters as given, and a line says so)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("protocols", help="list the named evaluation protocols with their settings and sources")
    p.set_defaults(func=cmd_protocols)

    p = sub.add_parser("results", help="show stored results, one row per cell")
    p.add_argument("--db", type=Path, default=DEFAULT_DB, help="SQLite results database (default: %(default)s)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("merge", help="copy the cells of other results databases into one (e.g. from several "
                                      "machines)")
    p.add_argument("sources", nargs="+", type=Path, help="databases to copy from")
    p.add_argument("--db", type=Path, default=DEFAULT_DB, help="database to add to (default: %(default)s)")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser(
        "experts", help="build (or reuse) the MTT expert-trajectory buffer of a dataset",
        description="Train MTT's expert networks on a dataset's training split, saving their parameters "
                    "after every epoch. The buffer is cached by everything that determines it and reused "
                    "by `medbench run --methods mtt` with the same settings; an interrupted build resumes.")
    p.add_argument("--dataset", required=True, help="dataset name, npz path or class folder")
    p.add_argument("--size", type=int, help="image size (MedMNIST: 28, 64, 128, 224)")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="MedMNIST root folder")
    p.add_argument("--download", action="store_true", help="fetch a missing MedMNIST file")
    p.add_argument("--experts-root", help="buffer cache folder (default: $MEDBENCH_EXPERTS or "
                                          "~/.medmnist/medbench_experts)")
    p.add_argument("--num-experts", type=_positive(int), help="experts to train (default: 100)")
    p.add_argument("--epochs", type=_positive(int), help="epochs per expert (default: 50)")
    p.add_argument("--method-args", action="append", default=[], metavar="SPEC",
                   help="any MTT setting, as for `run`: mtt:lr_teacher=0.01,expert_dtype=bfloat16,...")
    p.add_argument("--model", default=DEFAULTS.model, help="network (default: %(default)s)")
    p.add_argument("--width", type=_positive(int), default=DEFAULTS.width, help="ConvNet width (default: %(default)s)")
    p.add_argument("--depth", type=_positive(int), help="ConvNet depth (default: by resolution)")
    p.add_argument("--norm", choices=["instance", "batch", "none"], default=DEFAULTS.norm)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_experts)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def _version() -> str:
    from medbench import __version__

    return __version__


def cmd_datasets(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    if args.check:
        return _check_dataset(args.check, args.size, args.data_root.expanduser(), args.near)
    if args.near:
        raise MedbenchError("--near goes with --check NAME|PATH")
    rows = []
    for name in DATASETS.names():
        src = DATASETS.get(name)
        rows.append({
            "dataset": name, "classes": src.num_classes, "channels": src.channels,
            "sizes": ",".join(map(str, src.sizes)) or "any",
            f"present ({args.size} px)": "yes" if src.is_present(args.size, args.data_root.expanduser()) else "no",
            "license": src.license, "notes": f"unsupported: {src.unsupported}" if src.unsupported else "",
        })
    print(tabulate(rows, headers="keys", tablefmt="github"))
    print(f"\ndata root: {args.data_root.expanduser()}  ·  any MedMNIST-layout .npz path also works")
    return 0


def _check_dataset(ref: str, size: int, root: Path, with_near: bool = False) -> int:
    """``medbench datasets --check``: one dataset's facts, the duplicates between its splits first."""
    from tabulate import tabulate

    from medbench.data.catalog import load_dataset
    from medbench.data.duplicates import found, near

    splits = load_dataset(ref, size=size if ref in DATASETS else None, root=root)
    dup = found(splits)
    rows = []
    for name in ("train", "val", "test"):
        counts = getattr(splits, name).class_counts(splits.num_classes)
        rows.append({"split": name, "images": sum(counts), "per class": " ".join(map(str, counts)),
                     "majority class": f"{100 * max(counts) / max(sum(counts), 1):.1f} %",
                     "duplicates within": dup.within[name],
                     "also in train": {"train": "", "val": dup.val_in_train, "test": dup.test_in_train}[name],
                     "also in val": dup.test_in_val if name == "test" else ""})
    print(f"{splits.name}: {splits.num_classes} classes, {splits.channels} channel(s), {splits.size} px, "
          f"source {splits.source}")
    print(tabulate(rows, headers="keys", tablefmt="github"))
    print(f"\nExact duplicates (identical pixels): {dup.val_in_train} val and {dup.test_in_train} test images are "
          f"also training images, {dup.test_in_val} test images also val images. Scores count them as unseen; "
          "`medbench run --drop-duplicates` removes them from val and test (another dataset, never pooled).")
    if with_near:
        close = near(splits)
        print(f"Near-duplicates (equal perceptual hash, exact copies included): {close['val_in_train']} val and "
              f"{close['test_in_train']} test images look like a training image, {close['test_in_val']} test images "
              "like a val image. Check them by eye before dropping: distinct images can share a hash.")
    return 0


def cmd_protocols(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    shown = ("epochs", "augment", "lr", "batch_size", "width", "eval_models")
    rows = []
    for name in PROTOCOLS.names():
        preset = PROTOCOLS.get(name)
        settings = preset.build()
        rows.append({"protocol": name + (" (default)" if name == DEFAULT_PROTOCOL else ""),
                     **{k: getattr(settings, k) for k in shown}, "source": preset.source})
    print(tabulate(rows, headers="keys", tablefmt="github"))
    print("\nEvery protocol trains the ConvNet with SGD (momentum 0.9, weight decay 5e-4), the lr divided by 10 "
          "halfway, and a method's learned lr where it has one. Options of `medbench run` override single fields.")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    rows = [{"method": n, "description": get_method(n).description} for n in list_methods(args.pattern)]
    print(tabulate(rows, headers="keys", tablefmt="github") if rows else f"no method matches {args.pattern!r}")
    return 0


PROTOCOL_OPTIONS = ("eval_models", "epochs", "full_epochs", "lr", "batch_size", "model", "width", "depth", "norm",
                    "augment")
GRID_OPTIONS = {"methods": "methods", "datasets": "datasets", "ipc": "ipcs", "seeds": "seeds", "size": "size",
                "data_root": "data_root", "download": "download", "db": "db", "device": "device",
                "retry_failed": "retry_failed", "workers": "workers", "executor": "executor",
                "ray_address": "ray_address", "eval_batching": "eval_batching",
                "eval_compile": "eval_compile", "tuned": "tuned", "budget_seconds": "budgets",
                "selection_metric": "selection_metric", "matched_baselines": "matched_baselines", "wait": "wait",
                "drop_duplicates": "drop_duplicates"}


def grid_spec_from_args(args: argparse.Namespace) -> GridSpec:
    """Built-in defaults, then the grid file or preset, then options given on the command line."""
    if args.grid and args.preset:
        raise MedbenchError("give a grid file or --preset, not both")
    source = preset_path(args.preset) if args.preset else args.grid
    fields = read_grid_file(source) if source else {}
    protocol = dict(fields.pop("eval", {}))
    protocol.update({k: getattr(args, k) for k in PROTOCOL_OPTIONS if getattr(args, k) is not None})
    protocol_name = fields.pop("protocol_name", DEFAULT_PROTOCOL)
    protocol_name = args.protocol or protocol_name
    fields.update({field: getattr(args, opt) for opt, field in GRID_OPTIONS.items()
                   if getattr(args, opt, None) is not None})
    methods = fields.get("methods", GridSpec.methods)
    method_args = fields.pop("method_args", {})
    for name, values in parse_method_args(args.method_args, methods).items():
        method_args.setdefault(name, {}).update(values)
    if "data_root" in fields:
        # Absolute: workers elsewhere (a process pool, Ray trials, a cluster) do not share this cwd.
        fields["data_root"] = Path(fields["data_root"]).expanduser().resolve()
    if "name" in protocol:
        raise MedbenchError("choose the protocol by name with --protocol (or `protocol:` in a grid file), "
                            "not as an eval setting")
    return GridSpec(**fields, method_args=method_args, protocol=named_protocol(protocol_name, protocol))


def cmd_run(args: argparse.Namespace) -> int:
    from medbench.harness.runner import run_grid
    from medbench.summary import format_summary

    spec = grid_spec_from_args(args)
    if args.report is not None:
        check_writable(args.report, folder=True, what="--report")
    summary = run_grid(spec, progress=not args.no_progress)
    print(format_summary(summary, args.format))
    if args.report is not None:
        from medbench.reports.build import write_report

        files = write_report(spec.db, args.report)
        print(f"\nreport: {files.leaderboard} · {files.html}")
    return 0


def cmd_experts(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from medbench.data.catalog import load_dataset
    from medbench.devices import resolve_device
    from medbench.methods.trajectory import build_buffer, resolve_root

    method = get_method("mtt")
    values = parse_method_args(args.method_args, ["mtt"]).get("mtt", {})
    values.update({k: v for k, v in (("num_experts", args.num_experts), ("buffer_epochs", args.epochs),
                                     ("experts_root", args.experts_root)) if v is not None})
    if "buffer_epochs" in values and "max_start_epoch" not in values:
        # Only the expert settings matter here; keep MTT's own consistency check satisfied.
        defaults = method.make_params()
        expert_epochs = int(values.get("expert_epochs", defaults.expert_epochs))
        latest = int(values["buffer_epochs"]) - expert_epochs + 1
        values["max_start_epoch"] = max(1, min(defaults.max_start_epoch, latest))
    params = method.make_params(values)
    check_writable(resolve_root(params.experts_root), folder=True, what="the experts folder")
    protocol = hparams.build(Protocol, {"model": args.model, "width": args.width, "depth": args.depth,
                                        "norm": args.norm}, context="model")
    device = resolve_device(args.device)
    splits = load_dataset(args.dataset, size=args.size, root=args.data_root.expanduser(),
                          download=args.download).to(device)
    with tqdm(total=1, desc=f"experts {splits.name}", disable=args.no_progress, file=sys.stderr) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        start = time.perf_counter()
        buffer = build_buffer(splits, params.expert_config(), resolve_root(params.experts_root),
                              model=protocol.model_spec(), progress=progress)
    facts = buffer.summary()
    facts["seconds_this_call"] = round(time.perf_counter() - start, 2)
    width = max(map(len, facts))
    for key, value in facts.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from medbench.storage.store import Store

    check_writable(args.db, folder=False, what="--db")
    with Store(args.db) as store:
        for source in args.sources:
            print(f"{source}: {store.merge(source)} new cell(s) added to {args.db}")
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
    except GridUnfinished as exc:
        print(f"medbench: unfinished: {exc}", file=sys.stderr)
        return EXIT_UNFINISHED
    except KeyboardInterrupt as exc:
        return interrupted(exc)


if __name__ == "__main__":
    sys.exit(main())
