"""Cells being computed are claimed in the results database, so that several ``medbench run``
processes on one database (on one machine, or on machines sharing a filesystem) split the grid
instead of each computing all of it.

A claim is a row (cell, owner, heartbeat). A process takes a cell only if no live claim exists
and the cell is not stored (or was stored by another process after this run began); it refreshes
its claims' heartbeats from a background thread, and the claim goes in the same transaction as
the cell's result. A claim whose heartbeat is older than ``ttl`` belongs to a dead process (killed,
machine lost) and is taken over; on the same machine a claim whose process is gone is taken over
at once (a run killed with SIGKILL and restarted does not wait).

Limits: with ``--retry-failed``, two processes that start within the same second can both retry a
failed cell; containers that share a hostname but not their process ids must not share a
database (a live claim could look dead); expiry compares clocks across machines, so they should
be synchronised; and SQLite's locking needs a filesystem with working POSIX locks (local disks,
most cluster filesystems; not every NFS setup). Each process builds the expert buffers its cells
need before claiming; two processes starting together may both build one (same content).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from medbench.core.errors import MedbenchError
from medbench.storage.store import CLAIMS as SCHEMA

TTL_SECONDS = 120.0
BEAT_SECONDS = 20.0


class Claims:
    def __init__(self, db: Path, *, ttl: float = TTL_SECONDS, beat: float = BEAT_SECONDS) -> None:
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started = datetime.now(UTC).isoformat(timespec="seconds")  # the store's created_at format
        self.ttl, self.beat = ttl, beat
        # autocommit: transactions are opened explicitly (BEGIN IMMEDIATE takes the write lock first)
        self._conn = sqlite3.connect(db, timeout=60, isolation_level=None, check_same_thread=False)
        self._conn.execute(SCHEMA)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name="medbench-claims", daemon=True)

    def __enter__(self) -> Claims:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            try:
                self._conn.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
            except sqlite3.Error:
                pass  # the claims expire on their own (ttl); never mask the error or interrupt in flight
            finally:
                self._conn.close()

    def take(self, cell_id: str, skip: set[str]) -> bool:
        """Claim ``cell_id`` unless it is stored with a status in ``skip``, was stored by another
        process since this run began, or is claimed by a live process."""
        try:
            return self._take(cell_id, skip)
        except sqlite3.Error as exc:
            raise MedbenchError(f"cannot claim a cell in the results database ({exc}); is another program "
                                "holding it locked? Cells stored so far are kept") from None

    def _take(self, cell_id: str, skip: set[str]) -> bool:
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT status, created_at FROM cells WHERE cell_id = ?",
                                         (cell_id,)).fetchone()
                if row is not None and (row[0] in skip or row[1] > self.started):
                    return False
                self._drop_dead_local_claim(cell_id)
                self._conn.execute(
                    "INSERT INTO claims VALUES (?, ?, ?) ON CONFLICT(cell_id) DO UPDATE SET owner = excluded.owner, "
                    "heartbeat = excluded.heartbeat WHERE claims.heartbeat < ?",
                    (cell_id, self.owner, now, now - self.ttl))
                owner = self._conn.execute("SELECT owner FROM claims WHERE cell_id = ?", (cell_id,)).fetchone()[0]
                return owner == self.owner
            finally:
                self._conn.execute("COMMIT")

    def _drop_dead_local_claim(self, cell_id: str) -> None:
        row = self._conn.execute("SELECT owner FROM claims WHERE cell_id = ?", (cell_id,)).fetchone()
        if row is None:
            return
        host, _, rest = row[0].partition(":")
        pid = rest.partition(":")[0]
        if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            self._conn.execute("DELETE FROM claims WHERE cell_id = ?", (cell_id,))

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.beat):
            # busy now: the next beat (well within ttl) tries again
            with self._lock, contextlib.suppress(sqlite3.Error):
                self._conn.execute("UPDATE claims SET heartbeat = ? WHERE owner = ?", (time.time(), self.owner))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
