"""Grid runs: resume, atomic cells, failed cells, reproducibility, stored provenance."""

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import FAST, ONE_THREAD

import medbench
from medbench.core.errors import CellFailed, MedbenchError
from medbench.distill.contract import METHODS, register_method
from medbench.nn.batched import EvalOptions
from medbench.storage.condensed_io import load_condensed
from medbench.storage.store import Store
from medbench.storage.summary import format_summary


def _run(toy_npz, db, **kw):
    args = dict(methods=["random", "full"], datasets=[str(toy_npz)], ipc=[1, 3], seeds=[0], db=db,
                device="cpu", matched_baselines=False)
    args.update(FAST)
    args.update(kw)
    return medbench.run(**args)


def test_grid_runs_stores_and_reloads(toy_npz, tmp_path):
    db = tmp_path / "r.sqlite"
    summary = _run(toy_npz, db)
    assert list(summary.method) == ["full", "random", "random"]
    assert list(summary.ipc) == ["full", 1, 3]
    assert (summary.models == 2).all() and (summary.status == "done").all()
    again = medbench.results(db)
    assert again.drop(columns=[]).equals(summary)
    with sqlite3.connect(db) as conn:
        config, env, path, ratio = conn.execute(
            "SELECT config, environment, condensed_path, compression_ratio FROM cells WHERE ipc = 3").fetchone()
    config, env = json.loads(config), json.loads(env)
    assert config["protocol"]["epochs"] == FAST["epochs"] and config["dataset"]["num_classes"] == 3
    assert len(config["dataset"]["mean"]) == 1  # normalisation stats stored with the result
    assert env["packages"]["torch"] and env["device"] == "cpu"
    assert ratio == pytest.approx(9 / 40)
    condensed = load_condensed(path)
    assert condensed.images.shape == (9, 1, 12, 12) and sorted(condensed.labels.tolist()) == [0] * 3 + [1] * 3 + [2] * 3


def test_second_run_does_no_work_and_returns_the_same_table(toy_npz, tmp_path, monkeypatch):
    db = tmp_path / "r.sqlite"
    first = _run(toy_npz, db)
    import medbench.harness.runner as runner

    def must_not_run(*args, **kwargs):
        raise AssertionError("a stored cell was run again")

    monkeypatch.setattr(runner, "run_cell", must_not_run)
    monkeypatch.setattr(runner, "load_dataset", must_not_run)
    second = _run(toy_npz, db)
    assert second.equals(first)


def test_same_seed_gives_identical_numbers(toy_npz, tmp_path):
    a = _run(toy_npz, tmp_path / "a.sqlite", methods=["random"])
    b = _run(toy_npz, tmp_path / "b.sqlite", methods=["random"])
    cols = ["test_accuracy", "test_balanced_accuracy", "test_macro_f1", "test_auc", "val_accuracy"]
    assert a[cols].equals(b[cols])
    c = _run(toy_npz, tmp_path / "c.sqlite", methods=["random"], seeds=[1])
    assert not a[cols].equals(c[cols])


def test_eval_compile_reaches_the_evaluation_and_keeps_the_cell(toy_npz, tmp_path, monkeypatch):
    """--eval-compile is a speed option like --eval-batching: the networks are trained through
    torch.compile (here its eager backend, which needs no compiler on a CPU), the numbers and the
    cell id stay those of the plain run, and an unknown mode is refused before any work."""
    import medbench.nn.batched as batched

    monkeypatch.setitem(batched.COMPILE_MODES, "cuda-graphs", EvalOptions(compile="eager"))
    seen = []
    real_compiled = EvalOptions.compiled
    monkeypatch.setattr(EvalOptions, "compiled", lambda self, fn: seen.append(self) or real_compiled(self, fn))
    cols = ["cell_id", "test_accuracy", "val_accuracy"]
    plain = _run(toy_npz, tmp_path / "a.sqlite", methods=["random"], ipc=[1])
    fast = _run(toy_npz, tmp_path / "b.sqlite", methods=["random"], ipc=[1], eval_compile="cuda-graphs")
    assert {o.compile for o in seen} == {None, "eager"}
    assert plain[cols].equals(fast[cols])
    with pytest.raises(MedbenchError, match="unknown eval compile mode 'fast'; choose off, inductor, cuda-graphs"):
        _run(toy_npz, tmp_path / "c.sqlite", methods=["random"], ipc=[1], eval_compile="fast")
    assert not (tmp_path / "c.sqlite").exists()


