"""The whole training set: the upper-bound row of every table."""

from __future__ import annotations

from medbench.distill.contract import CondensedSet, DistillTask, register_method


@register_method("full", uses_ipc=False, selects=False)
def full_training_set(task: DistillTask, params) -> CondensedSet:
    """The entire training split (upper bound; IPC is ignored and reported as 'full')."""
    return CondensedSet(task.normalize(task.train.images), task.train.labels.clone())
