"""Search-space declarations: what a method tells ``medbench tune`` about its hyper-parameters,
declared beside its params dataclass (``register_method(..., search_space={"lr_img": Dim(...)})``).
Checking a whole space and reading one from YAML live in :mod:`medbench.tuning.space`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from medbench.core.errors import MedbenchError

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
