"""Plain containers for a loaded dataset: uint8 images stay uint8 until a batch is used.

Keeping pixels as uint8 (and normalising per batch) costs a quarter of the memory of float
tensors, which matters for the 128 and 224 px MedMNIST sets and for keeping data on the GPU.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels.cpu(), minlength=num_classes).tolist()


class TrainGeometry:
    """``channels`` and ``size`` of anything that holds a training :class:`Split` as ``train``."""

    train: Split

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def size(self) -> int:
        return int(self.train.images.shape[-1])


@dataclass(frozen=True)
class Splits(TrainGeometry):
    """A dataset ready for distillation and evaluation; stats come from the training split."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    license: str | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.train.images.device

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 normalised with the training split's statistics."""
        mean, std = _channel_tensor(tuple(self.mean), images.device), _channel_tensor(tuple(self.std), images.device)
        return (images.float() / 255.0 - mean) / std

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`, clamped and rounded back to uint8."""
        return denormalize(images, self.mean, self.std)

    def to(self, device: torch.device | str) -> Splits:
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))

    def describe(self) -> dict:
        """Plain facts stored with every result."""
        return {
            "name": self.name,
            "source": self.source,
            "num_classes": self.num_classes,
            "channels": self.channels,
            "size": self.size,
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_test": len(self.test),
            "mean": list(self.mean),
            "std": list(self.std),
            "license": self.license,
            "class_names": list(self.class_names),
            # per split: what a constant majority-class guess would score is read from here
            "class_counts": {name: getattr(self, name).class_counts(self.num_classes)
                             for name in ("train", "val", "test")},
            **self.meta,
        }


@functools.lru_cache(maxsize=64)
def _channel_tensor(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """(1, C, 1, 1) float32 on ``device``, built once: normalising runs for every batch, and
    building the tensor on a GPU each time would copy from the host and sync."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised float images (N, C, H, W) back to uint8 pixels, clamped."""
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return ((images * s + m) * 255.0).round().clamp(0, 255).to(torch.uint8)


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) in [0, 1], in float64 chunks."""
    n, c = images.shape[:2]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    for start in range(0, n, chunk):
        block = images[start : start + chunk].astype(np.float64) / 255.0
        total += block.sum(axis=(0, 2, 3))
        total_sq += (block**2).sum(axis=(0, 2, 3))
    count = n * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
