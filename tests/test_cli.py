"""The command line: one line and exit status 2 for every kind of bad input, nothing written."""

import subprocess
import sys

import pytest
from conftest import ONE_THREAD, make_arrays, write_npz

from medbench.cli.gridargs import parse_method_args
from medbench.cli.main import main
from medbench.core.errors import MedbenchError

QUICK = ["--eval-models", "2", "--epochs", "2", "--full-epochs", "1", "--width", "4", "--seeds", "0", "--no-progress"]
FAST_ARGS = [*QUICK, "--device", "cpu"]


def _cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse exits itself
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--methods", "nope"], "unknown method 'nope'; available:"),
        (["--datasets", "nosuchset"], "unknown dataset 'nosuchset'; available:"),
        (["--ipc", "0"], "IPC must be at least 1"),
        (["--ipc", "a"], "expected comma-separated integers"),
        (["--epochs", "-3"], "must be positive"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--device", "cuda"], "CUDA is not available"),
        (["--size", "32", "--datasets", "bloodmnist"], "size 32 is not available"),
        (["--datasets", "chestmnist"], "chestmnist is not supported"),
        (["--method-args", "random:foo=1"], "unknown setting foo"),
        (["--method-args", "dc:foo=1"], "not in the grid"),
        (["--datasets", "missing/dir/x.npz"], "no such dataset file"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, argv, message):
    if argv[:2] == ["--device", "cuda"]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA present")
    db = tmp_path / "r.sqlite"
    code, _, err = _cli(capsys, "run", *argv, "--db", str(db), "--data-root", str(tmp_path), *QUICK)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not db.exists()  # nothing written


def test_missing_medmnist_file_exits_2_and_mentions_download(capsys, tmp_path):
    code, _, err = _cli(capsys, "run", "--datasets", "bloodmnist", "--data-root", str(tmp_path),
                        "--db", str(tmp_path / "r.sqlite"), *FAST_ARGS)
    assert code == 2 and "bloodmnist.npz: not found; add --download" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_npz_exits_2_and_writes_no_cell(capsys, tmp_path):
    arrays = make_arrays()
    arrays["train_labels"] = arrays["train_labels"].astype("float32")
    path = write_npz(tmp_path / "bad.npz", arrays)
    db = tmp_path / "r.sqlite"
    code, _, err = _cli(capsys, "run", "--datasets", str(path), "--ipc", "1", "--db", str(db), *FAST_ARGS)
    assert code == 2 and "bad.npz: train_labels has dtype float32" in err
    assert not db.exists()  # the data are checked before the database is created


def test_run_then_results_in_every_format(capsys, tmp_path, toy_npz):
    db = tmp_path / "r.sqlite"
    code, out, _ = _cli(capsys, "run", "--methods", "random,full", "--datasets", str(toy_npz), "--ipc", "1,2",
                        "--db", str(db), *FAST_ARGS)
    assert code == 0 and "| toy" in out and "full" in out
    code, out, _ = _cli(capsys, "results", "--db", str(db))
    assert code == 0 and out.count("| toy") == 3
    code, out, _ = _cli(capsys, "results", "--db", str(db), "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("dataset,size,method,ipc")
    code, out, _ = _cli(capsys, "results", "--db", str(db), "--format", "json")
    assert code == 0 and '"test_accuracy"' in out
    code, _, err = _cli(capsys, "results", "--db", str(tmp_path / "none.sqlite"))
    assert code == 2 and "no results database" in err


def test_methods_and_datasets_listings(capsys, tmp_path):
    code, out, _ = _cli(capsys, "methods")
    assert code == 0 and "random" in out and "class-balanced" in out
    code, out, _ = _cli(capsys, "methods", "f*")
    assert "full" in out and "random" not in out
    write_npz(tmp_path / "breastmnist.npz", make_arrays())
    code, out, _ = _cli(capsys, "datasets", "--data-root", str(tmp_path))
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert "| yes" in rows["breastmnist"] and "| no" in rows["bloodmnist"]
    assert "multi-label" in rows["chestmnist"]


def test_method_args_forms(tmp_path):
    assert parse_method_args(["dc:lr_img=0.1,init=noise"], ["dc", "random"]) == {
        "dc": {"lr_img": "0.1", "init": "noise"}}
    assert parse_method_args(["iterations=5"], ["dm"]) == {"dm": {"iterations": "5"}}
    yaml_file = tmp_path / "args.yaml"
    yaml_file.write_text("dc:\n  lr_img: 0.2\n")
    assert parse_method_args([str(yaml_file)], ["dc"]) == {"dc": {"lr_img": 0.2}}
    with pytest.raises(MedbenchError, match="say which method"):
        parse_method_args(["iterations=5"], ["dc", "dm"])


def test_console_script_help_and_usage_error():
    help_text = subprocess.run([sys.executable, "-m", "medbench", "run", "--help"], capture_output=True,
                               text=True, check=True, env=ONE_THREAD).stdout
    assert "--eval-models" in help_text and "--download" in help_text
    bad = subprocess.run([sys.executable, "-m", "medbench", "frobnicate"], capture_output=True, text=True,
                         env=ONE_THREAD)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_run_writes_the_report_when_asked(capsys, tmp_path, toy_npz):
    db, out = tmp_path / "r.sqlite", tmp_path / "report"
    code, stdout, _ = _cli(capsys, "run", "--methods", "random", "--datasets", str(toy_npz), "--ipc", "1",
                           "--db", str(db), "--report", str(out), *FAST_ARGS)
    assert code == 0 and (out / "leaderboard.md").is_file() and (out / "index.html").is_file()
    assert f"report: {out / 'leaderboard.md'}" in stdout
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _cli(capsys, "run", "--datasets", str(toy_npz), "--ipc", "1", "--db", str(tmp_path / "s.sqlite"),
                        "--report", str(blocker), *FAST_ARGS)
    assert code == 2 and "exists and is not a folder" in err and not (tmp_path / "s.sqlite").exists()
