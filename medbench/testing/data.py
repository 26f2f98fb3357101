"""The conformance kit's data: a tiny generated problem written as a MedMNIST-layout npz, a copy of
a real one, and the *poisoned* variant of either (its test split replaced by other images), so a
method that reads the test split from disk gives a different set."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from medbench.data.npz import read_npz
from medbench.data.splits import Split, Splits


def make_splits(num_classes: int = 4, size: int = 12, channels: int = 1, per_class: int = 64,
                signal: float = 30.0, noise: float = 70.0, seed: int = 0) -> Splits:
    """A tiny classification problem, made in memory: each class is a fixed low-amplitude pattern
    under strong pixel noise, so single images are poor class representatives while class means are
    clean (methods that summarise a class, DC and DM, beat random selection at IPC 1)."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(num_classes, channels, size, size, generator=g)

    def split(n: int) -> Split:
        labels = torch.arange(num_classes).repeat_interleave(n)
        x = 128 + signal * templates[labels] + noise * torch.randn(len(labels), channels, size, size, generator=g)
        return Split(x.round().clamp(0, 255).to(torch.uint8), labels)

    train, val, test = split(per_class), split(per_class // 2), split(per_class)
    mean = tuple(float(m) for m in train.images.float().div(255).mean(dim=(0, 2, 3)))
    std = tuple(float(s) for s in train.images.float().div(255).std(dim=(0, 2, 3)))
    return Splits("synthetic", train, val, test, num_classes, mean, std)


def _layout(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """A split as MedMNIST stores it: N×H×W (grey) or N×H×W×3 uint8, labels N×1."""
    images = split.images.cpu().numpy()
    images = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), split.labels.cpu().numpy().reshape(-1, 1).astype(np.int64)


def write_generated(path: Path, splits: Splits) -> Path:
    """``splits`` as a MedMNIST-layout npz at ``path``."""
    arrays = {}
    for name in ("train", "val", "test"):
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = _layout(getattr(splits, name))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def copy_dataset(source: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    return path


def poisoned_test(test: Split, seed: int = 0) -> Split:
    """Other images in the test split's place: inverted, shuffled, with shuffled labels."""
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    images = 255 - test.images.cpu()[order]
    labels = test.labels.cpu()[torch.randperm(len(test), generator=torch.Generator().manual_seed(seed + 1))]
    return Split(images.contiguous(), labels.contiguous())


def poison_file(path: Path, seed: int = 0) -> None:
    """Rewrite the npz at ``path`` in place with :func:`poisoned_test` as its test split."""
    arrays = read_npz(path)
    images = arrays["test_images"]
    nchw = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    test = poisoned_test(Split(torch.from_numpy(np.ascontiguousarray(nchw)),
                               torch.from_numpy(arrays["test_labels"].reshape(-1).astype(np.int64))), seed)
    arrays["test_images"], arrays["test_labels"] = _layout(test)
    tmp = path.with_suffix(".poisoning.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
