"""SIGTERM is handled as Ctrl-C, and an early Ctrl-C is never lost to a dependency: tests that
send the signals to a real `medbench run` process."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import ONE_THREAD, make_arrays, write_npz


def _start(tmp_path, *extra):
    data = write_npz(tmp_path / "toy.npz", make_arrays())
    argv = [sys.executable, "-m", "medbench", "run", "--datasets", str(data), "--ipc", "1,2", "--seeds", "0,1,2,3",
            "--width", "8", "--epochs", "300", "--eval-models", "2", "--eval-augment", "none", "--device", "cpu",
            "--db", str(tmp_path / "db" / "r.sqlite"), "--no-progress", *extra]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)


def _done(db):
    if not db.is_file():
        return 0
    with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM cells WHERE status = 'done'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
def test_sigterm_stops_the_run_keeps_stored_cells_and_says_one_line(tmp_path, workers):
    proc = _start(tmp_path, *workers)
    db = tmp_path / "db" / "r.sqlite"
    deadline = time.monotonic() + 120
    while _done(db) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before a cell was stored: make the cells slower"
    proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - start < 20  # at once: cells in progress are not waited for
    assert proc.returncode == 143
    lines = err.strip().splitlines()
    assert lines == ["medbench: terminated (SIGTERM); every finished cell is stored and will be skipped next time"]
    stored = _done(db)
    assert 1 <= stored < 8
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize("delay", [0.6, 1.2, 2.5])
def test_early_ctrl_c_is_never_swallowed(tmp_path, delay):
    """While torch and medmnist are still importing (medmnist's import catches KeyboardInterrupt)."""
    proc = _start(tmp_path)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "medbench: interrupted; every finished cell is stored and will be skipped next time"]
    assert _done(tmp_path / "db" / "r.sqlite") < 8  # the grid did not run to its end