@pytest.fixture
def flaky_method():
    calls = []

    @register_method("test_flaky")
    def flaky(task, params):
        """Fails on IPC 2, works otherwise."""
        calls.append(task.ipc)
        if task.ipc == 2:
            raise CellFailed("diverged at iteration 7")
        return METHODS.get("random").run(task, METHODS.get("random").make_params())

    yield calls
    METHODS._items.pop("test_flaky")


def test_failed_cell_is_recorded_and_grid_goes_on(toy_npz, tmp_path, flaky_method):
    db = tmp_path / "r.sqlite"
    summary = _run(toy_npz, db, methods=["test_flaky"], ipc=[1, 2, 3])
    assert list(summary.status) == ["done", "failed", "done"]
    assert summary.message[1] == "diverged at iteration 7"
    assert flaky_method == [1, 2, 3]
    _run(toy_npz, db, methods=["test_flaky"], ipc=[1, 2, 3])
    assert flaky_method == [1, 2, 3]  # failed cells are not retried by default
    _run(toy_npz, db, methods=["test_flaky"], ipc=[1, 2, 3], retry_failed=True)
    assert flaky_method == [1, 2, 3, 2]


def test_a_grid_whose_every_cell_failed_still_prints_its_table(toy_npz, tmp_path, flaky_method):
    """No cell has scores: the summary (once a KeyError traceback) lists the failure."""
    summary = _run(toy_npz, tmp_path / "r.sqlite", methods=["test_flaky"], ipc=[2])
    assert list(summary.status) == ["failed"] and list(summary.models) == [0]
    assert summary.val_accuracy.isna().all()
    assert "failed: test_flaky · " in format_summary(summary)


def test_an_evaluation_that_blows_up_fails_its_cell_and_keeps_the_set(toy_npz, tmp_path):
    """Networks trained at an absurd learned lr end in NaN: the cell is stored as failed with a
    one-line reason (not a traceback, not a score of a constant guess), the distilled set is kept,
    and the grid goes on."""

    @register_method("test_blowup")
    def blowup(task, params):
        """Random images with an absurd learned lr."""
        condensed = METHODS.get("random").run(task, METHODS.get("random").make_params())
        return dataclasses.replace(condensed, lr=1e30)

    try:
        summary = _run(toy_npz, tmp_path / "r.sqlite", methods=["test_blowup", "random"], ipc=[1])
    finally:
        METHODS._items.pop("test_blowup")
    rows = {m: r for m, r in zip(summary.method, summary.itertuples(), strict=True)}
    assert rows["test_blowup"].status == "failed" and rows["random"].status == "done"
    assert rows["test_blowup"].message.startswith("evaluation network 0 (seed ")
    assert "diverged: non-finite training loss by epoch" in rows["test_blowup"].message
    with Store(tmp_path / "r.sqlite") as store:
        cell = store.cells()
        kept = cell[cell.method == "test_blowup"].condensed_path.iloc[0]
    assert load_condensed(kept).lr == 1e30


def test_interrupt_keeps_finished_cells_only(toy_npz, tmp_path, flaky_method):
    @register_method("test_interrupt")
    def interrupt(task, params):
        """Raises KeyboardInterrupt on IPC 3."""
        if task.ipc == 3:
            raise KeyboardInterrupt
        return METHODS.get("random").run(task, METHODS.get("random").make_params())

    db = tmp_path / "r.sqlite"
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(toy_npz, db, methods=["test_interrupt"], ipc=[1, 3])
    finally:
        METHODS._items.pop("test_interrupt")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT ipc, status FROM cells").fetchall() == [(1, "done")]


