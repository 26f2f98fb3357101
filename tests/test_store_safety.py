"""The results database is never created or altered by a command that only reads, and another
program's SQLite file is refused with one line and left byte-for-byte unchanged."""

from __future__ import annotations

import sqlite3

import pytest
from _records import record, store_with

from medbench.cli.main import main
from medbench.core.errors import MedbenchError
from medbench.storage.store import Store

READ_ONLY = [["results", "--db"], ["report", "--out", "OUT", "--db"], ["correlate", "--db"],
             ["baseline", "--out", "OUT/b.json", "--db"], ["export", "abc", "--out", "OUT", "--db"]]


def _foreign(path, table="cells"):
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute(f"INSERT INTO {table} (name) VALUES ('not ours')")
    conn.close()
    return path.read_bytes()


@pytest.mark.parametrize("argv", READ_ONLY)
@pytest.mark.parametrize("table", ["cells", "patients"])
def test_read_only_commands_refuse_a_foreign_database_and_leave_it_alone(tmp_path, capsys, argv, table):
    db = tmp_path / "other.sqlite"
    before = _foreign(db, table)
    code = main([a.replace("OUT", str(tmp_path / "out")) for a in argv] + [str(db)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not a medbench results database" in err
    assert db.read_bytes() == before and not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite"]  # no journal, no new file


@pytest.mark.parametrize("argv", READ_ONLY)
def test_read_only_commands_never_create_a_database(tmp_path, capsys, argv):
    db = tmp_path / "missing" / "r.sqlite"
    code = main([a.replace("OUT", str(tmp_path / "out")) for a in argv] + [str(db)])
    assert code == 2 and "no results database here" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_run_refuses_a_foreign_database_before_any_work(tmp_path, capsys, toy_npz):
    db = tmp_path / "other.sqlite"
    before = _foreign(db)
    code = main(["run", "--datasets", str(toy_npz), "--ipc", "1", "--seeds", "0", "--db", str(db), "--no-progress"])
    assert code == 2 and "not a medbench results database (cells)" in capsys.readouterr().err
    assert db.read_bytes() == before and not (tmp_path / "condensed").exists()


def test_a_text_file_is_not_a_database(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("hello\n" * 100)
    with pytest.raises(MedbenchError, match="cannot open the results database"):
        Store(path, readonly=True)
    assert path.read_text() == "hello\n" * 100


def test_reading_a_real_store_changes_nothing(tmp_path, capsys):
    db = store_with(tmp_path / "r.sqlite", [record("random", "a", 1, [0.5, 0.6])])
    before = db.read_bytes()
    assert main(["results", "--db", str(db)]) == 0
    assert db.read_bytes() == before


def test_a_bad_second_dataset_stops_the_grid_before_anything_is_written(tmp_path, capsys, toy_npz):
    from conftest import make_arrays, write_npz

    arrays = make_arrays()
    arrays["train_labels"][0] = 7  # label outside 0..C−1
    bad = write_npz(tmp_path / "bad.npz", arrays)
    db = tmp_path / "out" / "r.sqlite"
    code = main(["run", "--datasets", f"{toy_npz},{bad}", "--ipc", "1", "--seeds", "0", "--db", str(db),
                 "--no-progress", "--width", "4", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "bad.npz" in err
    assert not (tmp_path / "out").exists()  # no database, no condensed file, not the first dataset's cells
    code = main(["run", "--datasets", str(toy_npz), "--ipc", "99", "--seeds", "0", "--db", str(db), "--no-progress"])
    assert code == 2 and "exceeds the smallest class" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["dm", "dc", "dsa"])
def test_a_method_whose_loss_goes_non_finite_fails_its_cell(tmp_path, method):
    """lr_img=inf turns the images into NaN after the first step: the cell must fail with its message,
    not be stored as a finished result holding the real initialisation (iteration 0)."""
    import medbench

    summary = medbench.run(methods=[method], datasets=[str(_toy(tmp_path))], ipc=[1], seeds=[0],
                           db=tmp_path / "r.sqlite", device="cpu", width=4, epochs=1, eval_models=1,
                           matched_baselines=False,
                           method_args={method: {"lr_img": "inf", "iterations": 2, "eval_every": 1, "eval_epochs": 1}})
    [row] = summary.itertuples()
    assert row.status == "failed" and "non-finite" in row.message
    assert row.message.startswith((f"{method} diverged at iteration ", f"{method} diverged by iteration "))
    assert "at by" not in row.message


def _toy(tmp_path):
    from conftest import make_arrays, write_npz

    return write_npz(tmp_path / "toy.npz", make_arrays())


def test_an_empty_file_is_a_new_database(tmp_path, toy_npz):
    """Older versions left an empty database file behind on bad input; it must not block a run."""
    db = tmp_path / "r.sqlite"
    db.touch()
    assert main(["run", "--datasets", str(toy_npz), "--ipc", "1", "--seeds", "0", "--width", "4", "--epochs", "1",
                 "--eval-models", "1", "--db", str(db), "--no-progress"]) == 0
    with Store(db, readonly=True) as store:
        assert list(store.cells().status) == ["done"]
