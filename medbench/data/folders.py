"""Image collections stored as one folder per class, converted once to a cached MedMNIST-layout npz.

Many medical collections (the Kaggle COVID-19 Radiography Database, a hospital's own export) are
published as ``<root>/<class>/*.png`` rather than as arrays. This module turns such a tree into
:class:`Splits` with fixed, documented rules, so every user of the same files gets the same data:

* **Layout.** Each sub-folder of ``root`` is a class (hidden folders and ``masks``/``__MACOSX``
  are not). Inside a class folder every ``.png``, ``.jpg`` and ``.jpeg`` file is an image, at any
  depth (so ``<class>/images/*.png``, the Kaggle layout, works), except below folders named
  ``masks`` or ``mask`` (segmentation masks ship beside the images in the Kaggle release) and
  hidden ones. Files at the root itself (metadata spreadsheets, READMEs) are ignored. Other files
  inside a class folder (``.txt``, ``.xlsx``, DICOM) are skipped and counted, as are image files
  that do not decode; the load never stops for them. A class without a single readable image is
  a :class:`DataError`.
* **Links and duplicates.** Links to files are followed; links to folders never are (a class
  folder that is a link, or a link inside one, is skipped and reported): a link to ``.`` or ``..``
  would otherwise count images many times or under another class. A dangling link is skipped and
  counted. Before the split, every image is de-duplicated by content (sha256 of its bytes, which
  also catches two links to one file): the first copy in label-then-path order is kept and the
  others are dropped and reported, so no image can land in both train and test.
* **Classes.** Sorted folder names, or a given expected order (``classes=``): expected classes
  that are absent are reported and skipped, labels stay contiguous in the expected order, and the
  class names are recorded. Folders not in the expected list are reported and ignored.
* **Pixels.** ``channels=1`` converts to 8-bit grayscale (X-ray collections), ``channels=3``
  to RGB, ``channels=None`` (auto, the default for a folder given by path) keeps RGB only when
  at least one image really carries colour (its channels differ by more than 3 grey levels on
  average, so grayscale saved as RGB or JPEG chroma noise stays grayscale). 16-bit images are
  scaled from 0..65535 to 0..255, EXIF orientation is applied, and every image is resized to
  ``size``×``size`` (default 112) with Pillow's bicubic filter, which antialiases when shrinking.
  Non-square images are resized, not cropped, so no anatomy at the border is lost.
* **Split.** Stratified 70/10/20 train/val/test with seed 0, as the shared COVID npz files:
  within each class (in label order) the images, sorted by path, are permuted with
  ``numpy.random.default_rng(seed)``, each split takes its share by largest-remainder
  allocation, and each split is then shuffled with the same generator.
* **Cache.** ``<cache_root>/medbench_folders/<name>_<size>_<key>.npz``, MedMNIST layout plus
  ``class_names``, ``corrupt_files`` and ``{split}_files`` (each row's source file), written
  atomically. ``key`` hashes the image file list with sizes and modification times, the classes,
  size, channels and split parameters, so changed files give a new cache and an unchanged tree
  loads without decoding anything. Every load, cached or not, goes through
  :func:`~medbench.data.npz.splits_from_npz` validation. An unwritable cache root falls back to
  ``$XDG_CACHE_HOME/medbench`` (default ``~/.cache/medbench``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from medbench.core.errors import DataError, MedbenchError
from medbench.core.files import atomic_open
from medbench.data.cache import fallback_root, may_write
from medbench.data.npz import SPLITS, splits_from_npz, validate_arrays
from medbench.data.splits import Splits

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IGNORED_DIRS = frozenset({"masks", "mask", "__macosx"})  # compared case-insensitively
SPLIT_RATIOS = (0.7, 0.1, 0.2)
SPLIT_SEED = 0
DEFAULT_SIZE = 112
CACHE_DIR = "medbench_folders"
CACHE_VERSION = 2  # bump when the conversion changes, so old caches are not reused (2: links, de-duplication)
COLOUR_THRESHOLD = 3.0  # mean (max − min) over channels, in grey levels, above which an image is colour
PROGRESS_MIN_FILES = 200  # fewer files than this convert without a progress bar


@dataclass(frozen=True)
class FolderScan:
    """What a class-folder tree holds, before any image is decoded."""

    root: Path
    class_names: tuple[str, ...]  # present classes, in label order
    files: tuple[tuple[Path, ...], ...]  # per class: candidate image files, sorted by path
    missing: tuple[str, ...] = ()  # expected classes without a folder
    unexpected: tuple[str, ...] = ()  # folders ignored because they are not expected classes
    non_images: tuple[Path, ...] = ()  # files in class folders without an image suffix, dangling links
    linked_dirs: tuple[Path, ...] = ()  # folder links that were not followed


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in IGNORED_DIRS


def _class_dirs(root: Path) -> tuple[dict[str, Path], list[Path]]:
    """Class folders of ``root``, and the folder links among its entries (never followed)."""
    entries = [p for p in sorted(root.iterdir()) if p.is_dir() and not _ignored(p.name)]
    return {p.name: p for p in entries if not p.is_symlink()}, [p for p in entries if p.is_symlink()]


def _walk_class(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Image files, other files (and dangling links) and folder links below one class folder,
    skipping mask and hidden folders. Folder links are not followed (module doc)."""
    images: list[Path] = []
    others: list[Path] = []
    links: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        links += [Path(dirpath) / d for d in dirnames if (Path(dirpath) / d).is_symlink()]
        dirnames[:] = [d for d in dirnames if not _ignored(d) and not (Path(dirpath) / d).is_symlink()]
        for fname in filenames:
            if fname.startswith("."):  # .DS_Store and friends: not data
                continue
            path = Path(dirpath) / fname
            if not path.is_file():  # a dangling link (os.walk lists links to folders as folders)
                others.append(path)
                continue
            (images if path.suffix.lower() in IMAGE_SUFFIXES else others).append(path)
    return sorted(images), sorted(others), sorted(links)


