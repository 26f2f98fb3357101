"""A full disk while results are stored: one line, exit 2, every cell stored before intact, no
temporary or orphaned file. Simulated without root in two ways that always run (SQLite's page limit,
a file-size limit on the process) and, where this user may mount one, on a real tiny tmpfs."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import ONE_THREAD, make_arrays, write_npz

from medbench.cli.main import main
from medbench.storage.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")

RUN = ["run", "--methods", "random", "--width", "4", "--epochs", "1", "--eval-models", "1", "--eval-augment",
       "none", "--device", "cpu", "--no-progress", "--no-matched-baselines"]


def _stored(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT cell_id, status FROM cells ORDER BY cell_id").fetchall()
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    return rows


def _leftovers(folder: Path, db: Path) -> list[Path]:
    """Temporary files anywhere, and condensed files without a stored cell."""
    stored = {row[0] for row in _stored(db)}
    tmp = [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    orphans = [p for p in (folder / "condensed").glob("*.npz") if p.stem not in stored]
    return tmp + orphans


def test_the_store_hitting_its_page_limit(tmp_path, monkeypatch, capsys):
    data = write_npz(tmp_path / "toy.npz", make_arrays())
    db = tmp_path / "r.sqlite"
    assert main([*RUN, "--datasets", str(data), "--ipc", "1", "--seeds", "0", "--db", str(db)]) == 0
    before = _stored(db)
    with sqlite3.connect(db) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    original = Store.__init__

    def limited(self, *args, **kwargs):  # the database may not grow: as a full disk would stop it
        original(self, *args, **kwargs)
        self._conn.execute(f"PRAGMA max_page_count = {pages}")

    monkeypatch.setattr(Store, "__init__", limited)
    capsys.readouterr()
    code = main([*RUN, "--datasets", str(data), "--ipc", "1,2,3", "--seeds", "0,1", "--db", str(db)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "is the disk full" in err and "Cells stored before are kept" in err
    assert set(before) <= set(_stored(db))  # every cell stored before is still there, intact
    assert _leftovers(tmp_path, db) == []


def _limited_run(argv: list[str], limit: int) -> subprocess.CompletedProcess:
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "medbench", *argv], env=ONE_THREAD, capture_output=True, text=True,
                          timeout=300, preexec_fn=preexec)


def test_a_condensed_file_hitting_a_file_size_limit(tmp_path):
    data = write_npz(tmp_path / "big.npz", make_arrays(n=(60, 12, 12), size=48, channels=3))
    db = tmp_path / "r.sqlite"
    first = _limited_run([*RUN, "--datasets", str(data), "--ipc", "1", "--seeds", "0", "--db", str(db)], 10**8)
    assert first.returncode == 0, first.stderr
    before = _stored(db)
    # IPC 20 × 3 classes × 3 × 48 × 48 float32 ≈ 1.6 MB: past the 400 kB limit; the database stays below it
    done = _limited_run([*RUN, "--datasets", str(data), "--ipc", "20", "--seeds", "0", "--db", str(db)], 400_000)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "is the disk full" in done.stderr
    assert _stored(db) == before and _leftovers(tmp_path, db) == []


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mount = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"mounting a tmpfs was refused here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_real_full_disk(tmp_path, tiny_tmpfs):
    data = write_npz(tmp_path / "big.npz", make_arrays(n=(60, 12, 12), size=48, channels=3))
    db = tiny_tmpfs / "r.sqlite"
    assert _limited_run([*RUN, "--datasets", str(data), "--ipc", "1", "--seeds", "0", "--db", str(db)],
                        10**9).returncode == 0
    before = _stored(db)
    filler = tiny_tmpfs / "filler"
    with open(filler, "wb") as fh:  # leave about 200 kB free on the 1 MB file system
        fh.write(b"\0" * (os.statvfs(tiny_tmpfs).f_bavail * os.statvfs(tiny_tmpfs).f_frsize - 200_000))
    done = _limited_run([*RUN, "--datasets", str(data), "--ipc", "20", "--seeds", "0", "--db", str(db)], 10**9)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "is the disk full" in done.stderr
    filler.unlink()
    assert _stored(db) == before and _leftovers(tiny_tmpfs, db) == []
