"""MedMNIST flags through the medmnist package: metadata from INFO, files from a data root."""

import numpy as np
import pytest
from conftest import write_npz

from medbench.core.errors import DataError, MedbenchError
from medbench.data import DATASETS, list_datasets, load_dataset
from medbench.data.medmnist import medmnist_file

EIGHT = ["pathmnist", "dermamnist", "octmnist", "bloodmnist", "tissuemnist", "organamnist", "organcmnist",
         "organsmnist"]


def breast_like(size: int) -> dict:
    """Generated arrays with BreastMNIST's official split sizes (546/78/156, 2 classes, gray)."""
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", 546), ("val", 78), ("test", 156)):
        out[f"{split}_images"] = rng.integers(0, 255, (n, size, size), dtype=np.uint8)
        out[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1).astype(np.uint8)
    return out


def test_all_2d_flags_registered_with_info_metadata():
    from medmnist import INFO

    names = set(list_datasets())
    assert set(EIGHT) | {"pneumoniamnist", "breastmnist", "retinamnist", "chestmnist"} <= names
    assert not any(n.endswith("3d") for n in names)
    blood = DATASETS.get("bloodmnist")
    assert blood.num_classes == len(INFO["bloodmnist"]["label"]) == 8
    assert blood.channels == 3 and blood.sizes == (28, 64, 128, 224)
    assert blood.license == INFO["bloodmnist"]["license"]


def test_chestmnist_is_unsupported_with_reason(tmp_path):
    assert "multi-label" in DATASETS.get("chestmnist").unsupported
    with pytest.raises(MedbenchError, match="chestmnist is not supported: multi-label"):
        load_dataset("chestmnist", root=tmp_path)


@pytest.mark.parametrize("size", [28, 64])
def test_flag_loads_from_root_at_each_size(tmp_path, size):
    write_npz(medmnist_file("breastmnist", size, tmp_path), breast_like(size))
    assert medmnist_file("breastmnist", 28, tmp_path).name == "breastmnist.npz"
    splits = load_dataset("breastmnist", size=size, root=tmp_path)
    assert splits.size == size and splits.num_classes == 2
    assert splits.class_names[0] == "malignant" and splits.license == "CC BY 4.0"


def test_missing_file_names_path_and_download(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("bloodmnist", size=64, root=tmp_path)
    assert str(tmp_path / "bloodmnist_64.npz") in str(info.value) and "--download" in str(info.value)


def test_wrong_split_sizes_are_rejected(tmp_path):
    arrays = breast_like(28)
    arrays["test_images"], arrays["test_labels"] = arrays["test_images"][:100], arrays["test_labels"][:100]
    write_npz(tmp_path / "breastmnist.npz", arrays)
    with pytest.raises(DataError, match="differ from medmnist"):
        load_dataset("breastmnist", root=tmp_path)


def test_unpublished_size_is_rejected(tmp_path):
    with pytest.raises(MedbenchError, match="size 32 is not published"):
        load_dataset("bloodmnist", size=32, root=tmp_path)


def test_download_goes_through_medmnist_with_its_md5(tmp_path, monkeypatch):
    """No network here: intercept torchvision's download_url, which medmnist calls."""
    import torchvision.datasets.utils as tv_utils
    from medmnist import INFO

    calls = []

    def fake_download_url(url, root, filename=None, md5=None):
        calls.append((url, filename, md5))
        write_npz(tmp_path / filename, breast_like(64))

    monkeypatch.setattr(tv_utils, "download_url", fake_download_url)
    splits = load_dataset("breastmnist", size=64, root=tmp_path, download=True)
    assert splits.size == 64
    assert calls == [(INFO["breastmnist"]["url_64"], "breastmnist_64.npz", INFO["breastmnist"]["MD5_64"])]


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(tv_utils, "download_url", offline)
    with pytest.raises(DataError, match=r"download of breastmnist\.npz failed") as info:
        load_dataset("breastmnist", root=tmp_path / "new_root", download=True)
    assert "\n" not in str(info.value)
