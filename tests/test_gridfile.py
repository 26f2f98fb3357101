"""Grid files, presets, CLI overrides, and executors that must give the same numbers."""

import argparse
import sqlite3
import tomllib
from pathlib import Path

import pytest
from conftest import FAST, REPO

import medbench
from medbench.cli.gridargs import grid_spec_from_args
from medbench.cli.main import build_parser, main
from medbench.core.errors import MedbenchError
from medbench.harness.grid import expand
from medbench.harness.gridfile import read_grid_file

METRICS = ["test_accuracy", "test_balanced_accuracy", "test_macro_f1", "test_auc", "val_accuracy"]


def _spec(*argv):
    args = build_parser().parse_args(["run", *argv])
    return grid_spec_from_args(args)


def test_grid_file_is_read_relative_to_itself_and_cli_overrides(tmp_path, toy_npz):
    sub = tmp_path / "grids"
    sub.mkdir()
    grid = sub / "g.yaml"
    grid.write_text(
        "methods:\n  random: {}\n  full: {}\n"
        f"datasets:\n  - ../{toy_npz.name}\n  - {{name: breastmnist, size: 64}}\n"
        "ipc: [1, 2]\nseeds: [0, 1]\neval: {eval_models: 2, width: 8}\ndb: out/r.sqlite\ndata_root: data\n"
    )
    spec = _spec(str(grid))
    assert spec.datasets == ((str(toy_npz), None), ("breastmnist", 64))
    assert spec.db == sub / "out" / "r.sqlite" and spec.data_root == sub / "data"
    assert spec.protocol.eval_models == 2 and spec.protocol.width == 8 and spec.protocol.epochs == 1000
    assert spec.method_args == {"random": {}, "full": {}}
    cells = expand(spec)
    assert {(c.size, c.ipc) for c in cells if c.method == "random"} == {(None, 1), (None, 2), (64, 1), (64, 2)}
    over = _spec(str(grid), "--ipc", "3", "--epochs", "7", "--datasets", str(toy_npz))
    assert over.ipcs == (3,) and over.protocol.epochs == 7 and over.protocol.width == 8
    assert over.datasets == (str(toy_npz),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("methodz: [random]\n", "unknown key\\(s\\) methodz"),
        ("methods: [random\n", "not valid YAML"),
        ("- a\n- b\n", "a grid file is a mapping"),
        ("ipc: [one]\n", "ipc must be integers"),
        ("datasets:\n  - {name: x, sise: 3}\n", "a dataset entry is a name or"),
    ],
)
def test_bad_grid_files(tmp_path, text, message):
    grid = tmp_path / "g.yaml"
    grid.write_text(text)
    with pytest.raises(MedbenchError, match=message):
        read_grid_file(grid)


def test_bad_grid_file_exits_2(tmp_path, capsys):
    grid = tmp_path / "g.yaml"
    grid.write_text("eval: {epochs: -1}\n")
    assert main(["run", str(grid), "--db", str(tmp_path / "r.sqlite")]) == 2
    assert "epochs must be at least 1" in capsys.readouterr().err
    assert main(["run", "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


def test_shipped_example_grids_parse_and_expand():
    for path in (REPO / "examples").glob("*.yaml"):
        fields = read_grid_file(path)
        assert fields["methods"] and fields["datasets"], path
    quick = grid_spec_from_args(build_parser().parse_args(["run", str(REPO / "examples" / "quick_cpu.yaml")]))
    assert quick.protocol.width == 32 and "dm" in quick.methods


def test_every_package_is_installed():
    """pyproject installs every package under medbench/ (setuptools' find): each folder of Python
    files must be a package, or it would be left out of the wheel."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["packages"]["find"]["include"] == ["medbench*"]
    folders = {p.parent for p in (REPO / "medbench").rglob("*.py") if "__pycache__" not in p.parts}
    assert all((f / "__init__.py").is_file() for f in folders), sorted(f for f in folders
                                                                       if not (f / "__init__.py").is_file())


def _grid(toy_npz, db, **kw):
    args = dict(methods=["random", "full"], datasets=[str(toy_npz)], ipc=[1, 2], seeds=[0, 1], db=db, device="cpu")
    return medbench.run(**{**args, **FAST, **kw})


def test_process_pool_gives_the_same_numbers_as_in_process(toy_npz, tmp_path):
    local = _grid(toy_npz, tmp_path / "a.sqlite")
    pooled = _grid(toy_npz, tmp_path / "b.sqlite", workers=2)
    assert local[METRICS].equals(pooled[METRICS])
    assert list(local.cell_id) == list(pooled.cell_id)


def test_ray_gives_the_same_numbers_as_in_process(toy_npz, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = _grid(toy_npz, tmp_path / "r.sqlite", executor="ray", workers=2)
    finally:
        ray.shutdown()
    local = _grid(toy_npz, tmp_path / "l.sqlite", workers=2, executor="process")
    assert local[METRICS].equals(remote[METRICS])
    with sqlite3.connect(tmp_path / "r.sqlite") as conn:  # the driver wrote every cell, once
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT cell_id) FROM cells").fetchone() == (6, 6)


def test_worker_errors_reach_the_user_as_one_line(toy_npz, tmp_path):
    with pytest.raises(MedbenchError, match="exceeds the smallest class"):
        _grid(toy_npz, tmp_path / "x.sqlite", ipc=[30], workers=2)


def test_parser_has_no_hidden_defaults_for_overridable_options():
    args = build_parser().parse_args(["run"])
    assert isinstance(args, argparse.Namespace)
    assert args.epochs is None and args.methods is None and args.download is None
    spec = grid_spec_from_args(args)
    assert spec.methods == ("random",) and spec.protocol.epochs == 1000 and spec.db == Path("results/medbench.sqlite")
    assert spec.protocol.name == "dsa" and spec.seeds == (0, 1, 2)


def test_eval_batching_reaches_the_protocol_and_keeps_cell_ids(toy_npz, tmp_path, monkeypatch):
    import medbench.harness.runner as runner

    assert _spec("--eval-batching", "vmap").eval_batching == "vmap"
    seen = []
    real = runner.evaluate

    def spy(*args, **kwargs):
        seen.append(kwargs["batching"])
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "evaluate", spy)
    grouped = _grid(toy_npz, tmp_path / "g.sqlite", methods=["random"], seeds=[0], eval_batching="grouped")
    sequential = _grid(toy_npz, tmp_path / "s.sqlite", methods=["random"], seeds=[0])
    assert seen == ["grouped", "grouped", "auto", "auto"]
    assert list(grouped.cell_id) == list(sequential.cell_id)  # an execution choice, not a new cell
    assert (grouped[METRICS] - sequential[METRICS]).abs().max().max() < 1e-3
