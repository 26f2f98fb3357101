"""What every command shares: the parser whose usage errors are one line, and argument types."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from medbench.storage.store import DEFAULT_DB

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def amount_list(unit: str) -> Callable[[str], tuple[float, ...]]:
    """A parser of comma-separated positive amounts of ``unit`` (budgets: seconds, FLOPs)."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {unit}, got {text!r}") from None
        if not values or not all(0 < v < math.inf for v in values):
            raise argparse.ArgumentTypeError(f"budget {unit} must be positive, got {text!r}")
        return values

    return parse


def str_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def positive(kind: type) -> Callable[[str], Any]:
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


def add_db(p: argparse.ArgumentParser, help: str = "SQLite results database") -> None:
    """The ``--db`` option of every command that reads or writes a results database."""
    p.add_argument("--db", type=Path, default=DEFAULT_DB, help=f"{help} (default: %(default)s)")
