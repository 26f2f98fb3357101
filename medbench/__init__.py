"""medbench: a benchmark suite for dataset distillation on medical images.

The public names are imported on first use (PEP 562), so ``import medbench.launch`` (the command's
entry point, which must install its signal handlers before torch and medmnist load) stays instant.
"""

from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "list_datasets": "medbench.data", "load_dataset": "medbench.data", "register_dataset": "medbench.data",
    "DataError": "medbench.errors", "MedbenchError": "medbench.errors",
    "CondensedSet": "medbench.method", "DistillTask": "medbench.method", "get_method": "medbench.method",
    "list_methods": "medbench.method", "register_method": "medbench.method",
    "list_models": "medbench.models", "register_model": "medbench.models",
    "run": "medbench.api", "results": "medbench.api",
}


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'medbench' has no attribute {name!r}")


__all__ = sorted(_PUBLIC)
