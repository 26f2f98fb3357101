"""The dataset registry: every dataset medbench knows by name, and how a plug-in adds one.

Third parties add datasets with ``@register_dataset`` (or the ``medbench.datasets`` entry-point
group); the loader receives a :class:`LoadRequest` and returns :class:`Splits`. The built-in
datasets (the MedMNIST 2D flags, the COVID-19 Radiography Database) are known by name and
registered by their modules on first lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medmnist.info import DEFAULT_ROOT as MEDMNIST_DEFAULT_ROOT
from medmnist.info import INFO

from medbench.core.registry import Registry
from medbench.data.splits import Splits

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


# The built-in datasets by name (imported on first lookup): every 2D MedMNIST flag, and COVID-19.
BUILTIN_DATASETS = {**{flag: "medbench.data.medmnist" for flag in INFO if not flag.endswith("3d")},
                    "covid19_radiography": "medbench.data.covid:load_covid19_radiography"}
DATASETS: Registry[DatasetSource] = Registry("dataset", entry_point_group="medbench.datasets",
                                             builtins=BUILTIN_DATASETS)


def register_dataset(name: str, **info) -> Callable[[Callable[[LoadRequest], Splits]], Callable]:
    """Decorator: ``@register_dataset("mine", sizes=(64,))`` over ``def load(req) -> Splits``."""
    return DATASETS.decorator(name, lambda n, fn: DatasetSource(n, (fn.__doc__ or "").strip(), fn, **info))


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.names(pattern)
