"""Two `medbench run` processes on one database split the grid: every cell is distilled exactly
once (counted by a plug-in method that logs each distillation), and both finish; a run waits for
the cells another process holds and takes over those of a process that died, so it never exits 0
with its grid unfinished (or, with --no-wait, says what is left with exit status 3)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter

from conftest import ONE_THREAD, make_arrays, write_npz

PLUGIN = '''
import os, time


def _register():
    from medbench.distill.contract import get_method, register_method

    @register_method("counted")
    def counted(task, params):
        """Random selection that logs every distillation."""
        with open(os.environ["MEDBENCH_COUNT_FILE"], "a") as fh:
            fh.write(f"{task.ipc} {task.seed} {os.getpid()}\\n")
        if os.environ.get("MEDBENCH_HANG") == f"{task.ipc} {task.seed}":
            time.sleep(600)  # killed here by the test
        time.sleep(0.4)
        method = get_method("random")
        return method.run(task, method.make_params())


if os.environ.get("MEDBENCH_COUNT_FILE"):
    _register()
'''


def test_two_runs_on_one_database_compute_every_cell_once(tmp_path):
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "sitecustomize.py").write_text(PLUGIN)  # imported by every Python process (pool workers too)
    log = tmp_path / "distilled.log"
    env = {**ONE_THREAD, "PYTHONPATH": str(plugin), "MEDBENCH_COUNT_FILE": str(log)}
    data = write_npz(tmp_path / "toy.npz", make_arrays())
    db = tmp_path / "r.sqlite"
    argv = [sys.executable, "-m", "medbench", "run", "--methods", "counted", "--datasets", str(data),
            "--ipc", "1,2", "--seeds", "0,1,2,3,4,5", "--width", "4", "--epochs", "5", "--eval-models", "1",
            "--eval-augment", "none", "--device", "cpu", "--db", str(db), "--no-progress", "--no-matched-baselines"]
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    second = subprocess.Popen([*argv, "--workers", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    outs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    cells = Counter(tuple(line.split()[:2]) for line in log.read_text().splitlines())
    assert len(cells) == 12 and set(cells.values()) == {1}, cells  # every cell distilled exactly once
    pids = {line.split()[2] for line in log.read_text().splitlines()}
    assert len(pids) >= 2  # the work was split between the processes
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT ipc || '/' || seed) FROM cells").fetchone() == (12, 12)
        assert conn.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0  # every claim released
    assert not [p for p in tmp_path.rglob("*.tmp")]
    assert os.path.isdir(tmp_path / "condensed")


def _setup(tmp_path):
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "sitecustomize.py").write_text(PLUGIN)
    log = tmp_path / "distilled.log"
    env = {**ONE_THREAD, "PYTHONPATH": str(plugin), "MEDBENCH_COUNT_FILE": str(log)}
    data = write_npz(tmp_path / "toy.npz", make_arrays())
    argv = [sys.executable, "-m", "medbench", "run", "--methods", "counted", "--datasets", str(data),
            "--ipc", "1,2", "--seeds", "0,1,2", "--width", "4", "--epochs", "2", "--eval-models", "1",
            "--eval-augment", "none", "--device", "cpu", "--db", str(tmp_path / "r.sqlite"), "--no-progress",
            "--no-matched-baselines"]
    return log, env, argv


def _lines(log, timeout: float, count: int) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.1)
    raise AssertionError(f"only {len(lines)} of {count} distillations logged")


def test_a_run_finishes_the_cell_of_a_process_killed_in_it(tmp_path):
    log, env, argv = _setup(tmp_path)
    doomed = subprocess.Popen(argv, env={**env, "MEDBENCH_HANG": "1 0"}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    _lines(log, 120, 1)  # the doomed process is inside its first cell (IPC 1, seed 0), holding its claim
    survivor = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _lines(log, 120, 6)  # the survivor computed the other five cells: it now waits for the sixth
    assert survivor.poll() is None  # ... and does not exit 0 with the grid unfinished
    doomed.kill()  # SIGKILL in the middle of the cell
    doomed.communicate(timeout=60)
    _, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err
    cells = Counter(tuple(line.split()[:2]) for line in log.read_text().splitlines())
    assert len(cells) == 6 and cells[("1", "0")] == 2 and set(cells.values()) - {1} == {2}  # the killed one twice
    with sqlite3.connect(tmp_path / "r.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM cells WHERE status = 'done'").fetchone()[0] == 6
        assert conn.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0


def test_no_wait_stops_naming_what_is_left_with_its_own_exit_status(tmp_path):
    log, env, argv = _setup(tmp_path)
    holder = subprocess.Popen(argv, env={**env, "MEDBENCH_HANG": "1 0"}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        _lines(log, 120, 1)
        done = subprocess.run([*argv, "--no-wait"], env=env, capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()
        holder.communicate(timeout=60)
    assert done.returncode == 3, done.stderr
    assert "1 cell(s) of the grid are still being computed by other processes" in done.stderr
    assert "Traceback" not in done.stderr
