"""Export → verify → tamper → reload through the ``package`` method; output path safety."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _sharing_cells import random_cell
from conftest import FAST, SHARED_DATA, make_arrays, write_npz

import medbench
from medbench.cli.main import main
from medbench.core.errors import MedbenchError
from medbench.data import package as package_format
from medbench.data.package import MANIFEST, NPZ, SHEET, verify_package
from medbench.sharing import export as export_mod
from medbench.sharing.export import export_cell


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def cell(tmp_path):
    return random_cell(tmp_path)


def test_export_verify_tamper_and_reload(cell, tmp_path, capsys):
    db, cell_id, data = cell
    pkg = tmp_path / "pkg"
    code, out, err = _cli(capsys, "export", cell_id[:6], "--db", str(db), "--out", str(pkg))
    assert code == 0, err
    assert sorted(p.name for p in pkg.iterdir()) == sorted([MANIFEST, NPZ, SHEET])

    manifest = json.loads((pkg / MANIFEST).read_text())
    assert manifest["source_cell"]["cell_id"] == cell_id
    assert manifest["method"]["name"] == "random" and manifest["ipc"] == 2
    assert manifest["n_images"] == 6 and manifest["class_counts"] == [2, 2, 2]
    assert manifest["compression_ratio"] == pytest.approx(6 / 40)
    assert manifest["condensed_bytes"] == 6 * 16 * 16 * 4
    assert "license" in manifest["dataset"] and manifest["dataset"]["class_names"] == ["class 0", "class 1", "class 2"]
    assert manifest["evaluation"]["protocol"]["width"] == FAST["width"]
    assert len(manifest["evaluation"]["models"]) == FAST["eval_models"]
    assert manifest["environment"]["stored_with_cell"]["packages"]["torch"]
    assert manifest["privacy"]["contains_real_images"] is True
    with np.load(pkg / NPZ) as npz:
        assert npz["train_images"].dtype == np.uint8 and npz["train_images"].shape == (6, 16, 16)
        assert npz["train_labels"].shape == (6, 1)
        assert npz["images_float32"].shape == (6, 1, 16, 16)
        assert "extra_train_indices" not in npz.files  # source-internal; not shipped
        # the shipped pixels are exactly real training images
        real = make_arrays(size=16)["train_images"]
        assert all((real == img).all(axis=(1, 2)).any() for img in npz["train_images"])

    code, out, _ = _cli(capsys, "verify", str(pkg))
    assert code == 0 and "ok" in out

    # One changed byte in the npz, the figure or the manifest: exit 1 with the file named.
    for name, offset in ((NPZ, 200), (SHEET, 300), (MANIFEST, 40)):
        bad = tmp_path / f"bad_{name}"
        bad.mkdir()
        for f in pkg.iterdir():
            (bad / f.name).write_bytes(f.read_bytes())
        _flip_byte(bad / name, offset)
        code, _, err = _cli(capsys, "verify", str(bad))
        assert code == 1, name
        assert name in err or "JSON" in err

    # The receiving site: its own copy of the dataset, the package as the training set.
    df = medbench.run(methods=["package"], datasets=[str(data)], ipc=[2], method_args={"package": {"path": str(pkg)}},
                      db=tmp_path / "receiver.sqlite", device="cpu", **FAST)
    source = medbench.results(db)
    assert df.status.iloc[0] == "done"
    # same pixels, same protocol and seed: identical scores to the source's evaluation
    assert df.test_accuracy.iloc[0] == pytest.approx(source.test_accuracy.iloc[0])
    assert df.compression_ratio.iloc[0] == pytest.approx(6 / 40)


def test_package_must_match_the_receiving_dataset(cell, tmp_path, capsys):
    db, cell_id, data = cell
    pkg = export_cell(db, cell_id, tmp_path / "pkg")
    other = write_npz(tmp_path / "four.npz", make_arrays(size=16, classes=4))
    with pytest.raises(MedbenchError, match="3 classes, the dataset is 1-channel 16 px with 4 classes"):
        medbench.run(methods=["package"], datasets=[str(other)], ipc=[2], method_args={"package": {"path": str(pkg)}},
                     db=tmp_path / "x.sqlite", device="cpu", **FAST)
    code, _, err = _cli(capsys, "run", "--methods", "package", "--method-args", f"package:path={pkg}",
                        "--datasets", str(data), "--ipc", "3", "--db", str(tmp_path / "y.sqlite"), "--device", "cpu",
                        "--no-progress", "--epochs", "1", "--width", "4", "--eval-models", "1")
    assert code == 2 and "run it with --ipc 2" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(capsys, "run", "--methods", "package", "--datasets", str(data), "--ipc", "2",
                        "--db", str(tmp_path / "z.sqlite"))
    assert code == 2 and "package:path=DIR" in err


def test_output_path_validation(cell, tmp_path, capsys):
    db, cell_id, _ = cell
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    code, _, err = _cli(capsys, "export", cell_id, "--db", str(db), "--out", str(existing))
    assert code == 2 and "--force" in err
    assert (existing / "keep.txt").read_text() == "mine"

    escape = f"{tmp_path}/sub/../../escaped"
    code, _, err = _cli(capsys, "export", cell_id, "--db", str(db), "--out", escape)
    assert code == 2 and "'..'" in err
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "sub").exists()

    target = tmp_path / "real_target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    code, _, err = _cli(capsys, "export", cell_id, "--db", str(db), "--out", str(link))
    assert code == 2 and "symbolic link" in err and not any(target.iterdir())

    code, _, _ = _cli(capsys, "export", cell_id, "--db", str(db), "--out", str(existing), "--force")
    assert code == 0 and not (existing / "keep.txt").exists() and verify_package(existing).ok
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp or backup left


def test_manifest_cannot_point_outside_the_package(cell, tmp_path):
    db, cell_id, _ = cell
    pkg = export_cell(db, cell_id, tmp_path / "pkg")
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    manifest = json.loads((pkg / MANIFEST).read_text())
    manifest["files"]["../secret.txt"] = {"sha256": "0" * 64, "bytes": 7}
    (pkg / MANIFEST).write_text(package_format.manifest_text({k: v for k, v in manifest.items()
                                                          if k != package_format.SELF_HASH_KEY}))
    problems = verify_package(pkg).problems
    assert any("not a plain file name" in p for p in problems)


def test_failed_export_leaves_nothing(cell, tmp_path, monkeypatch):
    db, cell_id, _ = cell

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_mod, "contact_sheet", broken)
    with pytest.raises(RuntimeError):
        export_cell(db, cell_id, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pkg")]


def test_cell_prefix_must_be_unique_and_known(cell, tmp_path, capsys):
    db, _, _ = cell
    code, _, err = _cli(capsys, "export", "zzzz", "--db", str(db), "--out", str(tmp_path / "p"))
    assert code == 2 and "no cell id starts with 'zzzz'" in err
    code, _, err = _cli(capsys, "export", "", "--db", str(db), "--out", str(tmp_path / "p"))
    assert code == 2


@pytest.mark.realdata
def test_real_pneumoniamnist_random_package_roundtrip(tmp_path):
    root = SHARED_DATA / "medmnist"
    if not (root / "pneumoniamnist.npz").is_file():
        pytest.skip(f"real data not found at {root} (expected ../shared/data beside the checkout)")
    protocol = {**FAST, "epochs": 2, "eval_models": 1}
    db = tmp_path / "r.sqlite"
    df = medbench.run(methods=["random"], datasets=["pneumoniamnist"], ipc=[10], data_root=root, db=db,
                      device="cpu", **protocol)
    pkg = export_cell(db, str(df.cell_id.iloc[0]), tmp_path / "pkg")
    result = verify_package(pkg)
    assert result.ok, result.problems
    assert result.manifest["dataset"]["license"] == "CC BY 4.0"
    assert result.manifest["dataset"]["class_names"] == ["normal", "pneumonia"]
    with np.load(pkg / NPZ) as npz:
        assert npz["train_images"].shape == (20, 28, 28)
    back = medbench.run(methods=["package"], datasets=["pneumoniamnist"], ipc=[10], data_root=root,
                        method_args={"package": {"path": str(pkg)}}, db=tmp_path / "recv.sqlite", device="cpu",
                        **protocol)
    assert back.test_accuracy.iloc[0] == pytest.approx(df.test_accuracy.iloc[0])
    assert (pkg / SHEET).is_file()
