"""``medbench export``, ``medbench verify`` and ``medbench audit``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from medbench.cli.types import add_db
from medbench.core.errors import MedbenchError
from medbench.core.files import check_writable
from medbench.data.registry import DEFAULT_DATA_ROOT

EXIT_TAMPERED = 1


def cmd_export(args: argparse.Namespace) -> int:
    from medbench.sharing.export import export_cell

    check_writable(args.out, folder=True, what="--out")
    out = export_cell(args.db, args.cell, args.out, force=args.force)
    print(f"exported cell {args.cell} to {out}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from medbench.data.package import verify_package

    if not Path(args.dir).is_dir():
        raise MedbenchError(f"{args.dir}: no such folder")
    result = verify_package(args.dir)
    if result.ok:
        m = result.manifest
        print(f"{args.dir}: ok ({m.get('n_images')} images, {m.get('method', {}).get('name')} on "
              f"{m.get('dataset', {}).get('name')}, every checksum matches)")
        return 0
    for problem in result.problems:
        print(f"{args.dir}: {problem}", file=sys.stderr)
    return EXIT_TAMPERED


def cmd_audit(args: argparse.Namespace) -> int:
    from medbench.sharing.audit import AuditSettings, audit_cell

    check_writable(args.out, folder=True, what="--out")
    settings = AuditSettings(mia=not args.no_mia, bootstrap=args.bootstrap, ssim_shortlist=args.ssim_shortlist)
    report = audit_cell(args.db, args.cell, args.out, data_root=args.data_root, settings=settings,
                        device=args.device)
    mem = report["memorisation"]
    print(f"audit of {report['cell_id'][:12]} ({report['method']} · {report['dataset']}) written to {args.out}")
    if report["real_images"]:
        print(report["real_images"]["statement"])
    print(f"exact copies: {mem['exact_copies']}/{report['n_distilled']} · closer than the same-class median: "
          f"{mem['share_closer_than_same_class_median']:.2f} · near-copies: {mem['share_near_copies']:.2f}")
    mia = report.get("membership_inference")
    if mia:
        d, b = mia["distilled"], mia["random_subset_baseline"]
        print(f"membership attack AUC: distilled {d['auc']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}] · "
              f"random real subset {b['auc']:.3f} [{b['ci_low']:.3f}, {b['ci_high']:.3f}]")
    return 0


def _nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="write a stored cell's distilled set as a shareable package")
    p.add_argument("cell", help="cell id or a unique prefix of it (see `medbench results --format csv`)")
    add_db(p)
    p.add_argument("--out", type=Path, required=True, help="package folder to create")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty folder")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("verify", help="check a package's checksums and arrays (exit 1 if changed)")
    p.add_argument("dir", type=Path, help="package folder")
    p.set_defaults(func=cmd_verify)

    p = subparsers.add_parser("audit", help="privacy audit of a stored cell: nearest real images, membership attack")
    p.add_argument("cell", help="cell id or a unique prefix of it")
    add_db(p)
    p.add_argument("--out", type=Path, required=True, help="folder for audit.md, audit.json, neighbours.png")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                   help="where the cell's dataset is (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--no-mia", action="store_true", help="skip the membership-inference attack")
    p.add_argument("--bootstrap", type=_nonnegative, default=1000, help="bootstrap resamples for the AUC interval")
    p.add_argument("--ssim-shortlist", type=_nonnegative, default=None,
                   help="search SSIM among this many nearest by L2 (default: exhaustive when affordable)")
    p.set_defaults(func=cmd_audit)
