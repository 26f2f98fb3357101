"""Signals: SIGINT and SIGTERM as one line and an exit status, never a lost or half-handled one.

SIGTERM (what a cluster scheduler sends) is handled like Ctrl-C: nothing new starts, every stored
cell stays, one line, exit 143 (130 for Ctrl-C). The handlers are installed before torch and
medmnist are imported, and every signal is remembered:

* a signal that arrives while a module is being imported is only recorded (an exception raised
  inside torch's C-extension import leaves it half-initialised and surfaces as an unrelated
  ValueError or RuntimeError, and the ``medmnist`` package's import catches every exception,
  KeyboardInterrupt included, so an early Ctrl-C would be lost and the whole grid would run);
* :func:`check` raises it at the next safe point: after the imports, and between cells.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
_received: list[int] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be."""


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _importing(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _handler(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    if not _importing(frame):
        raise _exception(signum)


def install() -> None:
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def received() -> bool:
    """A signal arrived (even if some code swallowed the exception it raised)."""
    return bool(_received)


def check() -> None:
    """Raise the interruption of a signal that was deferred or swallowed (a safe point)."""
    if _received:
        raise _exception(signal.SIGTERM if signal.SIGTERM in _received else _received[0])


def interrupted(exc: BaseException | None = None) -> int:
    """Print the one line for an interrupted run and return its exit status."""
    terminated = isinstance(exc, Terminated) or signal.SIGTERM in _received
    print(f"medbench: {'terminated (SIGTERM)' if terminated else 'interrupted'}; every finished cell is stored "
          "and will be skipped next time", file=sys.stderr)
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
