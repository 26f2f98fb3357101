"""medbench: a benchmark suite for dataset distillation on medical images.

The public names are imported on first use (PEP 562), so ``import medbench.core.signals`` (the command's
entry point, which must install its signal handlers before torch and medmnist load) stays instant.
"""

from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "list_datasets": "medbench.data", "load_dataset": "medbench.data", "register_dataset": "medbench.data",
    "DataError": "medbench.core.errors", "MedbenchError": "medbench.core.errors",
    "CondensedSet": "medbench.distill", "DistillTask": "medbench.distill", "get_method": "medbench.distill",
    "list_methods": "medbench.distill", "register_method": "medbench.distill",
    "list_models": "medbench.nn.models", "register_model": "medbench.nn.models",
    "run": "medbench.api", "results": "medbench.api",
}


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'medbench' has no attribute {name!r}")


__all__ = sorted(_PUBLIC)
