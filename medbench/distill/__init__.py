"""The contract every distillation method implements: a :class:`DistillTask` in, a
:class:`CondensedSet` out, registered with :func:`register_method`."""

from medbench.distill.contract import (
    DEFAULT_SELECTION,
    METHODS,
    SELECTION_METRICS,
    CondensedSet,
    DistillTask,
    Method,
    get_method,
    list_methods,
    register_method,
)

__all__ = ["DEFAULT_SELECTION", "METHODS", "SELECTION_METRICS", "CondensedSet", "DistillTask", "Method", "get_method",
           "list_methods", "register_method"]
