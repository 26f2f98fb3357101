"""``conform``: check registered methods against the contract every built-in keeps (the conformance kit,
:mod:`medbench.testing`); exit 1 when a property fails."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medbench.cli.gridargs import parse_method_args
from medbench.core.errors import MedbenchError
from medbench.data.registry import DEFAULT_DATA_ROOT
from medbench.distill.contract import Method, get_method, list_methods


def _check_settings(method: Method, values: Mapping[str, Any], complete: bool) -> None:
    """Build the params (``complete``: the values hold every required setting), or check the names only
    (a method whose kit settings are made at run time, e.g. ``package``'s folder)."""
    if complete:
        method.make_params(values)
        return
    known = {f.name for f in dataclasses.fields(method.params)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise MedbenchError(f"method {method.name}: unknown setting {unknown[0]}; known: {', '.join(sorted(known))}")


def cmd_conform(args: argparse.Namespace) -> int:
    from medbench.testing import conform

    names = list_methods() if args.all else list(args.methods or [])
    if not names:
        raise MedbenchError("name a method (medbench conform dm) or pass --all")
    overrides = parse_method_args(args.method_args, names)
    for name in names:  # unknown methods, settings and bad values: one line, exit 2
        method = get_method(name)
        declared = method.conform_params if isinstance(method.conform_params, Mapping) else None
        if declared is not None or name in overrides:
            _check_settings(method, {**(declared or {}), **overrides.get(name, {})}, declared is not None)
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise MedbenchError(f"--method-args names {', '.join(unknown)}, which is not checked here")
    failed: list[str] = []
    for name in names:
        print(f"{name}:", flush=True)
        outcomes = conform(name, overrides.get(name), data_root=args.data_root, real=not args.no_real)
        for outcome in outcomes:
            print(f"  {outcome.line()}", flush=True)
        failed += [f"{name} {o.name}" for o in outcomes if o.failed]
    verdict = f"{len(failed)} failed: {', '.join(failed)}" if failed else "every property holds or is n/a"
    print(f"{len(names)} method(s) checked; {verdict}")
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``conform`` to the ``medbench`` command line."""
    from medbench.testing import conformance

    p = subparsers.add_parser(
        "conform", help="check a method against the contract every built-in keeps (exit 1 on a failure)",
        description=conformance.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("methods", nargs="*", metavar="METHOD", help="registered method names")
    p.add_argument("--all", action="store_true", help="every registered method")
    p.add_argument("--method-args", action="append", default=[], metavar="SPEC",
                   help="override the method's declared tiny settings: NAME:key=value,... (repeatable)")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                   help="where BreastMNIST is looked for, for the real-data checks (default: %(default)s)")
    p.add_argument("--no-real", action="store_true", help="generated data only")
    p.set_defaults(func=cmd_conform)
