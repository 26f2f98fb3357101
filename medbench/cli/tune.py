"""``medbench tune``: search each method's hyper-parameters on validation data, per dataset and IPC."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from tabulate import tabulate

from medbench.cli.gridargs import add_grid_arguments, grid_spec_from_args
from medbench.cli.types import positive
from medbench.core.errors import MedbenchError
from medbench.core.files import check_writable, read_yaml
from medbench.distill.contract import get_method
from medbench.harness.grid import expand
from medbench.tuning.space import SearchSpace, check_space, parse_spaces
from medbench.tuning.trial import TrialContext


def register(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser(
        "tune", help="tune methods' hyper-parameters on val (Ray Tune: Optuna search, ASHA early stopping)",
        description="Search each method's hyper-parameters for each dataset and IPC of the grid on the validation "
                    "split (the test split is never read), with Ray Tune: an Optuna (TPE) searcher, ASHA stopping "
                    "trials whose val-scored checkpoints fall behind. A trial's score is the val score "
                    "(--selection-metric) of the set the method returns. Every trial and the chosen configuration are "
                    "stored in --db; `medbench run --tuned` uses them. Interrupted: run the same command again. "
                    "Trials distil with the first of --seeds (default 0); the best --rescore configurations are "
                    "distilled again with fresh seeds and the best mean wins (small val sets flatter a single "
                    "lucky trial).")
    add_grid_arguments(p)
    t = p.add_argument_group("tuning")
    t.add_argument("--trials", type=positive(int), default=20, help="trials per method, dataset and IPC, stored "
                   "ones included (default: 20)")
    t.add_argument("--time-budget", type=positive(float), help="stop sampling new trials after this many seconds per "
                   "method, dataset and IPC (default: none)")
    t.add_argument("--space", type=Path, help="YAML {method: {field: {low, high, scale, integer} or [choices]}} "
                   "replacing the methods' declared search spaces")
    t.add_argument("--rescore", type=positive(int), default=3, help="best configurations re-scored with fresh "
                   "seeds (default: 3)")
    t.add_argument("--rescore-seeds", type=positive(int), default=2, help="fresh seeds per re-scored "
                   "configuration (default: 2)")
    t.add_argument("--workers", type=positive(int), default=1,
                   help="trials at once (default: 1, which makes a search reproducible)")
    t.add_argument("--ray-address", help="join a running Ray cluster: auto or HOST:PORT (default: a local one)")
    p.set_defaults(func=cmd_tune)


def _spaces(path: Path | None) -> dict[str, SearchSpace]:
    return {} if path is None else parse_spaces(read_yaml(path, "the search space"), str(path))


def cmd_tune(args: argparse.Namespace) -> int:
    from medbench.data.catalog import load_dataset
    from medbench.storage.tuning import TuningRecords
    from medbench.tuning.search import TuneSettings, tune_cell

    try:
        import optuna  # noqa: F401
        import ray.tune  # noqa: F401
    except ImportError as exc:
        raise MedbenchError(f"medbench tune needs Ray Tune and Optuna ({exc.name} is missing): "
                            "pip install 'medbench[ray]'") from None
    spec = grid_spec_from_args(args)
    spec = dataclasses.replace(spec, tuned=False, matched_baselines=False)
    check_writable(spec.db, folder=False, what="--db")
    overrides = _spaces(args.space)
    stray = sorted(set(overrides) - set(spec.methods))
    if stray:
        raise MedbenchError(f"--space gives a search space for {', '.join(stray)}, which is not in the grid")
    spaces = {}
    for name in spec.methods:
        method = get_method(name)
        space = overrides.get(name) or method.search_space
        check_space(name, space, method.params)
        spaces[name] = space
    seed = spec.seeds[0] if args.seeds else 0
    keys = {(c.method, c.dataset, c.size, c.ipc): c for c in expand(dataclasses.replace(spec, seeds=(seed,)))}
    if any(ipc is None for _, _, _, ipc in keys):
        raise MedbenchError("tuning needs IPC-dependent methods (full and package have nothing to tune)")
    settings = TuneSettings(trials=args.trials, time_budget=args.time_budget, workers=args.workers,
                            ray_address=args.ray_address, rescore_top=args.rescore,
                            rescore_seeds=tuple(1000 + k for k in range(args.rescore_seeds)))
    records = TuningRecords(spec.db)
    rows = []
    for (name, dataset, size, ipc), cell in keys.items():
        splits = load_dataset(dataset, size=size, root=spec.data_root, download=spec.download)
        counts = splits.val.labels.bincount(minlength=splits.num_classes).tolist()
        objective = spec.selection_metric  # a trial scores the set the method keeps, chosen by this metric
        label = f"{name} · {Path(dataset).name} · ipc {ipc}"
        print(f"tuning {label}: objective val {objective} (val class counts {counts}); "
              f"space {json.dumps({k: v.describe() for k, v in spaces[name].items()})}", file=sys.stderr)
        context = TrialContext(name, dataset, size, ipc, seed, cell.params, cell.protocol.model_spec(), objective,
                               str(spec.data_root), spec.device)
        chosen = tune_cell(context, spaces[name], settings, records)
        rows.append({"method": name, "dataset": Path(dataset).name, "ipc": ipc, "objective": objective,
                     "trials": chosen["budget"]["trials"], "search s": f"{chosen['budget']['seconds']:.0f}",
                     "val (search seed)": f"{chosen['value']:.4f}", "val (fresh seeds)": f"{chosen['rescored']:.4f}",
                     "chosen": json.dumps(chosen["config"], sort_keys=True)})
    print(tabulate(rows, headers="keys", tablefmt="github"))
    print(f"\nstored in {spec.db}; use them with `medbench run --tuned` (same grid options)")
    return 0
