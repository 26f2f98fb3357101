"""Data layer: registered datasets and npz files in, validated :class:`Splits` out."""

from medbench.data.catalog import load_dataset
from medbench.data.registry import (
    DATASETS,
    DEFAULT_DATA_ROOT,
    DatasetSource,
    LoadRequest,
    list_datasets,
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
