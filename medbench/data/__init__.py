"""Data layer: registered datasets and npz files in, validated :class:`Splits` out."""

from medbench.data import folders as _folders  # noqa: F401  (registers covid19_radiography)
from medbench.data.catalog import (
    DATASETS,
    DEFAULT_DATA_ROOT,
    DatasetSource,
    LoadRequest,
    list_datasets,
    load_dataset,
    register_dataset,
)
from medbench.data.splits import Split, Splits

__all__ = [
    "DATASETS",
    "DEFAULT_DATA_ROOT",
    "DatasetSource",
    "LoadRequest",
    "Split",
    "Splits",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
