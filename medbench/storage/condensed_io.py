"""Condensed sets on disk: an npz in the MedMNIST layout, written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medbench.core.errors import DataError
from medbench.core.files import atomic_open, npz_arrays
from medbench.data.splits import denormalize
from medbench.distill.contract import CondensedSet


def save_condensed(path: Path, condensed: CondensedSet, mean: Sequence[float], std: Sequence[float]) -> int:
    """Write ``train_images`` (uint8, MedMNIST layout) and ``train_labels`` (N×1), plus the exact
    float32 images, the learned lr and any extras. Returns the file size in bytes."""
    images = condensed.images.detach().float().cpu()
    as_uint8 = denormalize(images, mean, std).permute(0, 2, 3, 1).numpy()
    if as_uint8.shape[-1] == 1:
        as_uint8 = as_uint8[..., 0]
    labels = condensed.labels.detach().cpu()
    arrays = {
        "train_images": as_uint8,
        "train_labels": condensed.hard_labels().detach().cpu().reshape(-1, 1).numpy(),
        "images_float32": images.numpy(),
        "norm_mean": np.asarray(mean, dtype=np.float32),
        "norm_std": np.asarray(std, dtype=np.float32),
    }
    if labels.is_floating_point():
        arrays["soft_labels"] = labels.float().numpy()
    if condensed.lr is not None:
        arrays["learned_lr"] = np.asarray(condensed.lr, dtype=np.float64)
    for name, tensor in condensed.extras.items():
        arrays[f"extra_{name}"] = tensor.detach().cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:  # a file handle stops numpy appending a second ".npz"
        np.savez_compressed(fh, **arrays)
    return path.stat().st_size


def load_condensed(path: Path) -> CondensedSet:
    """A stored condensed set; an unreadable or incomplete file is one :class:`DataError` line."""
    npz = npz_arrays(path)
    missing = [k for k in ("images_float32", "train_labels") if k not in npz]
    if missing:
        raise DataError(f"{path}: not a medbench condensed-set file (no {', '.join(missing)})")
    labels = torch.from_numpy(npz["soft_labels"]) if "soft_labels" in npz else \
        torch.from_numpy(npz["train_labels"].reshape(-1).astype(np.int64))
    lr = float(npz["learned_lr"]) if "learned_lr" in npz else None
    extras = {k[len("extra_"):]: torch.from_numpy(v) for k, v in npz.items() if k.startswith("extra_")}
    try:
        return CondensedSet(torch.from_numpy(npz["images_float32"]), labels, lr=lr, extras=extras)
    except ValueError as exc:
        raise DataError(f"{path}: inconsistent condensed set ({exc})") from None


def locate_condensed(stored: str | None, db: Path) -> Path | None:
    """A cell's condensed file: the stored path, or the same name in ``condensed/`` beside the
    database (the results folder was moved or merged from elsewhere). None when neither exists."""
    if not stored:
        return None
    path = Path(stored)
    for candidate in (path, Path(db).parent / "condensed" / path.name):
        if candidate.is_file():
            return candidate
    return None
