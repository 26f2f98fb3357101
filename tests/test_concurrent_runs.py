"""Two `medbench run` processes on one database split the grid: every cell is distilled exactly
once (counted by a plug-in method that logs each distillation), and both finish."""

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
    from medbench.method import get_method, register_method

    @register_method("counted")
    def counted(task, params):
        """Random selection that logs every distillation."""
        with open(os.environ["MEDBENCH_COUNT_FILE"], "a") as fh:
            fh.write(f"{task.ipc} {task.seed} {os.getpid()}\\n")
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
