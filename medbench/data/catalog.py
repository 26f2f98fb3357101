"""The dataset registry: MedMNIST 2D flags from ``medmnist.INFO``, plus npz files given by path.

Third parties add datasets with ``@register_dataset`` (or the ``medbench.datasets`` entry-point
group); the loader receives a :class:`LoadRequest` and returns :class:`Splits`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import medmnist
from medmnist.info import DEFAULT_ROOT as MEDMNIST_DEFAULT_ROOT
from medmnist.info import INFO

from medbench.data import duplicates
from medbench.data.npz import splits_from_npz
from medbench.data.splits import Splits
from medbench.errors import DataError, MedbenchError
from medbench.registry import Registry

DEFAULT_DATA_ROOT = Path(MEDMNIST_DEFAULT_ROOT)
MEDMNIST_SIZES = (28, 64, 128, 224)

# Tasks medbench cannot score as single-label classification, with the reason shown to users.
UNSUPPORTED_TASKS = {
    "multi-label, binary-class": "multi-label task (several findings per image); "
    "medbench scores single-label classification only",
}


@dataclass(frozen=True)
class LoadRequest:
    size: int | None
    root: Path
    download: bool = False


@dataclass(frozen=True)
class DatasetSource:
    name: str
    description: str
    load: Callable[[LoadRequest], Splits]
    sizes: tuple[int, ...] = ()
    num_classes: int | None = None
    channels: int | None = None
    license: str | None = None
    unsupported: str = ""  # non-empty: why this dataset cannot be used
    expected_file: Callable[[int, Path], Path] | None = None

    def is_present(self, size: int, root: Path) -> bool:
        return self.expected_file is not None and self.expected_file(size, root).is_file()


DATASETS: Registry[DatasetSource] = Registry("dataset", entry_point_group="medbench.datasets")


def register_dataset(name: str, **info) -> Callable[[Callable[[LoadRequest], Splits]], Callable]:
    """Decorator: ``@register_dataset("mine", sizes=(64,))`` over ``def load(req) -> Splits``."""
    return DATASETS.decorator(name, lambda n, fn: DatasetSource(n, (fn.__doc__ or "").strip(), fn, **info))


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.names(pattern)


# --- MedMNIST -------------------------------------------------------------------------------


def medmnist_file(flag: str, size: int, root: Path) -> Path:
    return root / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")


def _medmnist_loader(flag: str) -> Callable[[LoadRequest], Splits]:
    info = INFO[flag]

    def load(req: LoadRequest) -> Splits:
        size = req.size or 28
        if size not in MEDMNIST_SIZES:
            raise MedbenchError(f"{flag}: size {size} is not published; choose one of {MEDMNIST_SIZES}")
        path = medmnist_file(flag, size, req.root)
        if req.download and not path.is_file():
            _download(flag, size, req.root)
        if not path.is_file():
            raise DataError(f"{path}: not found; add --download to fetch {path.name} from MedMNIST")
        labels = info["label"]
        splits = splits_from_npz(
            path,
            flag,
            num_classes=len(labels),
            class_names=[labels[str(i)] for i in range(len(labels))],
            license=info.get("license"),
            meta={"medmnist_flag": flag, "task": info["task"]},
        )
        sizes = {s: len(getattr(splits, s)) for s in ("train", "val", "test")}
        if sizes != info["n_samples"]:
            raise DataError(f"{path}: split sizes {sizes} differ from medmnist's {info['n_samples']}")
        return splits

    return load


def _download(flag: str, size: int, root: Path) -> None:
    """medmnist's own download (torchvision's download_url with the published MD5)."""
    root.mkdir(parents=True, exist_ok=True)
    dataset_class = getattr(medmnist, INFO[flag]["python_class"])
    try:
        dataset_class(split="train", root=str(root), size=size, download=True)
    except Exception as exc:
        first_line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), repr(exc))
        raise DataError(f"download of {medmnist_file(flag, size, root).name} failed: {first_line}") from None


def _unsupported_loader(flag: str, reason: str) -> Callable[[LoadRequest], Splits]:
    def load(req: LoadRequest) -> Splits:
        raise MedbenchError(f"{flag} is not supported: {reason}")

    return load


def _register_medmnist() -> None:
    for flag, info in INFO.items():
        if flag.endswith("3d"):  # volumetric sets need 3D networks; medbench is 2D
            continue
        reason = UNSUPPORTED_TASKS.get(info["task"], "")
        DATASETS.add(
            flag,
            DatasetSource(
                name=flag,
                description=f"MedMNIST {info['python_class']} ({info['task']})",
                load=_unsupported_loader(flag, reason) if reason else _medmnist_loader(flag),
                sizes=MEDMNIST_SIZES,
                num_classes=len(info["label"]),
                channels=info["n_channels"],
                license=info.get("license"),
                unsupported=reason,
                expected_file=lambda size, root, flag=flag: medmnist_file(flag, size, root),
            ),
        )


_register_medmnist()


# --- resolving names and paths --------------------------------------------------------------


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
