"""The kit's instruments: a tripwire on the dataset's files, a network that turns its outputs NaN on
cue, and an interruption in the middle of a run.

The tripwire is a Python audit hook (:func:`sys.addaudithook`, PEP 578) on the ``open`` event: while
:func:`watching` is active, every opening of a watched file is recorded, however the method reached
it (``np.load``, ``medbench.load_dataset``, a path of its own). Audit hooks cannot be removed, so one
hook is installed per process and does nothing while no file is watched.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from medbench.nn.models import ModelSpec

_watched: set[str] = set()
_opened: list[str] = []
_hooked = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _watched or event != "open" or not args:
        return
    path = args[0]
    if isinstance(path, str | bytes | os.PathLike):
        resolved = os.path.realpath(os.fsdecode(path))
        if resolved in _watched:
            _opened.append(resolved)


@contextlib.contextmanager
def watching(paths: Iterable[Path]) -> Iterator[list[str]]:
    """Record every opening of ``paths`` inside the block (the list yielded fills as it happens)."""
    global _hooked
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True
    watched = {os.path.realpath(p) for p in paths}
    _watched.update(watched)
    _opened.clear()
    seen: list[str] = []
    try:
        yield seen
    finally:
        seen.extend(_opened)
        _opened.clear()
        _watched.difference_update(watched)


@dataclass
class Switch:
    """Arms every network built from an :class:`ArmedSpec`: once armed, their layers output NaN."""

    armed: bool = False
    fired: int = 0  # forward passes that produced NaN


@dataclass(frozen=True)
class ArmedSpec(ModelSpec):
    """A :class:`ModelSpec` whose networks (and any built from it by ``build``) carry a forward hook
    on each convolution and linear layer that multiplies the output by NaN while ``switch`` is armed:
    a non-finite loss, injected into any method that trains or embeds with the task's network."""

    switch: Switch = field(default_factory=Switch, compare=False)

    def build(self, channels: int, num_classes: int, size: int) -> nn.Module:
        model = super().build(channels, num_classes, size)
        for layer in model.modules():
            if isinstance(layer, nn.Conv2d | nn.Linear):
                layer.register_forward_hook(self._hook)
        return model

    def _hook(self, _module: nn.Module, _inputs: Any, output: Any) -> Any:
        if not self.switch.armed:
            return None
        self.switch.fired += 1
        return output * float("nan")


class Interrupted(KeyboardInterrupt):
    """The kit's Ctrl-C in the middle of a run (a KeyboardInterrupt, so ``except Exception`` in a
    method does not swallow it, as it would not swallow the user's)."""
