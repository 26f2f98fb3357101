"""Where medbench keeps what it derives from a dataset (converted class folders, image hashes):
under the data root, or, where that is not writable (shared, read-only data), under the user's
cache folder (``$XDG_CACHE_HOME/medbench``, default ``~/.cache/medbench``)."""

from __future__ import annotations

import os
from pathlib import Path


def fallback_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "medbench"


def may_write(folder: Path) -> bool:
    """Writable, and not marked read-only: root may write anywhere, but a shared data folder
    with no write bits is meant to stay untouched."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return os.access(existing, os.W_OK) and bool(existing.stat().st_mode & 0o222)


def roots(cache_root: Path) -> tuple[Path, Path]:
    """The folders tried in turn: the data root, then the user's cache folder."""
    return cache_root, fallback_root()
