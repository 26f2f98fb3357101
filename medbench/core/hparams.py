"""Typed hyper-parameters: dataclasses filled from ``key=value`` strings, YAML or dicts.

Every method and the evaluation protocol describe their settings as a dataclass with defaults,
so the CLI, YAML files and the results store all read the same definition.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from medbench.core.errors import MedbenchError

P = TypeVar("P")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_key_values(text: str) -> dict[str, str]:
    """``"lr_img=0.1,init=noise"`` -> ``{"lr_img": "0.1", "init": "noise"}``."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise MedbenchError(f"expected key=value, got {part!r}")
        out[key.strip()] = value.strip()
    return out


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise MedbenchError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in {"none", "null", ""}):
            return None
        return _coerce(value, args[0], where)
    if origin in (tuple, list):
        (inner, *_) = typing.get_args(annotation) or (str,)
        items = value.split("+") if isinstance(value, str) else list(value)
        coerced = [_coerce(v, inner, where) for v in items if v != ""]
        return tuple(coerced) if origin is tuple else coerced
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError(value)
        if annotation is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if annotation is float:
            return float(value)
        if annotation is str:
            return str(value)
    except (TypeError, ValueError):
        raise MedbenchError(f"{where}: cannot read {value!r} as {annotation.__name__}") from None
    return value


def build(cls: type[P], values: Mapping[str, Any] | None = None, *, context: str = "") -> P:
    """Instantiate dataclass ``cls`` from ``values`` (strings or typed), refusing unknown keys."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - fields)
    label = context or cls.__name__
    if unknown:
        raise MedbenchError(
            f"{label}: unknown setting {', '.join(unknown)}; known: {', '.join(sorted(fields)) or 'none'}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{label} {k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except MedbenchError as exc:
        raise MedbenchError(f"{label}: {exc}") from None


def as_dict(params: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (possibly nested) dataclass."""
    return dataclasses.asdict(params)


# Field metadata key: a field added after results were stored names the value that reproduces the
# behaviour from before it existed; holding that value, it is left out of a cell's identity, so the
# stored cells keep their ids (any other value, the new default included, makes new cells).
SINCE_KEY = "identity_omits"

# Field metadata key: a speed-only setting (every value computes the same result up to float
# rounding, e.g. how MTT's gradient is computed) names the one value it always enters a cell's
# identity as, so all its values are one cell (the value stored cells were made with keeps their ids).
SPEED_ONLY_KEY = "identity_as"


def identity(params_type: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as they enter a cell's identity (see :data:`SINCE_KEY`, :data:`SPEED_ONLY_KEY`)."""
    if not dataclasses.is_dataclass(params_type):
        return values
    fields = dataclasses.fields(params_type)
    omit = {f.name: f.metadata[SINCE_KEY] for f in fields if SINCE_KEY in f.metadata}
    same = {f.name: f.metadata[SPEED_ONLY_KEY] for f in fields if SPEED_ONLY_KEY in f.metadata}
    return {k: same.get(k, v) for k, v in values.items() if not (k in omit and v == omit[k])}


def check(condition: bool, message: str) -> None:
    """Raise a user-facing error from a dataclass's ``__post_init__``."""
    if not condition:
        raise MedbenchError(message)
