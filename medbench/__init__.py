"""medbench: a benchmark suite for dataset distillation on medical images."""

from medbench.api import results, run
from medbench.data import list_datasets, load_dataset, register_dataset
from medbench.errors import DataError, MedbenchError
from medbench.method import CondensedSet, DistillTask, get_method, list_methods, register_method
from medbench.models import list_models, register_model

__version__ = "0.1.0"

__all__ = [
    "CondensedSet",
    "DataError",
    "DistillTask",
    "MedbenchError",
    "get_method",
    "list_datasets",
    "list_methods",
    "list_models",
    "load_dataset",
    "register_dataset",
    "register_method",
    "register_model",
    "results",
    "run",
]
