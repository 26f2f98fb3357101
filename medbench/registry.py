"""A small typed registry in the style of timm's ``@register_model``.

A factory is registered under a name; ``names("d*")`` globs; an unknown name fails with the
list of what is available; third-party packages add entries through a Python entry-point
group, loaded lazily on first lookup.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from medbench.errors import MedbenchError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False

    def add(self, name: str, item: T) -> T:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def decorator(self, name: str, wrap: Callable[[str, Callable], T]) -> Callable[[Callable], Callable]:
        """Return a decorator that registers ``wrap(name, factory)`` and hands the factory back."""

        def register(factory: Callable) -> Callable:
            self.add(name, wrap(name, factory))
            return factory

        return register

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or self.entry_point_group is None:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            # Importing the module runs its @register_... decorators.
            try:
                ep.load()
            except Exception as exc:  # a broken plug-in must not take the whole suite down
                raise MedbenchError(
                    f"cannot load {self.kind} plug-in {ep.name!r} ({ep.value}): {exc}"
                ) from exc

    def names(self, pattern: str = "*") -> list[str]:
        self._load_entry_points()
        return sorted(n for n in self._items if fnmatch.fnmatchcase(n, pattern))

    def get(self, name: str) -> T:
        self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            available = ", ".join(self.names()) or "none"
            raise MedbenchError(f"unknown {self.kind} {name!r}; available: {available}") from None

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
