"""File helpers every writer shares: the output check, atomic writes and content hashes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from medbench.core.errors import DataError, MedbenchError


def check_writable(path: Path | str, *, folder: bool, what: str) -> None:
    """Refuse, with one line, an output location that cannot be written, before anything is created:
    a path under a regular file, an existing file where a folder goes (or the reverse), a read-only
    file system or folder, a special file system (``/proc``) where nothing can be created. Every
    command that writes calls it on its outputs first; it creates nothing that stays (a probe file
    in the nearest existing folder is removed at once)."""
    path = Path(path).expanduser()
    try:
        absolute = path.absolute()
        if absolute.exists():
            if folder and not absolute.is_dir():
                raise MedbenchError(f"{what} {path}: exists and is not a folder")
            if not folder and absolute.is_dir():
                raise MedbenchError(f"{what} {path}: is a folder, not a file")
            target = absolute if folder else absolute.parent
        else:
            target = next(p for p in absolute.parents if p.exists())
            if not target.is_dir():
                raise MedbenchError(f"{what} {path}: {target} is a file, not a folder")
    except OSError as exc:  # a name too long, a loop of links
        raise MedbenchError(f"{what} {path}: not a usable location ({exc.strerror})") from None
    if not os.access(target, os.W_OK | os.X_OK):
        raise MedbenchError(f"{what} {path}: {target} is not writable (read-only file system or no permission)")
    try:  # special file systems say "writable" where nothing can be created
        handle, probe = tempfile.mkstemp(prefix=".medbench-probe-", dir=target)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise MedbenchError(f"{what} {path}: cannot write in {target} ({exc.strerror})") from None


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[BinaryIO]:
    """A binary file handle whose content appears at ``path`` only once the block ends: written to a
    temporary name unique to the process (concurrent writers never collide), fsynced, renamed. A
    failure or an interrupt (a full disk, Ctrl-C) removes the temporary file and leaves ``path`` as
    it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as fh:  # "x": a fresh file with the umask's permissions
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so a reader (or a crash) never sees a half-written file."""
    with atomic_open(path) as fh:
        fh.write(payload)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an npz file (no pickles), or one :class:`DataError` line naming the file and
    why it cannot be read (missing, not a zip archive, truncated, a malformed array)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an npz file (not a zip archive; truncated or another kind of file)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable npz file ({reason})") from None


def read_yaml(path: Path | str, what: str) -> Any:
    """A YAML file's content; an unreadable file, invalid YAML or a key given twice in one mapping
    (which YAML would silently read as its last value) is one line naming ``what`` it was."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
            seen: set = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise MedbenchError(f"{path}: {what} gives {key!r} twice (line {key_node.start_mark.line + 1})")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    try:
        return yaml.load(Path(path).read_text(), Loader=UniqueKeys)
    except OSError as exc:
        raise MedbenchError(f"{path}: cannot read {what} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise MedbenchError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
