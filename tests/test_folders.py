"""Class-folder datasets: layout rules, skipped files, classes, split, cache, and the real Kaggle sample."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medbench.core.errors import DataError, MedbenchError
from medbench.data import DATASETS, folders, load_dataset
from medbench.data.covid import COVID_CLASSES, COVID_FOLDER
from medbench.data.folders import allocate, load_class_folders, stratified_split
from tests.conftest import SHARED_DATA

KAGGLE_SAMPLE = SHARED_DATA / "covid19_radiography" / "kaggle_layout_sample"


def _gray(rng: np.random.Generator, h: int = 24, w: int = 24) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w), dtype=np.uint8)


def _save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_tree(root: Path, counts: dict[str, int], *, layout: str = "flat", seed: int = 0,
              colour: bool = False, masks: bool = False) -> Path:
    """``<root>/<class>/[images/]img_i.{png,jpg}``; RGB files hold equal channels unless ``colour``."""
    rng = np.random.default_rng(seed)
    for cls, n in counts.items():
        folder = root / cls / "images" if layout == "kaggle" else root / cls
        for i in range(n):
            g = _gray(rng, 24, 20 + i % 3 * 4)  # some non-square
            if colour:
                pixels = rng.integers(0, 256, size=(*g.shape, 3), dtype=np.uint8)
            elif i % 2:
                pixels = np.stack([g, g, g], axis=-1)  # grayscale saved as RGB
            else:
                pixels = g
            suffix = (".png", ".jpg", ".jpeg")[i % 3]
            _save(folder / f"img_{i}{suffix}", pixels)
        if masks:
            for i in range(n):
                _save(root / cls / "masks" / f"img_{i}.png", np.full((24, 24), 255, np.uint8))
    return root


def _files(splits) -> dict[str, list[str]]:
    with np.load(splits.meta["cache_file"]) as npz:
        return {s: [str(f) for f in npz[f"{s}_files"]] for s in ("train", "val", "test")}


def test_allocate_uses_largest_remainders():
    assert allocate(60, (0.7, 0.1, 0.2)) == [42, 6, 12]
    assert allocate(7, (0.7, 0.1, 0.2)) == [5, 1, 1]  # quotas 4.9/0.7/1.4: remainders .9 and .7 win
    assert allocate(5, (0.7, 0.1, 0.2)) == [4, 0, 1]  # exact tie 0.5/0.5: the earlier split (train) wins
    assert allocate(1, (0.7, 0.1, 0.2)) == [1, 0, 0]
    assert allocate(3, (1 / 3, 1 / 3, 1 / 3)) == [1, 1, 1]
    assert allocate(0, (0.7, 0.1, 0.2)) == [0, 0, 0]
    assert all(sum(allocate(n, (0.7, 0.1, 0.2))) == n for n in range(200))


def test_mixed_tree_skips_masks_corrupt_and_non_image_files(tmp_path, caplog):
    root = make_tree(tmp_path / "xrays", {"a": 10}, layout="flat")
    make_tree(root, {"b": 10}, layout="kaggle", masks=True, seed=1)
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "b" / "images" / "truncated.jpg").write_bytes((root / "b" / "images" / "img_1.jpg").read_bytes()[:200])
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "b" / "labels.xlsx").write_bytes(b"PK\x03\x04 spreadsheet")
    (root / "metadata.xlsx").write_bytes(b"PK\x03\x04 root-level metadata: ignored, not counted")
    (root / "a" / ".DS_Store").write_bytes(b"\x00")
    with caplog.at_level(logging.WARNING):
        splits = load_class_folders(root, size=16, cache_root=tmp_path / "cache")
    assert splits.class_names == ("a", "b")
    assert (splits.channels, splits.size) == (1, 16)  # gray, and RGB files with equal channels stay gray
    total = sum(len(getattr(splits, s)) for s in ("train", "val", "test"))
    assert total == 20  # the 10 masks of b are not images of the class
    assert splits.meta["skipped_files"] == 4
    message = next(r.getMessage() for r in caplog.records if "skipped" in r.getMessage())
    assert "4 file(s) skipped" in message and "broken.png" in message and "notes.txt" in message
    assert not any("mask" in f for files in _files(splits).values() for f in files)
    assert splits.source == str(root.resolve())


def test_colour_rule(tmp_path):
    colour = make_tree(tmp_path / "derm", {"x": 6, "y": 6}, colour=True)
    assert load_class_folders(colour, size=16, cache_root=tmp_path / "c").channels == 3  # auto keeps colour
    assert load_class_folders(colour, size=16, channels=1, cache_root=tmp_path / "c").channels == 1
    gray = make_tree(tmp_path / "xr", {"x": 6, "y": 6})
    assert load_class_folders(gray, size=16, cache_root=tmp_path / "c").channels == 1
    assert load_class_folders(gray, size=16, channels=3, cache_root=tmp_path / "c").channels == 3
    with pytest.raises(MedbenchError, match="channels must be 1, 3"):
        load_class_folders(gray, channels=2, cache_root=tmp_path / "c")


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    root = tmp_path / "ct"
    for cls, value in (("hi", 65535), ("mid", 32896)):
        for i in range(7):
            # distinct files (identical ones would be de-duplicated), all rounding to the same 8-bit level
            _save(root / cls / f"{i}.png", np.full((20, 20), value - 10 * i if cls == "hi" else value + 10 * i,
                                                    dtype=np.uint16))
    splits = load_class_folders(root, size=8, cache_root=tmp_path / "c")
    for split in (splits.train, splits.val, splits.test):
        for image, label in zip(split.images, split.labels, strict=True):
            assert int(image.float().mean().round()) == (255 if splits.class_names[label] == "hi" else 128)


def test_expected_classes_missing_and_unexpected_are_reported(tmp_path, caplog):
    root = make_tree(tmp_path / "d", {"b": 6, "a": 6, "zzz": 3})
    with caplog.at_level(logging.WARNING):
        splits = load_class_folders(root, size=16, classes=("b", "missing", "a"), cache_root=tmp_path / "c")
    assert splits.class_names == ("b", "a")  # expected order, contiguous labels
    assert splits.num_classes == 2 and set(splits.train.labels.tolist()) == {0, 1}
    assert splits.meta["missing_classes"] == ["missing"]
    text = caplog.text
    assert "missing not found" in text and "zzz" in text and "ignored" in text
    assert sum(len(getattr(splits, s)) for s in ("train", "val", "test")) == 12  # zzz not loaded


def test_class_without_readable_image_is_a_data_error(tmp_path):
    root = make_tree(tmp_path / "d", {"good": 6, "other": 6})
    (root / "bad").mkdir()
    (root / "bad" / "x.png").write_bytes(b"garbage")
    (root / "bad" / "y.dcm").write_bytes(b"DICM")
    with pytest.raises(DataError, match=r"no readable .* image in class folder.* bad"):
        load_class_folders(root, size=16, cache_root=tmp_path / "c")


def test_too_few_images_for_the_split_is_a_data_error(tmp_path):
    root = make_tree(tmp_path / "d", {"a": 5, "b": 5})
    with pytest.raises(DataError, match=r"too few images for a 0\.7/0\.1/0\.2 split: val would be empty"):
        load_class_folders(root, size=8, cache_root=tmp_path / "c")


def test_no_class_folders_is_a_data_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders found"):
        load_class_folders(tmp_path / "empty", cache_root=tmp_path / "c")
    with pytest.raises(DataError, match="not a directory"):
        load_class_folders(tmp_path / "nope", cache_root=tmp_path / "c")


def test_split_is_deterministic_and_stratified(tmp_path):
    counts = {"a": 23, "b": 11, "c": 40}
    root = make_tree(tmp_path / "d", counts)
    first = load_class_folders(root, size=8, cache_root=tmp_path / "c1")
    again = load_class_folders(root, size=8, cache_root=tmp_path / "c2")  # converted afresh
    assert first.meta["cache_file"] != again.meta["cache_file"]
    assert _files(first) == _files(again)
    for split in ("train", "val", "test"):
        assert np.array_equal(getattr(first, split).images.numpy(), getattr(again, split).images.numpy())
    files = _files(first)
    all_files = [f for fs in files.values() for f in fs]
    assert len(all_files) == len(set(all_files)) == sum(counts.values())  # disjoint, complete
    for label, (cls, n) in enumerate(counts.items()):
        got = [getattr(first, s).class_counts(3)[label] for s in ("train", "val", "test")]
        assert got == allocate(n, (0.7, 0.1, 0.2)), cls
    other_seed = load_class_folders(root, size=8, seed=1, cache_root=tmp_path / "c1")
    assert _files(other_seed)["test"] != files["test"]


def test_stratified_split_shuffles_within_each_split():
    labels = np.repeat(np.arange(3), 50)
    idx = stratified_split(labels, seed=0)
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(150))
    assert not np.all(np.diff(labels[idx["train"]]) >= 0)  # classes interleaved, not in blocks


def test_second_load_hits_the_cache_without_decoding(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "d", {"a": 8, "b": 8})
    first = load_class_folders(root, size=16, cache_root=tmp_path / "data")
    cache = Path(first.meta["cache_file"])
    assert cache.parent == tmp_path / "data" / "medbench_folders"
    assert cache.name.startswith("d_16_") and cache.suffix == ".npz"
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temporary file left
    stamp = cache.stat().st_mtime_ns

    calls = []
    real_read = folders.read_image
    monkeypatch.setattr(folders, "read_image", lambda *a, **k: calls.append(a) or real_read(*a, **k))
    second = load_class_folders(root, size=16, cache_root=tmp_path / "data")
    assert calls == [] and second.meta["cache_file"] == str(cache) and cache.stat().st_mtime_ns == stamp
    assert np.array_equal(first.train.images.numpy(), second.train.images.numpy())

    other_size = load_class_folders(root, size=8, cache_root=tmp_path / "data")
    assert len(calls) == 16 and other_size.size == 8  # another size is another cache file
    img = root / "a" / "img_0.png"
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    changed = load_class_folders(root, size=16, cache_root=tmp_path / "data")
    assert len(calls) == 32 and changed.meta["cache_file"] != str(cache)  # a touched file: new key


def test_read_only_data_root_caches_elsewhere(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "d", {"a": 7, "b": 7})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root.chmod(0o555)  # read-only by its mode, which is respected even when running as root
    try:
        splits = load_class_folders(root, size=8)
    finally:
        root.chmod(0o755)
    assert Path(splits.meta["cache_file"]).parent == tmp_path / "xdg" / "medbench" / "medbench_folders"
    assert not (root / "medbench_folders").exists()


def test_load_dataset_dispatches_a_directory(tmp_path):
    root = make_tree(tmp_path / "my xrays", {"normal": 7, "pneumonia": 7}, layout="kaggle")
    splits = load_dataset(str(root), size=16, root=tmp_path / "data")
    assert splits.name == "my xrays" and splits.class_names == ("normal", "pneumonia")
    assert Path(splits.meta["cache_file"]).parent == tmp_path / "data" / "medbench_folders"
    assert load_dataset(str(root), root=tmp_path / "data").size == 112  # the default size


@pytest.mark.parametrize("nested", [True, False])
def test_covid19_radiography_is_registered(tmp_path, nested, caplog):
    source = DATASETS.get("covid19_radiography")
    assert (source.num_classes, source.channels, source.sizes) == (4, 1, ())
    assert not source.is_present(112, tmp_path)
    with pytest.raises(DataError, match=r"kaggle\.com"):
        load_dataset("covid19_radiography", root=tmp_path, download=True)
    data = tmp_path / COVID_FOLDER if nested else tmp_path
    make_tree(data, {"Viral Pneumonia": 7, "COVID": 7, "Normal": 7}, layout="kaggle", masks=True)
    (data / "COVID.metadata.xlsx").write_bytes(b"PK")
    assert source.is_present(112, tmp_path)
    with caplog.at_level(logging.WARNING):
        splits = load_dataset("covid19_radiography", size=32, root=tmp_path)
    assert splits.class_names == ("COVID", "Normal", "Viral Pneumonia")  # the published order, minus one
    assert (splits.size, splits.channels, splits.meta["missing_classes"]) == (32, 1, ["Lung_Opacity"])
    assert "Lung_Opacity not found" in caplog.text
    assert splits.meta["cache_file"].startswith(str(tmp_path / "medbench_folders"))


def test_real_kaggle_sample(tmp_path, caplog):
    if not (KAGGLE_SAMPLE / COVID_FOLDER).is_dir():
        pytest.skip(f"real Kaggle-layout sample not found at {KAGGLE_SAMPLE}")
    # The shared folder stays untouched: the data root is a tmp folder linking to it.
    (tmp_path / COVID_FOLDER).symlink_to(KAGGLE_SAMPLE / COVID_FOLDER)
    before = sorted(p.name for p in KAGGLE_SAMPLE.iterdir())
    with caplog.at_level(logging.WARNING):
        splits = load_dataset("covid19_radiography", root=tmp_path)
    assert sorted(p.name for p in KAGGLE_SAMPLE.iterdir()) == before
    assert splits.class_names == tuple(c for c in COVID_CLASSES if c != "Lung_Opacity")
    assert "Lung_Opacity not found" in caplog.text and splits.meta["missing_classes"] == ["Lung_Opacity"]
    assert (splits.num_classes, splits.channels, splits.size) == (3, 1, 112)
    # The sample's COVID-3429.png is byte-identical to COVID-3428.png: one copy is dropped before the split.
    assert [getattr(splits, s).class_counts(3) for s in ("train", "val", "test")] == [[41, 42, 42], [6] * 3,
                                                                                     [12] * 3]
    assert splits.meta["skipped_files"] == 0 and splits.meta["duplicates_dropped"] == 1
    assert "COVID/images/COVID-3429.png (= COVID/images/COVID-3428.png)" in caplog.text
    # The sample is already 112 px gray, so the stored pixels are the files' own.
    name = _files(splits)["test"][0]
    expected = np.asarray(Image.open(tmp_path / COVID_FOLDER / name).convert("L"))
    assert np.array_equal(splits.test.images[0, 0].numpy(), expected)
    assert name.split("/")[0] == splits.class_names[int(splits.test.labels[0])]
    assert 0.2 < splits.mean[0] < 0.8 and 0.1 < splits.std[0] < 0.5


def test_links_to_folders_are_never_followed_and_duplicates_are_dropped(tmp_path, caplog):
    """A class folder holding a link to itself once loaded each image 41 times, with copies in both
    train and test; a link to the parent put class B's images under label A; a dangling link crashed."""
    root = make_tree(tmp_path / "tree", {"A": 40, "B": 40})
    os.symlink(".", root / "A" / "loop")  # A/loop -> A
    os.symlink("..", root / "A" / "up")  # A/up -> the root (B's images under A)
    os.symlink(root / "B", root / "C")  # a class folder that is a link
    os.symlink(root / "A" / "gone.png", root / "A" / "dangling.png")
    os.symlink(root / "A" / "img_0.png", root / "A" / "same_file.png")  # a link to a file: followed, then deduped
    (root / "B" / "copy_of_a0.png").write_bytes((root / "A" / "img_0.png").read_bytes())  # same content, other class
    with caplog.at_level(logging.WARNING, logger="medbench.data.folders"):
        splits = load_class_folders(root, cache_root=tmp_path / "cache")
    assert splits.class_names == ("A", "B")  # C (a link) is not a class
    files = _files(splits)
    every = files["train"] + files["val"] + files["test"]
    assert len(every) == 80 and len(set(every)) == 80  # each image once
    assert not {f.split("/", 1)[1] for f in files["train"]} & {f.split("/", 1)[1] for f in files["test"]} - {
        f"img_{i}{s}" for i in range(40) for s in (".png", ".jpg", ".jpeg")}
    assert all(f.startswith(("A/img_", "B/img_")) for f in every)
    assert list(np.bincount(np.concatenate([splits.train.labels.numpy(), splits.val.labels.numpy(),
                                            splits.test.labels.numpy()]))) == [40, 40]
    text = caplog.text
    assert "3 folder link(s) not followed" in text
    assert "2 duplicate image(s) dropped" in text and "A/same_file.png (= A/img_0.png)" in text
    assert splits.meta["duplicates_dropped"] == 2 and "A/dangling.png" in text
