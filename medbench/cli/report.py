"""``report`` and ``correlate``: a results database as verdicts, tables and figures; scores across datasets."""

from __future__ import annotations

import argparse
from pathlib import Path

from tabulate import tabulate

from medbench.cli.types import add_db
from medbench.core.errors import MedbenchError
from medbench.evaluation.metrics import METRICS
from medbench.storage.store import Store


def _open(db: Path) -> Store:
    return Store(db, readonly=True)


def cmd_report(args: argparse.Namespace) -> int:
    from medbench.reports.build import write_report
    from medbench.reports.published import load_reference

    if args.images_per_class < 1:
        raise MedbenchError("--images-per-class must be at least 1")
    reference = load_reference(args.reference) if args.reference else None
    files = write_report(args.db, args.out, per_class=args.images_per_class, reference=reference, metric=args.metric)
    print(f"wrote {files.leaderboard}\nwrote {files.results}\nwrote {files.predictions}\nwrote {files.html}")
    return 0


def _accuracy(text: str) -> float:
    """An accuracy as a fraction or in percent (values above 1 are read as percent)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an accuracy, got {text!r}") from None
    value = value / 100 if value > 1 else value
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"an accuracy lies in 0..1 (or 0..100 %), got {text}")
    return value


def cmd_correlate(args: argparse.Namespace) -> int:
    from medbench.analysis import correlate, correlation_frame, gain_frame, metric_values, paired_points, predict

    if args.predict is not None and (args.method is None or args.ipc is None):
        raise MedbenchError("--predict needs --method and --ipc")
    with _open(args.db) as store:
        points = paired_points(metric_values(store, args.metric))
    if args.protocol:
        points = points[points.protocol_id.str.startswith(args.protocol)]
    if points.empty:
        raise MedbenchError("no distilled cell has a random baseline under the same protocol, dataset and IPC")
    results = correlate(points)
    if args.predict is not None:
        p = predict(results, method=args.method, ipc=args.ipc, random_accuracy=args.predict,
                    protocol_id=args.protocol)
        print(f"{p.method} at IPC {p.ipc} (protocol {p.protocol_id}, fitted on {p.n_datasets} datasets): "
              f"random {100 * p.random_accuracy:.1f} % → predicted {100 * p.predicted:.1f} % "
              f"({100 * p.level:.0f} % prediction interval {100 * p.low:.1f} – {100 * p.high:.1f} %)")
        return 0
    print(f"{args.metric} (test), distilled vs random across datasets (r: Fisher-z 95 % interval; the "
          f"correlation of random's score with the gain is the one that says where distillation helps more):")
    print(tabulate(correlation_frame(results), headers="keys", tablefmt="github", showindex=False,
                   disable_numparse=True))
    print("\nper dataset:")
    print(tabulate(gain_frame(points), headers="keys", tablefmt="github", showindex=False, disable_numparse=True))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report``, ``correlate``, ``baseline`` and ``check`` to the ``medbench`` command line."""
    p = subparsers.add_parser("report", help="verdicts, leaderboard.md, results.csv, predictions.csv.gz and index.html "
                                             "from a results DB")
    add_db(p)
    p.add_argument("--out", type=Path, required=True, help="folder to write into, e.g. reports/NAME")
    p.add_argument("--images-per-class", type=int, default=10, help="condensed images shown per class")
    p.add_argument("--metric", default="balanced_accuracy", choices=list(METRICS),
                   help="the report metric: bold, gains, intervals, tests, ranks and correlations use it; accuracy "
                        "stays beside it (default: %(default)s)")
    p.add_argument("--reference", metavar="PRESET|FILE",
                   help="put a paper's numbers and settings beside ours: a preset that ships them "
                        "(covid19-mtt) or a *.reference.yaml file")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("correlate", help="distilled vs random scores across datasets (and against the gain), or "
                                                "a prediction")
    add_db(p)
    p.add_argument("--predict", type=_accuracy, metavar="SCORE",
                   help="a new dataset's random-subset score in --metric (fraction or %%): predict the method's")
    p.add_argument("--method", help="method to predict for")
    p.add_argument("--ipc", type=int, help="IPC to predict for")
    p.add_argument("--protocol", help="protocol_id (or its prefix) when several protocols are stored")
    p.add_argument("--metric", default="balanced_accuracy", choices=list(METRICS),
                   help="test metric of the points (default: %(default)s)")
    p.set_defaults(func=cmd_correlate)