def scan_folders(root: Path, classes: Sequence[str] | None = None) -> FolderScan:
    """List the classes and candidate files of ``root`` (see the module docstring for the rules)."""
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    found, linked = _class_dirs(root)
    order = list(classes) if classes is not None else sorted(found)
    names, files, non_images = [], [], []
    for name in order:
        if name not in found:
            continue
        images, others, links = _walk_class(found[name])
        names.append(name)
        files.append(tuple(images))
        non_images.extend(others)
        linked.extend(links)
    if not names:
        wanted = f" (expected {', '.join(order)})" if classes is not None else ""
        raise DataError(f"{root}: no class folders found{wanted}; expected <root>/<class>/*.png")
    return FolderScan(
        root=root,
        class_names=tuple(names),
        files=tuple(files),
        missing=tuple(c for c in order if c not in found),
        unexpected=tuple(sorted(set(found) - set(order))),
        non_images=tuple(non_images),
        linked_dirs=tuple(linked),
    )


def allocate(n: int, ratios: Sequence[float]) -> list[int]:
    """Split ``n`` items by ``ratios`` with the largest-remainder method (ties: earlier split first).

    Quotas are exact fractions, so 5 × 0.7 is 3.5 and ties do not depend on float rounding."""
    exact = [Fraction(str(r)) for r in ratios]
    quotas = [n * r / sum(exact) for r in exact]
    counts = [int(q) for q in quotas]
    by_remainder = sorted(range(len(ratios)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def stratified_split(labels: np.ndarray, ratios: Sequence[float] = SPLIT_RATIOS,
                     seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Indices of train/val/test: per class a permutation cut by :func:`allocate`, then shuffled."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)[rng.permutation(int((labels == c).sum()))]
        start = 0
        for split, count in zip(SPLITS, allocate(len(idx), ratios), strict=True):
            parts[split].append(idx[start : start + count])
            start += count
    out = {}
    for split in SPLITS:
        idx = np.concatenate(parts[split]) if parts[split] else np.zeros(0, dtype=np.int64)
        out[split] = idx[rng.permutation(len(idx))]
    return out


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit grayscale to 8 bits by scaling, as ``convert("L")`` would clip instead."""
    if img.mode.startswith("I;16") or img.mode == "I":
        arr = np.asarray(img).astype(np.float64)
        scale = 255.0 / 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 1.0
        return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        arr = np.asarray(img).astype(np.float64)
        arr = arr * 255.0 if arr.max() <= 1.0 else arr
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    return img


def read_image(path: Path | io.BytesIO, size: int, mode: str) -> np.ndarray:
    """Decode one file to uint8 ``size``×``size`` (``mode`` "L") or ×3 (``mode`` "RGB")."""
    with Image.open(path) as opened:
        img = ImageOps.exif_transpose(opened)
        img = _to_8bit(img).convert(mode)
        img = img.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(img, dtype=np.uint8).copy()


def _is_colour(rgb: np.ndarray) -> bool:
    spread = rgb.max(axis=-1).astype(np.int16) - rgb.min(axis=-1).astype(np.int16)
    return float(spread.mean()) > COLOUR_THRESHOLD


def cache_key(scan: FolderScan, size: int, channels: int | None, ratios: Sequence[float], seed: int) -> str:
    """Hash of everything the cached arrays depend on (file list, sizes, mtimes, settings)."""
    h = hashlib.sha256()
    header = {"version": CACHE_VERSION, "size": size, "channels": channels or "auto",
              "ratios": [float(r) for r in ratios], "seed": seed, "classes": list(scan.class_names),
              "resample": "bicubic"}
    h.update(json.dumps(header, sort_keys=True).encode())
    for label, files in enumerate(scan.files):
        for path in files:
            st = path.stat()
            h.update(f"\n{label}\t{path.relative_to(scan.root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _writable_cache_dir(cache_root: Path) -> Path:
    for base in (cache_root, fallback_root()):
        folder = base / CACHE_DIR
        if not may_write(folder):
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if base != cache_root:
            log.warning("medbench: %s is read-only; caching the converted images in %s", cache_root, folder)
        return folder
    raise DataError(f"{cache_root}: cannot write the converted-images cache there or in {fallback_root()}")


def _cache_path(folder: Path, name: str, size: int, key: str) -> Path:
    return folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}_{size}_{key}.npz"


def _find_cache(cache_root: Path, name: str, size: int, key: str) -> Path | None:
    for base in (cache_root, fallback_root()):
        path = _cache_path(base / CACHE_DIR, name, size, key)
        if path.is_file():
            return path
    return None


def _save_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write to a temporary file beside ``path`` and rename, so a killed run leaves no half file."""
    with atomic_open(path) as fh:
        np.savez(fh, **arrays)


def _convert(scan: FolderScan, name: str, size: int, channels: int | None, ratios: Sequence[float],
             seed: int) -> dict[str, np.ndarray]:
    """Decode every candidate image once per distinct content; the MedMNIST-layout arrays plus
    extras (class names, corrupt and duplicate files, each row's source file)."""
    mode = "L" if channels == 1 else "RGB"
    jobs = [(path, label) for label, files in enumerate(scan.files) for path in files]
    images: list[np.ndarray] = []
    labels: list[int] = []
    rel: list[str] = []
    corrupt: list[str] = []
    duplicates: list[str] = []
    kept: dict[str, str] = {}  # sha256 of the file's bytes -> the kept copy's path
    colour = False
    bar = tqdm(jobs, desc=f"{name}: converting to {size} px", unit="img", file=sys.stderr, leave=False,
               dynamic_ncols=True, disable=True if len(jobs) < PROGRESS_MIN_FILES else None)
    for path, label in bar:
        rel_path = path.relative_to(scan.root).as_posix()
        try:
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest in kept:
                duplicates.append(f"{rel_path} (= {kept[digest]})")
                continue
            pixels = read_image(io.BytesIO(data), size, mode)
        except Exception as exc:  # any read or decoder failure means "not a readable image": skip, count
            corrupt.append(f"{rel_path} ({type(exc).__name__})")
            continue
        kept[digest] = rel_path
        if channels is None and not colour:
            colour = _is_colour(pixels)
        images.append(pixels)
        labels.append(label)
        rel.append(rel_path)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(scan.class_names))
    empty = [scan.class_names[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"{scan.root}: no readable {'/'.join(IMAGE_SUFFIXES)} image in class folder(s) "
                        f"{', '.join(empty)}")
    stack = np.stack(images)
    if channels is None and not colour:
        stack = np.ascontiguousarray(stack[..., 0])  # grayscale stored as RGB: keep one channel
    label_arr = np.asarray(labels, dtype=np.int64)
    rel_arr = np.asarray(rel)
    arrays: dict[str, np.ndarray] = {}
    parts = stratified_split(label_arr, ratios, seed)
    empty_splits = [split for split, idx in parts.items() if len(idx) == 0]
    if empty_splits:
        raise DataError(f"{scan.root}: too few images for a {'/'.join(f'{r:g}' for r in ratios)} split: "
                        f"{', '.join(empty_splits)} would be empty (images per class: "
                        f"{dict(zip(scan.class_names, counts.tolist(), strict=True))})")
    for split, idx in parts.items():
        arrays[f"{split}_images"] = stack[idx]
        arrays[f"{split}_labels"] = label_arr[idx].reshape(-1, 1).astype(np.uint8 if len(counts) < 256 else np.int64)
        arrays[f"{split}_files"] = rel_arr[idx]
    arrays["class_names"] = np.asarray(scan.class_names)
    arrays["corrupt_files"] = np.asarray(corrupt, dtype=str)
    arrays["duplicate_files"] = np.asarray(duplicates, dtype=str)
    return arrays


def _short_list(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def load_class_folders(
    root: Path | str,
    *,
    name: str | None = None,
    size: int | None = None,
    channels: int | None = None,
    classes: Sequence[str] | None = None,
    cache_root: Path | str | None = None,
    ratios: Sequence[float] = SPLIT_RATIOS,
    seed: int = SPLIT_SEED,
    license: str | None = None,
    meta: dict | None = None,
) -> Splits:
    """Load ``<root>/<class>/...`` images as validated :class:`Splits`, converting once and caching.

    ``cache_root`` is the data root (default: ``root`` itself); the npz goes to
    ``<cache_root>/medbench_folders/``. See the module docstring for every rule applied.
    """
    root = Path(root).expanduser()
    name = name or root.resolve().name
    size = DEFAULT_SIZE if size is None else int(size)
    if size < 8:
        raise MedbenchError(f"{name}: size must be at least 8 px, got {size}")
    if channels not in (None, 1, 3):
        raise MedbenchError(f"{name}: channels must be 1, 3 or None (auto), got {channels}")
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-9:
        raise MedbenchError(f"{name}: split ratios must be three non-negative numbers summing to 1, got {ratios}")
    cache_root = Path(cache_root).expanduser() if cache_root is not None else root

    scan = scan_folders(root, classes)
    if scan.missing:
        log.warning("medbench: %s: class(es) %s not found in %s; skipped (labels stay contiguous: %s)",
                    name, ", ".join(scan.missing), root, ", ".join(scan.class_names))
    if scan.unexpected:
        log.warning("medbench: %s: folder(s) %s in %s are not expected classes; ignored",
                    name, ", ".join(scan.unexpected), root)
    if scan.linked_dirs:
        log.warning("medbench: %s: %d folder link(s) not followed: %s", name, len(scan.linked_dirs),
                    _short_list([p.relative_to(root).as_posix() for p in scan.linked_dirs]))

    key = cache_key(scan, size, channels, ratios, seed)
    path = _find_cache(cache_root, name, size, key)
    created = path is None
    missing_dirs: list[Path] = []
    if path is None:
        arrays = _convert(scan, name, size, channels, ratios, seed)
        # the converted set must be a valid dataset before anything is written: one class, an empty class
        # or a split without images stops here with the folder's name, and no cache is left behind
        validate_arrays(root, arrays, len(scan.class_names))
        missing_dirs = [d for d in (cache_root, cache_root / CACHE_DIR, fallback_root(), fallback_root() / CACHE_DIR)
                        if not d.exists()]
        path = _cache_path(_writable_cache_dir(cache_root), name, size, key)
        _save_atomic(path, arrays)
    with np.load(path, allow_pickle=False) as npz:
        corrupt = [str(f) for f in npz["corrupt_files"]] if "corrupt_files" in npz.files else []
        duplicates = [str(f) for f in npz["duplicate_files"]] if "duplicate_files" in npz.files else []
    if duplicates:
        log.warning("medbench: %s: %d duplicate image(s) dropped before the split (same content as a kept "
                    "file): %s", name, len(duplicates), _short_list(duplicates))

    skipped = [f.relative_to(root).as_posix() for f in scan.non_images] + corrupt
    if skipped:
        log.warning("medbench: %s: %d file(s) skipped as not readable images: %s",
                    name, len(skipped), _short_list(skipped))
    splits = splits_from_npz(
        path,
        name,
        num_classes=len(scan.class_names),
        class_names=scan.class_names,
        license=license,
        meta={
            **(meta or {}),
            "folder": str(root.resolve()),
            "cache_file": str(path),
            "missing_classes": list(scan.missing),
            "skipped_files": len(skipped),
            "duplicates_dropped": len(duplicates),
            "split": f"stratified {'/'.join(f'{r:g}' for r in ratios)} seed {seed}",
            # written by this load (and the folders made for it): a grid that then fails validation removes them
            "created_files": [str(path)] if created else [],
            "created_dirs": [str(d) for d in missing_dirs if d.exists()] if created else [],
        },
    )
    return dataclasses.replace(splits, source=str(root.resolve()))
