"""Image mosaics for packages and audits: one row per class, labelled with the class name.

The mosaic is assembled in numpy and drawn with a single ``imshow`` so that hundreds of images
(IPC 50 × 9 classes) still render quickly and at their native pixel size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global backend or window state

GAP = 2
BACKGROUND = 255


def as_nhwc(images: np.ndarray) -> np.ndarray:
    """uint8 N×H×W or N×H×W×3 (MedMNIST layout) -> N×H×W×3 for drawing."""
    if images.ndim == 3:
        images = images[..., None]
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def _mosaic(rows: list[list[np.ndarray]], tile: int) -> np.ndarray:
    n_cols = max((len(r) for r in rows), default=1) or 1
    height = len(rows) * (tile + GAP) + GAP
    width = n_cols * (tile + GAP) + GAP
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            y, x = GAP + r * (tile + GAP), GAP + c * (tile + GAP)
            canvas[y : y + img.shape[0], x : x + img.shape[1]] = img
    return canvas


def _draw(canvas: np.ndarray, row_labels: Sequence[str], tile: int, title: str, path: Path) -> Path:
    scale = max(1.0, 64 / tile) / 40  # inches per pixel: small images drawn larger
    fig_w = max(4.0, canvas.shape[1] * scale + 1.5)
    fig_h = max(2.0, canvas.shape[0] * scale + 0.8)
    fig = Figure(figsize=(min(fig_w, 60), min(fig_h, 60)))
    ax = fig.subplots()
    ax.imshow(canvas, interpolation="nearest")
    ax.set_yticks([GAP + r * (tile + GAP) + tile / 2 for r in range(len(row_labels))])
    ax.set_yticklabels(row_labels, fontsize=8)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def contact_sheet(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: Path,
                  title: str = "") -> Path:
    """Every image, one row per class (rows = classes, in class order)."""
    rgb = as_nhwc(images)
    labels = np.asarray(labels).reshape(-1)
    rows = [[rgb[i] for i in np.flatnonzero(labels == c)] for c in range(len(class_names))]
    names = [f"{c}: {name} ({len(r)})" for c, (name, r) in enumerate(zip(class_names, rows, strict=True))]
    return _draw(_mosaic(rows, rgb.shape[1]), names, rgb.shape[1], title, path)


def pairs_sheet(distilled: np.ndarray, neighbours: np.ndarray, labels: np.ndarray,
                class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Each distilled image immediately followed by its nearest real image, one row per class."""
    a, b = as_nhwc(distilled), as_nhwc(neighbours)
    tile = a.shape[1]
    pair = np.full((tile, 2 * tile + 1, 3), BACKGROUND // 2, dtype=np.uint8)
    labels = np.asarray(labels).reshape(-1)
    rows = []
    for c in range(len(class_names)):
        row = []
        for i in np.flatnonzero(labels == c):
            p = pair.copy()
            p[:, :tile], p[:, tile + 1 :] = a[i], b[i]
            row.append(p)
        rows.append(row)
    width = 2 * tile + 1
    n_cols = max((len(r) for r in rows), default=1) or 1
    canvas = np.full((len(rows) * (tile + GAP) + GAP, n_cols * (width + 2 * GAP) + GAP, 3), BACKGROUND,
                     dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            y, x = GAP + r * (tile + GAP), GAP + c * (width + 2 * GAP)
            canvas[y : y + tile, x : x + width] = img
    names = [f"{c}: {name}" for c, name in enumerate(class_names)]
    return _draw(canvas, names, tile, title, path)
