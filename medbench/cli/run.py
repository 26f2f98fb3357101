"""``run``, ``results``, ``merge`` and ``experts``: computing and collecting cells."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from medbench.cli.gridargs import DEFAULTS, add_grid_arguments, grid_spec_from_args, parse_method_args
from medbench.cli.types import add_db, amount_list, positive
from medbench.core import hparams
from medbench.core.errors import MedbenchError
from medbench.core.files import check_writable
from medbench.data.registry import DEFAULT_DATA_ROOT
from medbench.distill.contract import get_method
from medbench.evaluation import Protocol
from medbench.nn.batched import BATCHINGS, COMPILE_MODES


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="distil and evaluate a grid of cells, storing each result",
        description="Run a grid (methods × datasets × IPC × seeds) from options, a grid file or a preset. "
                    "Options given here override the file. Stored cells are skipped (resume).")
    add_grid_arguments(p)
    r = p.add_argument_group("execution")
    r.add_argument("--workers", type=positive(int), help="cells run in parallel in a local process pool")
    r.add_argument("--executor", choices=["local", "process", "ray"],
                   help="local (in-process, default), process (pool of --workers) or ray")
    r.add_argument("--ray-address", help="join a Ray cluster: auto or HOST:PORT (default: start a local one)")
    r.add_argument("--eval-batching", choices=BATCHINGS,
                   help="train the K eval networks one at a time or together; same results (default: auto)")
    r.add_argument("--eval-compile", choices=list(COMPILE_MODES),
                   help="torch.compile the eval networks (inductor), or also replay them as CUDA graphs "
                        "(cuda-graphs); pays only for long evaluations: 3-8 s compilation per shape (default: off)")
    r.add_argument("--memory-budget", type=positive(float), metavar="GIB",
                   help="memory one cell may plan for, in GiB: chooses between paths that compute the same thing "
                        "(MTT/DATM unroll when their graph fits, else recompute) (default: half the free memory "
                        "divided among the workers)")
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
    r.add_argument("--budget-flops", type=amount_list("FLOPs"), metavar="F[,F...]",
                   help="stop every iterative method at the first iteration that ends past F FLOPs of distillation "
                        "(convolutions and matrix products, counted with torch's FlopCounterMode; val scoring not "
                        "counted), keeping its val-chosen checkpoint; several budgets run each such cell once per "
                        "budget. The same on any machine and load: the budget for equal-compute comparisons "
                        "(default: no limit)")
    r.add_argument("--budget-seconds", type=amount_list("seconds"), metavar="S[,S...]",
                   help="the same in wall-clock seconds of distillation (moves with the machine's load)")
    r.add_argument("--budget-cpu-seconds", type=amount_list("CPU seconds"), metavar="S[,S...]",
                   help="the same in this process's CPU seconds (unmoved by other processes)")
    r.add_argument("--no-matched-baselines", dest="matched_baselines", action="store_false", default=None,
                   help="do not add the matched baselines (random choosing among as many subsets as a method "
                        "has checkpoints, tiled random for tiled sets, random_soft for soft labels) and plain "
                        "random that the report compares every method with")
    r.add_argument("--tuned", action="store_true", default=None,
                   help="use the configuration `medbench tune` stored for each method, dataset, size and IPC "
                        "(where there is none, the parameters as given, and a line says so)")
    p.set_defaults(func=cmd_run)


def add_results(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("results", help="show stored results, one row per cell")
    add_db(p)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_results)


def add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="copy the cells of other results databases into one (e.g. from several "
                                      "machines)")
    p.add_argument("sources", nargs="+", type=Path, help="databases to copy from")
    add_db(p, "database to add to")
    p.set_defaults(func=cmd_merge)


def add_experts(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--num-experts", type=positive(int), help="experts to train (default: 100)")
    p.add_argument("--epochs", type=positive(int), help="epochs per expert (default: 50)")
    p.add_argument("--method-args", action="append", default=[], metavar="SPEC",
                   help="any MTT setting, as for `run`: mtt:lr_teacher=0.01,expert_dtype=bfloat16,...")
    p.add_argument("--model", default=DEFAULTS.model, help="network (default: %(default)s)")
    p.add_argument("--width", type=positive(int), default=DEFAULTS.width, help="ConvNet width (default: %(default)s)")
    p.add_argument("--depth", type=positive(int), help="ConvNet depth (default: by resolution)")
    p.add_argument("--norm", choices=["instance", "batch", "none"], default=DEFAULTS.norm)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--batching", choices=BATCHINGS, default="auto",
                   help="train the experts one at a time or 10 together (vmap, grouped); the same buffer up to "
                        "float rounding (default: auto: together only on a GPU at small steps)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_experts)


def cmd_run(args: argparse.Namespace) -> int:
    from medbench.harness.runner import run_grid
    from medbench.storage.summary import format_summary

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

    from medbench.core.devices import resolve_device
    from medbench.data.catalog import load_dataset
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
                              model=protocol.model_spec(), progress=progress, batching=args.batching)
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
    from medbench.storage.store import Store
    from medbench.storage.summary import format_summary, summarize

    if not args.db.is_file():
        raise MedbenchError(f"{args.db}: no results database here (run `medbench run` first or pass --db)")
    with Store(args.db, readonly=True) as store:
        print(format_summary(summarize(store), args.format))
    return 0