def test_ipc_larger_than_smallest_class(toy_npz, tmp_path):
    with pytest.raises(MedbenchError, match="IPC 14 exceeds the smallest class"):
        _run(toy_npz, tmp_path / "r.sqlite", methods=["random"], ipc=[14])


def test_sigkill_mid_run_then_rerun_completes_without_duplicates(toy_npz, tmp_path):
    db = tmp_path / "kill.sqlite"
    cmd = [sys.executable, "-m", "medbench", "run", "--methods", "random", "--datasets", str(toy_npz),
           "--ipc", "1,2,3", "--seeds", "0,1", "--eval-models", "2", "--epochs", "40", "--width", "8",
           "--device", "cpu", "--db", str(db), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ONE_THREAD)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    done = conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
        if done >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as conn:
        killed_at = conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert 1 <= killed_at < 6
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ONE_THREAD)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT ipc || '/' || seed) FROM cells").fetchone() == (6, 6)
        per_cell = conn.execute("SELECT cell_id, COUNT(*) FROM eval_models GROUP BY cell_id").fetchall()
        assert len(per_cell) == 6 and all(n == 2 for _, n in per_cell)  # no partial cells
        assert conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 6 * 2 * 2 * 4


def test_merge_copies_missing_cells_with_their_files(toy_npz, tmp_path, capsys):
    from medbench.cli.main import main

    a = _run(toy_npz, tmp_path / "a" / "r.sqlite", methods=["random"], ipc=[1])
    b = _run(toy_npz, tmp_path / "b" / "r.sqlite", methods=["random"], ipc=[1, 2])
    assert main(["merge", str(tmp_path / "b" / "r.sqlite"), "--db", str(tmp_path / "a" / "r.sqlite")]) == 0
    assert "1 new cell(s)" in capsys.readouterr().out
    merged = medbench.results(tmp_path / "a" / "r.sqlite")
    assert sorted(merged.cell_id) == sorted(b.cell_id) and a.cell_id[0] in set(merged.cell_id)
    with sqlite3.connect(tmp_path / "a" / "r.sqlite") as conn:
        (path,) = conn.execute("SELECT condensed_path FROM cells WHERE ipc = 2").fetchone()
        assert conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 2 * 2 * 2 * 4
    assert str(tmp_path / "a" / "condensed") in path and load_condensed(path).images.shape[0] == 6
    assert main(["merge", str(tmp_path / "b" / "r.sqlite"), "--db", str(tmp_path / "a" / "r.sqlite")]) == 0
    assert "0 new cell(s)" in capsys.readouterr().out


def test_merge_of_databases_in_one_folder(toy_npz, tmp_path):
    _run(toy_npz, tmp_path / "a.sqlite", methods=["random"], ipc=[1])
    _run(toy_npz, tmp_path / "b.sqlite", methods=["random"], ipc=[2])
    with Store(tmp_path / "a.sqlite") as store:
        assert store.merge(tmp_path / "b.sqlite") == 1
    assert len(medbench.results(tmp_path / "a.sqlite")) == 2


def test_a_field_added_later_keeps_stored_ids_only_at_its_old_behaviour():
    import dataclasses

    from medbench.core import hparams

    @dataclasses.dataclass(frozen=True)
    class P:
        a: int = 1
        mode: str = dataclasses.field(default="new", metadata={hparams.SINCE_KEY: "old"})

    assert hparams.identity(P, {"a": 1, "mode": "old"}) == {"a": 1}  # as cells stored before the field
    assert hparams.identity(P, {"a": 1, "mode": "new"}) == {"a": 1, "mode": "new"}
    assert hparams.identity(dict, {"x": 1}) == {"x": 1}
