"""Exact duplicates within and across splits: counted on every load, printed by `datasets --check`,
stored with each cell's dataset facts, and removed from val and test on request (another dataset)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_arrays, write_npz

from medbench.cli.main import main
from medbench.data import duplicates
from medbench.data.catalog import load_dataset
from medbench.evaluation import Protocol
from medbench.harness.grid import GridSpec, expand


@pytest.fixture
def planted(tmp_path):
    """A toy npz with known copies: 3 val and 2 test images copied from train, 1 test image copied
    from val, 2 extra copies inside train and 1 inside test."""
    arrays = make_arrays(n=(40, 12, 20))
    train, val, test = arrays["train_images"], arrays["val_images"], arrays["test_images"]
    val[[0, 1, 2]] = train[[5, 6, 7]]
    test[[0, 1]] = train[[8, 9]]
    test[2] = val[5]
    train[[30, 31]] = train[[10, 11]]
    test[10] = test[11]
    return write_npz(tmp_path / "planted.npz", arrays)


def test_planted_duplicates_are_counted(planted, tmp_path):
    splits = load_dataset(str(planted), root=tmp_path / "root")
    found = duplicates.found(splits)
    assert (found.val_in_train, found.test_in_train, found.test_in_val) == (3, 2, 1)
    assert found.within == {"train": 2, "val": 0, "test": 1}
    assert splits.describe()["duplicates"]["test_in_train"] == 2  # stored with every cell's dataset facts
    assert "3 val and 2 test images are also in train, 1 test images also in val" in found.line("planted")
    # the hashes are cached under the data root and read back on the next load
    assert list((tmp_path / "root" / duplicates.CACHE_DIR).glob("planted_*.npz"))
    again = load_dataset(str(planted), root=tmp_path / "root")
    assert duplicates.found(again) == found and not again.meta.get("created_files")


def test_dropping_removes_the_cross_split_copies_from_val_and_test(planted, tmp_path):
    full = load_dataset(str(planted), root=tmp_path)
    kept = load_dataset(str(planted), root=tmp_path, drop_duplicates=True)
    assert (len(kept.train), len(kept.val), len(kept.test)) == (40, 12 - 3, 20 - 3)
    assert kept.meta["duplicates_dropped_from"] == {"val": 3, "test": 3}
    train = set(duplicates.image_hashes(full.train.images).tolist())
    assert not set(duplicates.image_hashes(kept.val.images).tolist()) & train
    assert not set(duplicates.image_hashes(kept.test.images).tolist()) & (
        train | set(duplicates.image_hashes(kept.val.images).tolist()))


def test_a_dataset_without_its_duplicates_is_another_dataset(planted):
    spec = GridSpec(methods=("random",), datasets=(str(planted),), ipcs=(1,), seeds=(0,), protocol=Protocol(width=4))
    plain = expand(spec)
    dropped = expand(GridSpec(**{**spec.__dict__, "drop_duplicates": True}))
    assert plain[0].cell_id != dropped[0].cell_id and dropped[0].drop_duplicates


def test_datasets_check_prints_the_facts(planted, capsys, tmp_path):
    assert main(["datasets", "--check", str(planted), "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 val and 2 test images are also training images, 1 test images also val images" in out
    assert "| test    |       20 |" in out and "majority class" in out


@pytest.mark.realdata
@pytest.mark.parametrize("ref, expected", [
    ("medmnist/bloodmnist.npz", (5, 4, 0, 7)),
    ("medmnist/breastmnist.npz", (0, 1, 0, 0)),
    ("medmnist/pneumoniamnist.npz", (8, 0, 0, 18)),
    ("covid19_radiography/covid19_radiography_3class.npz", (8, 16, 1, 27)),
])
def test_the_real_files_duplicates(shared_data, tmp_path, ref, expected):
    found = duplicates.found(load_dataset(str(shared_data / ref), root=tmp_path))
    assert (found.val_in_train, found.test_in_train, found.test_in_val, found.within["train"]) == expected


def test_hashes_see_pixels_and_shape():
    a = np.zeros((2, 1, 4, 4), dtype=np.uint8)
    b = np.zeros((1, 1, 2, 8), dtype=np.uint8)  # the same bytes in another shape
    assert duplicates.image_hashes(a)[0] == duplicates.image_hashes(a)[1] != duplicates.image_hashes(b)[0]


def test_near_duplicates_find_a_brightened_copy(tmp_path, capsys):
    arrays = make_arrays(n=(40, 12, 20), size=32)
    arrays["test_images"][3] = np.clip(arrays["train_images"][4].astype(int) + 3, 0, 255).astype(np.uint8)
    path = write_npz(tmp_path / "near.npz", arrays)
    splits = load_dataset(str(path), root=tmp_path)
    assert duplicates.found(splits).test_in_train == 0  # not an exact copy
    assert duplicates.near(splits)["test_in_train"] >= 1  # but the same image
    assert main(["datasets", "--check", str(path), "--data-root", str(tmp_path), "--near"]) == 0
    assert "Near-duplicates (equal perceptual hash" in capsys.readouterr().out
