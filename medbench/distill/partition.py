"""Partitioned synthetic images (IDM's "partitioning and expansion"): one stored image holds
``f × f`` downscaled images in a grid; before a network trains on the set, every stored image is
expanded into its ``f²`` tiles, each upscaled back to full size, with the stored image's label.

The set that is stored, shared and counted (IPC, bytes) is the tiled one; training sees ``f²``
times as many images. Bilinear resampling and the tile order (column by column: top-left,
bottom-left, top-right, bottom-right) as the official IDM code's ``number_sign_augment``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EXTRA = "partition"  # CondensedSet.extras key holding the factor f


def tiles(images: torch.Tensor, factor: int) -> list[tuple[slice, slice]]:
    """The (rows, columns) slices of the ``factor²`` tiles, in the official order."""
    h, w = images.shape[-2] // factor, images.shape[-1] // factor
    return [(slice(i * h, (i + 1) * h), slice(j * w, (j + 1) * w)) for j in range(factor) for i in range(factor)]


def tile(parts: list[torch.Tensor], factor: int) -> torch.Tensor:
    """``factor²`` batches of full-size images, each downscaled into its tile of one image per row."""
    out = torch.zeros_like(parts[0])
    for part, (rows, cols) in zip(parts, tiles(out, factor), strict=True):
        size = (rows.stop - rows.start, cols.stop - cols.start)
        out[..., rows, cols] = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
    return out


def expand(images: torch.Tensor, labels: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image's tiles upscaled to full size: ``(N·f², C, H, W)`` tile-major, labels repeated."""
    if factor <= 1:
        return images, labels
    size = images.shape[-2:]
    parts = [F.interpolate(images[..., rows, cols], size=size, mode="bilinear", align_corners=False)
             for rows, cols in tiles(images, factor)]
    return torch.cat(parts), labels.repeat(factor * factor, *([1] * (labels.ndim - 1)))
