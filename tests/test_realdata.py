"""Integration tests on the real files in ../shared/data (skipped with a reason when absent)."""

import pytest
from conftest import FAST

import medbench
from medbench.data import load_dataset

pytestmark = pytest.mark.realdata


@pytest.mark.parametrize(
    ("ref", "classes", "channels", "n_train"),
    [("bloodmnist", 8, 3, 11959), ("pneumoniamnist", 2, 1, 4708), ("breastmnist", 2, 1, 546)],
)
def test_real_medmnist_files_load(shared_data, ref, classes, channels, n_train):
    splits = load_dataset(ref, root=shared_data / "medmnist")
    assert (splits.num_classes, splits.channels, splits.size, len(splits.train)) == (classes, channels, 28, n_train)
    assert all(0.05 < s < 0.5 for s in splits.std)


@pytest.mark.parametrize(("name", "size"), [("covid19_radiography_3class.npz", 28),
                                            ("covid19_radiography_3class_64.npz", 64)])
def test_real_covid_npz_loads_as_user_dataset(shared_data, name, size):
    splits = load_dataset(str(shared_data / "covid19_radiography" / name))
    assert (splits.num_classes, splits.channels, splits.size) == (3, 1, size)
    assert splits.train.class_counts(3) == [2531, 7134, 936]


def test_small_real_grid_end_to_end(shared_data, tmp_path):
    summary = medbench.run(methods=["random"], datasets=["breastmnist"], ipc=[1, 5], seeds=[0],
                           data_root=shared_data / "medmnist", db=tmp_path / "r.sqlite", device="cpu", **FAST)
    assert list(summary.status) == ["done", "done"]
    assert summary.test_accuracy.between(0, 1).all() and summary.test_auc.notna().all()
