"""The MedMNIST 2D datasets, read through the ``medmnist`` package: one registry entry per flag
from ``medmnist.INFO`` (classes, channels, split sizes, license), in every published size."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import medmnist
from medmnist.info import INFO

from medbench.core.errors import DataError, MedbenchError
from medbench.data.npz import splits_from_npz
from medbench.data.registry import DATASETS, MEDMNIST_SIZES, UNSUPPORTED_TASKS, DatasetSource, LoadRequest
from medbench.data.splits import Splits


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
