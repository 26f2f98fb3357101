"""The whole training set: the upper-bound row of every table."""

from __future__ import annotations

import torch

from medbench.distill.contract import CondensedSet, DistillTask, register_method


@register_method("full", uses_ipc=False, selects=False, exempt={
    "seed": "every training image, whatever the seed", "checkpoints": "no iterations", "resume": "no iterations",
    "budget": "no iterations", "non-finite": "no loss"})
def full_training_set(task: DistillTask, params) -> CondensedSet:
    """The entire training split (upper bound; IPC is ignored and reported as 'full')."""
    indices = torch.arange(len(task.train), device=task.train.labels.device)
    return CondensedSet(task.normalize(task.train.images), task.train.labels.clone(),
                        extras={"train_indices": indices.cpu()})
