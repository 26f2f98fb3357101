"""``baseline`` and ``check``: freeze stored results, and fail (exit 1) when a later run regresses."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from medbench.analysis import regression
from medbench.analysis.regression import Tolerance, _label, compare, load_baseline, make_baseline, snapshot
from medbench.cli.types import add_db
from medbench.core.errors import MedbenchError
from medbench.core.files import check_writable
from medbench.storage.store import Store

CELL_KEY = ("method", "dataset", "size", "ipc", "seed", "protocol_id")
FORMAT_VERSION = 1


def _open_db(path: Path) -> Store:
    return Store(path, readonly=True)

def cmd_baseline(args: argparse.Namespace) -> int:
    check_writable(args.out, folder=False, what="--out")
    with _open_db(args.db) as store:
        document = make_baseline(store)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"baseline of {len(document['cells'])} cells written to {args.out}")
    return 0

def cmd_check(args: argparse.Namespace) -> int:
    for name in ("tolerance_sigmas", "time_factor"):
        if getattr(args, name) <= 0:
            raise MedbenchError(f"--{name.replace('_', '-')} must be positive")
    if args.accuracy_floor < 0 or args.time_floor < 0:
        raise MedbenchError("floors must not be negative")
    baseline = load_baseline(args.baseline)
    with _open_db(args.db) as store:
        current = snapshot(store)
    tol = Tolerance(args.tolerance_sigmas, args.accuracy_floor, args.time_factor, args.time_floor)
    findings = compare(baseline, current, tol)
    bad = [f for f in findings if f.failed]
    if bad:
        print(tabulate([{"cell": _label(f.key), "status": f.status, "detail": f.detail} for f in bad],
                       headers="keys", tablefmt="github"))
    counts = pd.Series([f.status for f in findings]).value_counts().to_dict()
    print(f"{len(findings)} baseline cells checked: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 1 if bad else 0

def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``baseline`` and ``check`` to the ``medbench`` command line."""
    p = subparsers.add_parser("baseline", help="freeze the stored results as a regression baseline (JSON)")
    add_db(p)
    p.add_argument("--out", type=Path, default=Path("reports/baseline.json"), help="baseline file to write")
    p.set_defaults(func=cmd_baseline)

    p = subparsers.add_parser("check", help="compare stored results with a baseline; exit 1 on regression",
                              description=regression.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=Path, required=True, help="file written by medbench baseline")
    add_db(p)
    p.add_argument("--tolerance-sigmas", type=float, default=Tolerance.sigmas,
                   help="allowed accuracy drop in standard errors of the difference (default: %(default)s)")
    p.add_argument("--accuracy-floor", type=float, default=Tolerance.accuracy_floor,
                   help="smallest allowed accuracy drop, as a fraction (default: %(default)s)")
    p.add_argument("--time-factor", type=float, default=Tolerance.time_factor,
                   help="allowed growth of distillation time per iteration (default: %(default)s)")
    p.add_argument("--time-floor", type=float, default=Tolerance.time_floor,
                   help="ignore time growth below this many seconds in total (default: %(default)s)")
    p.set_defaults(func=cmd_check)
