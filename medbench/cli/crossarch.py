"""``crossarch``: evaluate stored condensed sets with other networks (:mod:`medbench.harness.crossarch`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from medbench.cli.types import add_db
from medbench.core.files import check_writable
from medbench.data.registry import DEFAULT_DATA_ROOT
from medbench.harness import crossarch
from medbench.harness.crossarch import DEFAULT_ARCHS, crossarch_table, format_crossarch, run_crossarch, source_cells
from medbench.storage.store import Store


def _list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())

def cmd_crossarch(args: argparse.Namespace) -> int:
    check_writable(args.db, folder=False, what="--db")
    run_crossarch(args.db, args.archs, cells=args.cells, methods=args.methods or (), data_root=args.data_root,
                  device=args.device, retry_failed=args.retry_failed, log=None if args.quiet else sys.stderr)
    with Store(args.db) as store:
        sources = [c.cell_id for c in source_cells(store, cells=args.cells, methods=args.methods or ())]
        table = crossarch_table(store, args.archs, sources)
    print("Test accuracy:\n" + format_crossarch(table))
    if not table.empty:
        print("\nTest balanced accuracy (mean recall over classes; chance = 1 / classes):\n"
              + format_crossarch(table, "balanced_accuracy"))
    return 0

def register(subparsers: Any) -> None:
    p = subparsers.add_parser("crossarch", help="evaluate stored condensed sets with other networks",
                              description=crossarch.__doc__.splitlines()[0])
    add_db(p)
    p.add_argument("--archs", type=_list, default=DEFAULT_ARCHS,
                   help="comma-separated models (default: %(default)s); the source's own is skipped")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--cells", metavar="GLOB", help="cell ids matching this glob (or starting with it)")
    which.add_argument("--methods", type=_list, help="only cells of these methods")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="MedMNIST root folder")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--retry-failed", action="store_true", help="evaluate failed (diverged) results again")
    p.add_argument("--quiet", action="store_true", help="no line per evaluated cell")
    p.set_defaults(func=cmd_crossarch)
