"""Distillation budgets: what an iterative method has spent, and when it must stop.

Three measures of what an iteration costs, recorded with every cell (FLOPs where counted, below):

* ``seconds``: wall-clock seconds of the iterations (checkpoint scoring excluded). What a user
  waits for, but it moves with the machine's load (DM on BreastMNIST: 4.0 s idle, 8.4 s beside
  other jobs).
* ``cpu_seconds``: this process's CPU time over the same iterations (``time.process_time``, all its
  threads): unmoved by other processes, moved by the thread count and the machine's speed.
* ``flops``: floating-point operations of convolutions and matrix products (forward and backward),
  counted by ``torch.utils.flop_counter.FlopCounterMode``. A process counts its iterations until
  two in a row cost the same, then charges that count per iteration: the loops repeat the same
  shapes (IDM's first iteration, before its queue has trained, is the one exception the rule
  exists for). Counting every iteration would be exact too, but costs up to ~50 % of a small
  step's time (Python dispatch per operator). The same on any machine and under any load: the
  budget for equal-compute comparisons across methods and machines.

  Counted only in cells with a FLOP budget: with a Python dispatch mode active (the counter is one,
  and it also decomposes operators its registry lacks) DSA's affine warp rounds differently (2e-6
  relative on one DM step, measured), so counting would change the sets of runs that never asked
  for it; a cell with a FLOP budget is its own cell, and its counted iterations are part of it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

from torch.utils.flop_counter import FlopCounterMode

from medbench.core.errors import MedbenchError

# Budget kinds, and how an amount of each is written.
KINDS = ("seconds", "cpu_seconds", "flops")
UNITS = {"seconds": "s", "cpu_seconds": "CPU s", "flops": "FLOP"}
NAMES = {"seconds": "seconds", "cpu_seconds": "CPU seconds", "flops": "FLOPs"}


@dataclass(frozen=True)
class Budget:
    """Stop an iterative method once it has spent ``amount`` of ``kind`` (at the end of that iteration)."""

    kind: str
    amount: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MedbenchError(f"unknown budget kind {self.kind!r}; choose {', '.join(KINDS)}")
        if not (self.amount > 0 and math.isfinite(self.amount)):
            raise MedbenchError(f"budget {NAMES[self.kind]} must be positive, got {self.amount:g}")

    @property
    def key(self) -> str:
        """Its name in a cell's config and identity: ``budget_seconds`` (as before), ``budget_flops``…"""
        return f"budget_{self.kind}"

    @property
    def label(self) -> str:
        return f"{self.amount:g} {UNITS[self.kind]}"

    @classmethod
    def from_config(cls, config: dict) -> Budget | None:
        """The budget a stored cell's config names, or None."""
        for kind in KINDS:
            if config.get(f"budget_{kind}") is not None:
                return cls(kind, float(config[f"budget_{kind}"]))
        return None


@dataclass
class Spent:
    """What a run has spent so far, across resumes."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0
    flops: float = 0.0

    def of(self, kind: str) -> float:
        return float(getattr(self, kind))

    def as_dict(self, flops_counted: bool = True) -> dict[str, float | None]:
        """What is stored with a result (FLOPs None where they were not counted)."""
        return {"seconds": self.seconds, "cpu_seconds": self.cpu_seconds,
                "flops": self.flops if flops_counted else None}


class _Global:
    """A stand-in for FlopCounterMode's module tracker that attributes every FLOP to "Global". The
    tracker's backward hooks on module inputs fail under ``torch.autograd.grad`` w.r.t. a leaf that a
    module was called on (MTT's recompute gradient does exactly that); totals need no attribution."""

    parents = ("Global",)

    def __enter__(self) -> _Global:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def flop_counter() -> FlopCounterMode:
    """torch's ``FlopCounterMode`` (its formulas, its ``get_total_flops()``) without per-module
    attribution (:class:`_Global`)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _Global()
    return counter


class Meter:
    """Charges each iteration to a :class:`Spent`: ``with meter.iteration(): ...``."""

    def __init__(self, spent: Spent | None = None, count_flops: bool = True) -> None:
        self.spent = spent if spent is not None else Spent()
        self.count_flops = count_flops  # False: FLOPs stay uncounted (None in what is recorded)
        self.flops_per_iteration: float | None = None  # the last count
        self._settled = not count_flops  # two consecutive iterations counted the same

    @contextlib.contextmanager
    def iteration(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        if self._settled:
            yield
        else:
            with flop_counter() as counter:
                yield
            flops = float(counter.get_total_flops())
            self._settled = flops == self.flops_per_iteration
            self.flops_per_iteration = flops
        self.spent.seconds += time.perf_counter() - wall
        self.spent.cpu_seconds += time.process_time() - cpu
        if self.flops_per_iteration is not None:
            self.spent.flops += self.flops_per_iteration



def over(budget: Budget | None, spent: Spent | float) -> bool:
    """Whether ``spent`` (a :class:`Spent`, or wall-clock seconds from a method that counts only
    those) has reached ``budget``. A method that reports seconds only never reaches another kind."""
    if budget is None:
        return False
    if not isinstance(spent, Spent):
        return budget.kind == "seconds" and spent >= budget.amount
    return spent.of(budget.kind) >= budget.amount
