"""Exact duplicates within and across splits: a test image that is also a training image is not
unseen, and a score on it says less than it seems.

Every image is hashed (blake2b of its pixels and shape); the counts are: duplicates within each
split (copies beyond the first), val images whose pixels appear in train, test images whose pixels
appear in train, and test images whose pixels appear in val. The hashes are cached per dataset file
(keyed by its path, size and modification time) under the data root, or, where the data root is not
writable (shared, read-only data), under the user's cache folder, as the class-folder cache is.

``drop`` removes the cross-split copies from val (those in train) and from test (those in train or
val): the result is another dataset, part of a cell's identity, never pooled with the original.
Near-duplicates (resized, re-encoded or slightly shifted copies) are not found by exact hashes;
:func:`near` counts images across splits whose perceptual hash (``imagehash.phash``, a DCT of the
downscaled image) equals a training image's, as an option of ``medbench datasets --check --near``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medbench.core.files import atomic_open
from medbench.data.cache import fallback_root, may_write
from medbench.data.splits import Split, Splits

CACHE_DIR = "medbench_hashes"
SPLITS = ("train", "val", "test")


def image_hashes(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """One 16-hex-digit digest per image (pixels and shape)."""
    array = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    shape = repr(array.shape[1:]).encode()
    return np.asarray([hashlib.blake2b(shape + np.ascontiguousarray(img).tobytes(), digest_size=8).hexdigest()
                       for img in array])


@dataclass(frozen=True)
class Duplicates:
    """Exact-duplicate counts of one dataset."""

    within: dict[str, int]  # split -> copies beyond the first of an image inside that split
    val_in_train: int
    test_in_train: int
    test_in_val: int

    @property
    def across(self) -> int:
        return self.val_in_train + self.test_in_train + self.test_in_val

    def facts(self) -> dict[str, int]:
        """The counts as stored with every cell's dataset facts."""
        return {**{f"within_{s}": n for s, n in self.within.items()}, "val_in_train": self.val_in_train,
                "test_in_train": self.test_in_train, "test_in_val": self.test_in_val}

    def line(self, name: str) -> str:
        """One line for a run's log (empty where there is nothing to say)."""
        if not self.across and not any(self.within.values()):
            return ""
        within = ", ".join(f"{n} in {s}" for s, n in self.within.items() if n)
        return (f"medbench: {name}: exact duplicates across splits: {self.val_in_train} val and {self.test_in_train} "
                f"test images are also in train, {self.test_in_val} test images also in val"
                + (f"; within splits: {within}" if within else "")
                + ("; --drop-duplicates removes the cross-split ones from val and test" if self.across else ""))


def count(hashes: dict[str, np.ndarray]) -> Duplicates:
    """:class:`Duplicates` of the per-split hashes."""
    within = {s: int(len(h) - len(np.unique(h))) for s, h in hashes.items()}
    train, val = np.unique(hashes["train"]), np.unique(hashes["val"])
    return Duplicates(within, int(np.isin(hashes["val"], train).sum()), int(np.isin(hashes["test"], train).sum()),
                      int(np.isin(hashes["test"], val).sum()))


def split_hashes(splits: Splits, cache_root: Path | None = None) -> tuple[dict[str, np.ndarray], list[Path]]:
    """Per-split image hashes, from the cache where the dataset is a file that did not change, and
    the files and folders this call created for the cache (so a run that then fails validation can
    remove them)."""
    source = Path(splits.meta.get("cache_file") or splits.source) if splits.source else None
    path = _cache_path(source, splits, cache_root) if source is not None and source.is_file() else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as cached:
            if all(len(cached[s]) == len(getattr(splits, s)) for s in SPLITS):
                return {s: cached[s] for s in SPLITS}, []
    hashes = {s: image_hashes(getattr(splits, s).images) for s in SPLITS}
    created = _save(path, hashes) if path is not None else []
    return hashes, created


def check(splits: Splits, cache_root: Path | None = None) -> Splits:
    """``splits`` with its exact duplicates counted in ``meta["duplicates"]`` (and a cache made for
    them listed in ``meta["created_files"]``/``["created_dirs"]``)."""
    hashes, created = split_hashes(splits, cache_root)
    meta = {**splits.meta, "duplicates": count(hashes).facts()}
    if created:
        meta["created_files"] = [*meta.get("created_files", []), str(created[0])]
        meta["created_dirs"] = [*meta.get("created_dirs", []), *map(str, created[1:])]
    return dataclasses.replace(splits, meta=meta)


def found(splits: Splits) -> Duplicates:
    """The :class:`Duplicates` counted by :func:`check` (stored in the dataset facts)."""
    facts = splits.meta["duplicates"]
    return Duplicates({s: facts[f"within_{s}"] for s in SPLITS}, facts["val_in_train"], facts["test_in_train"],
                      facts["test_in_val"])


def drop(splits: Splits, cache_root: Path | None = None) -> Splits:
    """``splits`` without the val images that are in train and the test images in train or val."""
    hashes, _ = split_hashes(splits, cache_root)
    keep_val = ~np.isin(hashes["val"], hashes["train"])
    keep_test = ~np.isin(hashes["test"], np.concatenate([hashes["train"], hashes["val"]]))

    def subset(split: Split, keep: np.ndarray) -> Split:
        index = torch.from_numpy(np.flatnonzero(keep))
        return Split(split.images[index], split.labels[index])

    dropped = {"val": int((~keep_val).sum()), "test": int((~keep_test).sum())}
    meta = {**splits.meta, "duplicates_dropped_from": dropped}
    return dataclasses.replace(splits, val=subset(splits.val, keep_val), test=subset(splits.test, keep_test),
                               meta=meta)


def perceptual_hashes(images: torch.Tensor) -> np.ndarray:
    """``imagehash.phash`` of every image (grayscale; 64-bit DCT hash), as hex strings."""
    import imagehash
    from PIL import Image

    array = images.cpu().numpy()
    gray = array.mean(axis=1) if array.shape[1] > 1 else array[:, 0]
    return np.asarray([str(imagehash.phash(Image.fromarray(img.astype(np.uint8)))) for img in gray])


def near(splits: Splits) -> dict[str, int]:
    """Val and test images whose perceptual hash equals a training image's (exact copies included),
    and test images whose hash equals a val image's: likely the same patient's image, resized,
    re-encoded or nudged."""
    hashes = {s: perceptual_hashes(getattr(splits, s).images) for s in SPLITS}
    return {"val_in_train": int(np.isin(hashes["val"], hashes["train"]).sum()),
            "test_in_train": int(np.isin(hashes["test"], hashes["train"]).sum()),
            "test_in_val": int(np.isin(hashes["test"], hashes["val"]).sum())}


def _cache_path(source: Path, splits: Splits, cache_root: Path | None) -> Path | None:
    stat = source.stat()
    identity = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{splits.size}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    name = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', splits.name)}_{key}.npz"
    for base in (cache_root or source.parent, fallback_root()):
        folder = base / CACHE_DIR
        if (folder / name).is_file() or may_write(folder):
            return folder / name
    return None


def _save(path: Path, hashes: dict[str, np.ndarray]) -> list[Path]:
    """Write the cache; the file and the folders made for it (none where writing failed)."""
    made = [p for p in (path.parent, path.parent.parent) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as fh:
            np.savez(fh, **hashes)
    except OSError:  # a cache only: a full or read-only disk costs the next load a few seconds
        return []
    return [path, *made]
