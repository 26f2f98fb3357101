"""Random selection: the yardstick every distillation method is compared with."""

from __future__ import annotations

import torch

from medbench.errors import MedbenchError
from medbench.method import CondensedSet, DistillTask, register_method


@register_method("random")
def random_selection(task: DistillTask, params) -> CondensedSet:
    """IPC real training images per class, drawn uniformly without replacement (class-balanced)."""
    generator = torch.Generator().manual_seed(task.seed)
    chosen = []
    for c, pool in enumerate(task.class_indices):
        if len(pool) < task.ipc:
            raise MedbenchError(f"IPC {task.ipc} exceeds the {len(pool)} training images of class {c}")
        chosen.append(pool[torch.randperm(len(pool), generator=generator)[: task.ipc].to(pool.device)])
    indices = torch.cat(chosen)
    # The indices travel with the set: a privacy audit must know these are real patients' images.
    return CondensedSet(task.real(indices), task.train.labels[indices].clone(),
                        extras={"train_indices": indices.cpu()})
