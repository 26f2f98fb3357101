"""Search spaces: the ranges a method's hyper-parameters are tuned over.

A method declares its space beside its params dataclass, ``register_method(..., search_space={...})``,
one :class:`Dim` per field (a third-party method the same way). A user replaces or narrows it with a
YAML file (``medbench tune --space FILE``)::

    mtt:
      lr_img: {low: 10, high: 10000, scale: log}
      syn_steps: {low: 10, high: 40, integer: true}
      init: [real, noise]          # a list: choose among these values

Every space is checked before any work: the field must exist in the method's parameters, a range
must have low < high, a log scale needs low > 0, integer ranges integer bounds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medbench.errors import MedbenchError

SCALES = ("linear", "log")


@dataclass(frozen=True)
class Dim:
    """One tuned field: a range (``low``..``high`` on a linear or log scale, float or integer) or a
    list of ``choices``."""

    low: float | None = None
    high: float | None = None
    scale: str = "linear"
    integer: bool = False
    choices: tuple | None = None

    def check(self, where: str) -> None:
        if self.choices is not None:
            if not self.choices:
                raise MedbenchError(f"{where}: an empty list of choices")
            return
        if self.low is None or self.high is None:
            raise MedbenchError(f"{where}: give low and high (or a list of choices)")
        for bound in (self.low, self.high):
            if isinstance(bound, bool) or not isinstance(bound, int | float) or not math.isfinite(bound):
                raise MedbenchError(f"{where}: bounds must be finite numbers, got {self.low!r}..{self.high!r}")
        if self.scale not in SCALES:
            raise MedbenchError(f"{where}: unknown scale {self.scale!r}; choose linear or log")
        if not self.low < self.high:
            raise MedbenchError(f"{where}: low {self.low:g} must be below high {self.high:g}")
        if self.scale == "log" and self.low <= 0:
            raise MedbenchError(f"{where}: a log scale needs low > 0, got {self.low:g}")
        if self.integer and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise MedbenchError(f"{where}: an integer range needs integer bounds, got {self.low:g}..{self.high:g}")

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        kind = "integer" if self.integer else "float"
        return f"{self.low:g}..{self.high:g} ({self.scale}, {kind})"

    def ray(self) -> Any:
        """The Ray Tune sampling domain."""
        from ray import tune

        if self.choices is not None:
            return tune.choice(list(self.choices))
        if self.integer:  # Ray's integer upper bounds are exclusive
            low, high = int(self.low), int(self.high) + 1
            return tune.lograndint(low, high) if self.scale == "log" else tune.randint(low, high)
        return tune.loguniform(self.low, self.high) if self.scale == "log" else tune.uniform(self.low, self.high)


SearchSpace = dict[str, Dim]


def check_space(method: str, space: Mapping[str, Dim], params: type) -> None:
    """Every tuned field exists in ``params`` and has a valid range."""
    if not space:
        raise MedbenchError(f"method {method} has no search space; declare one or pass --space")
    names = {f.name for f in dataclasses.fields(params)}
    for name, dim in space.items():
        if name not in names:
            raise MedbenchError(f"search space of {method}: unknown field {name!r}; "
                                f"{method} has {', '.join(sorted(names))}")
        dim.check(f"search space of {method}, {name}")


def parse_dim(value: Any, where: str) -> Dim:
    """A YAML entry: a list of choices, or a mapping with low/high/scale/integer."""
    if isinstance(value, list):
        return Dim(choices=tuple(value))
    if not isinstance(value, Mapping):
        raise MedbenchError(f"{where}: expected a list of choices or a mapping with low and high")
    unknown = set(value) - {"low", "high", "scale", "integer"}
    if unknown:
        raise MedbenchError(f"{where}: unknown key {sorted(unknown)[0]!r}; use low, high, scale, integer")
    integer = value.get("integer", False)
    if not isinstance(integer, bool):
        raise MedbenchError(f"{where}: integer must be true or false")
    return Dim(value.get("low"), value.get("high"), str(value.get("scale", "linear")), integer)


def parse_spaces(loaded: Any, source: str) -> dict[str, SearchSpace]:
    """``{method: {field: entry}}`` from a YAML file into search spaces (each entry checked)."""
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Mapping) for v in loaded.values()):
        raise MedbenchError(f"{source}: expected a mapping of method name to {{field: range}}")
    return {str(m): {str(k): parse_dim(v, f"{source}: {m}.{k}") for k, v in fields.items()}
            for m, fields in loaded.items()}
