"""Resolving a dataset reference: a registered name, a MedMNIST-layout npz by path, or a folder of
class folders by path; every load counts its exact duplicates between splits."""

from __future__ import annotations

from pathlib import Path

from medbench.core.errors import DataError
from medbench.data import duplicates
from medbench.data.npz import splits_from_npz
from medbench.data.registry import DATASETS, DEFAULT_DATA_ROOT, LoadRequest
from medbench.data.splits import Splits


def is_path_reference(ref: str) -> bool:
    return ref.endswith(".npz") or "/" in ref or Path(ref).exists()


def load_dataset(ref: str, *, size: int | None = None, root: Path | str = DEFAULT_DATA_ROOT,
                 download: bool = False, drop_duplicates: bool = False) -> Splits:
    """Load a registered dataset by name, a MedMNIST-layout npz by path, or a folder of class
    folders by path (converted once and cached under ``root``; see :mod:`medbench.data.folders`).
    Its exact duplicates within and across splits are counted (``meta["duplicates"]``, stored with
    every cell); ``drop_duplicates`` removes the cross-split ones from val and test
    (:mod:`medbench.data.duplicates`)."""
    root = Path(root).expanduser()
    splits = duplicates.check(_load(ref, size, root, download), root)
    return duplicates.drop(splits, root) if drop_duplicates else splits


def _load(ref: str, size: int | None, root: Path, download: bool) -> Splits:
    if ref in DATASETS or not is_path_reference(ref):
        source = DATASETS.get(ref)  # unknown names fail here with the list of known ones
        return source.load(LoadRequest(size=size, root=root, download=download))
    path = Path(ref).expanduser()
    if path.is_dir():
        from medbench.data.folders import load_class_folders  # imported here: folders imports this module

        return load_class_folders(path, size=size, cache_root=root)
    splits = splits_from_npz(path, path.stem)
    if size is not None and size != splits.size:
        raise DataError(f"{path}: images are {splits.size} px but size {size} was asked for")
    return splits
