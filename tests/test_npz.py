"""Every bad-input case of the npz validator gives one DataError line naming the file."""

import numpy as np
import pytest
from conftest import make_arrays, write_npz

from medbench.core.errors import DataError
from medbench.data import load_dataset


def _load(tmp_path, arrays):
    return load_dataset(str(write_npz(tmp_path / "bad.npz", arrays)))


def test_good_file_loads_with_inferred_classes_and_stats(toy_npz, toy_rgb_npz):
    splits = load_dataset(str(toy_npz))
    assert (splits.num_classes, splits.channels, splits.size) == (3, 1, 12)
    assert splits.train.images.dtype.is_floating_point is False
    assert len(splits.train) == 40 and len(splits.val) == 12 and len(splits.test) == 20
    x = splits.normalize(splits.train.images)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-2  # stats from train
    rgb = load_dataset(str(toy_rgb_npz))
    assert (rgb.channels, rgb.size, len(rgb.mean)) == (3, 16, 3)


def test_labels_of_shape_n_are_accepted(tmp_path):
    arrays = make_arrays()
    arrays["train_labels"] = arrays["train_labels"].reshape(-1)
    assert _load(tmp_path, arrays).num_classes == 3


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.pop("val_images"), "missing key"),
        (lambda a: a.update(train_images=a["train_images"].astype(np.float32)), "dtype float32, expected uint8"),
        (lambda a: a.update(train_images=a["train_images"][:, None, None]), "expected N×H×W"),
        (lambda a: a.update(test_images=a["test_images"][:, :10, :10]), "different image shapes"),
        (lambda a: a.update(train_images=a["train_images"][:-1]), "train has 39 images but 40 labels"),
        (lambda a: a.update(val_labels=a["val_labels"].astype(np.int64) - 1), "outside 0..2"),
        (lambda a: a.update(train_labels=np.where(a["train_labels"] == 1, 2, a["train_labels"])),
         "class\\(es\\) 1 have no training images"),
        (lambda a: a.update(train_labels=a["train_labels"].astype(np.float32)), "expected integer class"),
        (lambda a: a.update(train_labels=np.zeros((40, 3), np.uint8)), "multi-label"),
        (lambda a: a.update(train_images=a["train_images"][:, :, :10]), "non-square"),
    ],
)
def test_bad_input_is_one_line_naming_the_file(tmp_path, mutate, message):
    arrays = make_arrays()
    mutate(arrays)
    with pytest.raises(DataError, match=message) as info:
        _load(tmp_path, arrays)
    text = str(info.value)
    assert "\n" not in text and "bad.npz" in text


def test_labels_above_medmnist_class_count_are_rejected(tmp_path):
    from medbench.data.npz import splits_from_npz

    path = write_npz(tmp_path / "x.npz", make_arrays(classes=3))
    with pytest.raises(DataError, match=r"outside 0\.\.1"):
        splits_from_npz(path, "x", num_classes=2)


def test_not_a_zip_and_missing_file(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="not an npz file"):
        load_dataset(str(junk))
    with pytest.raises(DataError, match="file not found"):
        load_dataset(str(tmp_path / "absent.npz"))
