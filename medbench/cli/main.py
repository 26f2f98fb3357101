"""The ``medbench`` command line: every command, in the order ``--help`` lists them. Each comes from
the module of its group (``add_<command>(subparsers)`` or a group's ``register``); a command imports
what is heavy inside itself. Bad input: one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from medbench.cli.types import EXIT_USAGE, Parser
from medbench.core.errors import EXIT_UNFINISHED, GridUnfinished, MedbenchError
from medbench.core.signals import interrupted

# (module, function): each adds one command (or, for a ``register``, its group's commands in order).
COMMANDS: list[tuple[str, str]] = [
    ("medbench.cli.catalog", "add_datasets"), ("medbench.cli.catalog", "add_methods"),
    ("medbench.cli.run", "add_run"), ("medbench.cli.catalog", "add_protocols"),
    ("medbench.cli.run", "add_results"), ("medbench.cli.run", "add_merge"), ("medbench.cli.run", "add_experts"),
    ("medbench.cli.report", "register"),  # report, correlate
    ("medbench.cli.regression", "register"),  # baseline, check
    ("medbench.cli.conform", "register"),
    ("medbench.cli.sharing", "register"),  # export, verify, audit
    ("medbench.cli.crossarch", "register"), ("medbench.cli.bench", "register"), ("medbench.cli.tune", "register"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="medbench", description="Benchmark dataset distillation on medical images.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    for module, function in COMMANDS:
        getattr(importlib.import_module(module), function)(sub)
    return parser


def _version() -> str:
    from medbench import __version__

    return __version__


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
