"""``baseline`` and ``check``: freeze stored results as a golden file, and fail (exit 1) when a later run
is not equivalent to it, seed by seed (:mod:`medbench.analysis.regression`)."""

from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from medbench.analysis import regression
from medbench.analysis.regression import Rules, compare, load_golden, make_golden, snapshot
from medbench.cli.types import add_db, positive
from medbench.core.errors import MedbenchError
from medbench.core.files import atomic_write_bytes, check_writable
from medbench.data.registry import DEFAULT_DATA_ROOT
from medbench.distill.contract import SELECTION_METRICS
from medbench.harness.gridfile import PRESET_PACKAGE, preset_path
from medbench.storage.provenance import git_commit
from medbench.storage.store import Store


def golden_path(preset: str) -> Path:
    """The golden file shipped beside a preset grid."""
    preset_path(preset)  # an unknown preset: one line
    path = Path(str(resources.files(PRESET_PACKAGE) / f"{preset}.golden.json"))
    if not path.is_file():
        raise MedbenchError(f"preset {preset} has no golden file ({path.name})")
    return path


def cmd_baseline(args: argparse.Namespace) -> int:
    if not 0 < args.margin < 1:
        raise MedbenchError(f"--margin must be a fraction in (0, 1), got {args.margin:g}")
    if args.reason is not None and not args.rebless:
        raise MedbenchError("--reason goes with --rebless")
    previous = None
    if args.rebless:
        if not args.reason or not args.reason.strip():
            raise MedbenchError("--rebless needs --reason: why the golden results change (kept in its history)")
        previous = load_golden(args.out)
    elif args.out.exists():
        raise MedbenchError(f"{args.out} exists: re-bless an intended change with --rebless --reason TEXT "
                            f"(kept in the file's history)")
    check_writable(args.out, folder=False, what="--out")
    rules = Rules(margin=args.margin)
    with Store(args.db, readonly=True) as store:
        document = make_golden(store, metric=args.metric, rules=rules, previous=previous, reason=args.reason,
                               commit=git_commit())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode())
    changed = document["history"][-1]["changed"]
    what = f"re-blessed ({len(changed)} cell(s) changed)" if previous else "golden file"
    print(f"{what}: {len(document['cells'])} cells written to {args.out}")
    return 0


def _run_preset(args: argparse.Namespace, db: Path) -> None:
    """Run the preset's grid into ``db`` (cells already there are kept), as ``medbench run`` would."""
    from medbench.cli.gridargs import grid_spec_from_args
    from medbench.cli.main import build_parser
    from medbench.harness.runner import run_grid

    argv = ["run", "--preset", args.preset, "--db", str(db), "--data-root", str(args.data_root),
            *(["--workers", str(args.workers)] if args.workers is not None else [])]
    spec = grid_spec_from_args(build_parser().parse_args(argv))
    run_grid(spec, progress=not args.no_progress)


def cmd_check(args: argparse.Namespace) -> int:
    if args.baseline is None and args.preset is None:
        raise MedbenchError("give --baseline FILE (with --db) or --preset NAME")
    if args.margin is not None and not 0 < args.margin < 1:
        raise MedbenchError(f"--margin must be a fraction in (0, 1), got {args.margin:g}")
    if not 0 < args.alpha < 0.5:
        raise MedbenchError(f"--alpha must be in (0, 0.5), got {args.alpha:g}")
    if args.time_factor is not None and args.time_factor <= 1:
        raise MedbenchError(f"--time-factor must be above 1, got {args.time_factor:g}")
    golden = load_golden(args.baseline if args.baseline is not None else golden_path(args.preset))
    margin = args.margin if args.margin is not None else golden.get("rules", {}).get("margin", Rules.margin)
    rules = Rules(margin=margin, alpha=args.alpha, fingerprint=not args.no_fingerprint,
                  time_factor=args.time_factor, time_floor=args.time_floor)
    with ExitStack() as stack:
        db = args.db
        if args.preset is not None:
            if db is None:
                db = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="medbench-golden-"))) / "golden.sqlite"
            else:
                check_writable(db, folder=False, what="--db")
            _run_preset(args, db)
        elif db is None:
            raise MedbenchError("--baseline needs --db: the results to check")
        with Store(db, readonly=True) as store:
            current = snapshot(store, golden.get("metric", "balanced_accuracy"))
    findings = compare(golden, current, rules)
    bad = [f for f in findings if f.failed]
    shown = findings if args.verbose else bad
    if shown:
        print(tabulate([{"cell or configuration": f.where, "rule": f.rule, "status": f.status, "detail": f.detail}
                        for f in shown], headers="keys", tablefmt="github"))
    frame = pd.DataFrame([{"rule": f.rule, "status": f.status} for f in findings])
    counts = frame.groupby("rule", sort=False).status.value_counts().unstack(fill_value=0)
    parts = [f"{rule}: " + ", ".join(f"{n} {s}" for s, n in row.items() if n) for rule, row in counts.iterrows()]
    print(f"{len(golden['cells'])} golden cells ({golden.get('metric')}, margin ± {100 * rules.margin:g} pp): "
          + "; ".join(parts))
    return 1 if bad else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``baseline`` and ``check`` to the ``medbench`` command line."""
    p = subparsers.add_parser("baseline", help="freeze the stored results as a golden file (JSON) for check")
    add_db(p)
    p.add_argument("--out", type=Path, default=Path("reports/golden.json"), help="golden file to write "
                   "(default: %(default)s)")
    p.add_argument("--metric", choices=SELECTION_METRICS, default="balanced_accuracy",
                   help="the test score compared (default: %(default)s)")
    p.add_argument("--margin", type=float, default=Rules.margin,
                   help="the equivalence margin recorded for check, as a fraction (default: %(default)s)")
    p.add_argument("--rebless", action="store_true",
                   help="replace an existing golden file after an intended change (needs --reason)")
    p.add_argument("--reason", help="why the golden results change; kept in the file's history")
    p.set_defaults(func=cmd_baseline)

    p = subparsers.add_parser("check", help="compare stored results with a golden file; exit 1 on a change",
                              description=regression.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=Path, help="a golden file written by medbench baseline (with --db; with "
                                                 "--preset, instead of the preset's own)")
    p.add_argument("--preset", help="run a preset grid shipped with medbench and check it against its golden "
                                    "file, e.g. ci-golden")
    p.add_argument("--db", type=Path, help="results to check (with --preset: where its grid runs; default: a "
                                           "temporary database)")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                   help="with --preset: where its datasets are (default: %(default)s)")
    p.add_argument("--workers", type=positive(int),
                   help="with --preset: cells run at once (default: the preset's; torch threads = cores / workers, "
                        "part of the platform a fingerprint holds for)")
    p.add_argument("--no-progress", action="store_true", help="with --preset: no progress bars")
    p.add_argument("--verbose", action="store_true", help="list every cell and configuration, not only failures")
    p.add_argument("--margin", type=float, help="equivalence margin as a fraction (default: the golden file's, "
                                                f"else {Rules.margin})")
    p.add_argument("--alpha", type=float, default=Rules.alpha, help="the equivalence test's level "
                                                                    "(default: %(default)s)")
    p.add_argument("--no-fingerprint", action="store_true",
                   help="do not require bit-identical sets on the golden's platform")
    p.add_argument("--time-factor", type=float, help="also fail when seconds per iteration grow beyond this "
                                                     "factor on the golden's platform (default: off)")
    p.add_argument("--time-floor", type=float, default=Rules.time_floor,
                   help="with --time-factor: ignore growth below this many seconds in total (default: %(default)s)")
    p.set_defaults(func=cmd_check)
