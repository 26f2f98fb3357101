"""A small typed registry in the style of timm's ``@register_model`` and lm-evaluation-harness.

A factory is registered under a name; ``names("d*")`` globs; an unknown name fails with the
list of what is available. Built-in entries are known by name as lazy ``"module:object"`` strings
(``builtins``), so a registry never imports the packages that fill it: the first lookup of a
built-in imports its module, whose decorator registers it. Third-party packages add entries
through a Python entry-point group, loaded on first lookup. Registering a taken name fails with
a message naming both places (:meth:`Registry.origin`).
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from medbench.core.errors import MedbenchError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None,
                 builtins: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.builtins = dict(builtins or {})  # name -> "module:object", imported on first lookup
        self._items: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._entry_points_loaded = False

    def add(self, name: str, item: T, origin: str = "") -> T:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.kind} {name!r} is already registered by {self._origins.get(name) or 'another'}; "
                             f"{origin or 'this one'} cannot register it again")
        self._items[name] = item
        self._origins[name] = origin
        return item

    def origin(self, name: str) -> str:
        """Where ``name`` comes from: ``"module:object"`` (a built-in or a decorated factory)."""
        self._resolve(name)
        return self._origins.get(name) or self.builtins.get(name, "")

    def decorator(self, name: str, wrap: Callable[[str, Callable], T]) -> Callable[[Callable], Callable]:
        """Return a decorator that registers ``wrap(name, factory)`` and hands the factory back."""

        def register(factory: Callable) -> Callable:
            self.add(name, wrap(name, factory), f"{factory.__module__}:{factory.__qualname__}")
            return factory

        return register

    def _resolve(self, name: str) -> None:
        """Import the module of built-in ``name`` (its decorator registers it) if not done yet."""
        if name in self._items or name not in self.builtins:
            return
        module = self.builtins[name].partition(":")[0]
        importlib.import_module(module)
        if name not in self._items:
            raise MedbenchError(f"built-in {self.kind} {name!r}: importing {module} did not register it")

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
        return sorted(n for n in {*self._items, *self.builtins} if fnmatch.fnmatchcase(n, pattern))

    def get(self, name: str) -> T:
        self._load_entry_points()
        self._resolve(name)
        try:
            return self._items[name]
        except KeyError:
            available = ", ".join(self.names()) or "none"
            raise MedbenchError(f"unknown {self.kind} {name!r}; available: {available}") from None

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._items or name in self.builtins

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
