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
from collections.abc import Mapping
from typing import Any

from medbench.core.errors import MedbenchError
from medbench.distill.space import Dim

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
