"""medbench: a benchmark suite for dataset distillation on medical images."""

from medbench.data import list_datasets, load_dataset, register_dataset
from medbench.errors import DataError, MedbenchError
from medbench.method import CondensedSet, DistillTask, get_method, list_methods, register_method
from medbench.models import list_models, register_model

__version__ = "0.1.0"


def __getattr__(name: str):
    # run/results pull in pandas and the harness: import them on first use, so `import medbench`
    # (and every CLI start) stays fast.
    if name in ("run", "results"):
        from medbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'medbench' has no attribute {name!r}")

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
