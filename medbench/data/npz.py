"""Read and validate a dataset stored in the MedMNIST npz layout.

Keys ``{train,val,test}_images`` (uint8, N×H×W or N×H×W×3) and ``{train,val,test}_labels``
(integers, N×1 or N). Every problem becomes one :class:`DataError` line naming the file.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medbench.core.errors import DataError
from medbench.data.splits import Split, Splits, channel_stats

SPLITS = ("train", "val", "test")
REQUIRED_KEYS = tuple(f"{s}_{k}" for s in SPLITS for k in ("images", "labels"))


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Load the six arrays of a MedMNIST-layout file, or raise a one-line DataError."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if not zipfile.is_zipfile(path):  # np.load would call a text file "pickled (object) data"
        raise DataError(f"{path}: not an npz file (an npz is a zip archive of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in REQUIRED_KEYS if k not in npz.files]
            if missing:
                raise DataError(
                    f"{path}: missing key(s) {', '.join(missing)}; a MedMNIST-layout npz needs "
                    f"{', '.join(REQUIRED_KEYS)}"
                )
            return {k: npz[k] for k in REQUIRED_KEYS}
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable npz file ({exc})") from None


def _images_nchw(path: Path, split: str, images: np.ndarray) -> np.ndarray:
    where = f"{path}: {split}_images"
    if images.dtype != np.uint8:
        raise DataError(f"{where} has dtype {images.dtype}, expected uint8")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{where} has shape {images.shape}, expected N×H×W or N×H×W×3")
    if images.shape[0] == 0:
        raise DataError(f"{where} is empty")
    if images.shape[2] != images.shape[3]:
        raise DataError(f"{where} has non-square images {images.shape[2]}×{images.shape[3]}")
    return np.ascontiguousarray(images)


def _labels_flat(path: Path, split: str, labels: np.ndarray, n_images: int) -> np.ndarray:
    where = f"{path}: {split}_labels"
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise DataError(
            f"{where} has shape {labels.shape}: multi-label targets are not supported (single-label only)"
        )
    if labels.ndim not in (1, 2):
        raise DataError(f"{where} has shape {labels.shape}, expected N×1")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where} has dtype {labels.dtype}, expected integer class indices")
    labels = labels.reshape(-1).astype(np.int64)
    if labels.shape[0] != n_images:
        raise DataError(f"{path}: {split} has {n_images} images but {labels.shape[0]} labels")
    return labels


def validate_arrays(
    path: Path, arrays: dict[str, np.ndarray], num_classes: int | None = None
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Check shapes, dtypes, lengths and label ranges; return NCHW images, flat labels, classes."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in SPLITS:
        images = _images_nchw(path, split, arrays[f"{split}_images"])
        labels = _labels_flat(path, split, arrays[f"{split}_labels"], images.shape[0])
        out[split] = (images, labels)
    shapes = {split: out[split][0].shape[1:] for split in SPLITS}
    if len(set(shapes.values())) != 1:
        raise DataError(f"{path}: splits have different image shapes {shapes}")
    if num_classes is None:
        num_classes = int(max(labels.max() for _, labels in out.values())) + 1
    for split, (_, labels) in out.items():
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if bad.size:
            raise DataError(
                f"{path}: {split}_labels holds {int(bad[0])}, outside 0..{num_classes - 1}"
            )
    present = np.unique(out["train"][1])
    if present.size < num_classes:
        # bounded: a stray label of 10^12 must not allocate a count per possible class
        empty = np.setdiff1d(np.arange(min(num_classes, present.size + 6)), present)[:6]
        more = ", …" if num_classes - present.size > len(empty) else ""
        raise DataError(f"{path}: class(es) {', '.join(map(str, empty))}{more} have no training images "
                        f"({num_classes} classes, {present.size} with training images)")
    if num_classes < 2:
        raise DataError(f"{path}: only one class present; classification needs at least two")
    return out, num_classes


def splits_from_npz(
    path: Path,
    name: str,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] = (),
    license: str | None = None,
    meta: dict | None = None,
) -> Splits:
    """Load, validate and package a MedMNIST-layout npz as :class:`Splits`."""
    arrays, num_classes = validate_arrays(path, read_npz(path), num_classes)
    mean, std = channel_stats(arrays["train"][0])
    parts = {s: Split(torch.from_numpy(x), torch.from_numpy(y)) for s, (x, y) in arrays.items()}
    names = tuple(class_names) or tuple(str(c) for c in range(num_classes))
    return Splits(
        name=name,
        num_classes=num_classes,
        mean=mean,
        std=std,
        class_names=names,
        license=license,
        source=str(path),
        meta=dict(meta or {}),
        **parts,
    )
