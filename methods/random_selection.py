"""Random selection: the yardstick every distillation method is compared with.

With ``candidates=N`` it is the *matched* baseline of a method that chose its result among N
checkpoints on validation accuracy: N random subsets, each scored on val by a network trained on
it exactly as the distillation methods score their checkpoints, and the best one kept. Subset 0
is always the plain random subset of the seed (the one the distillation methods start from).
"""

from __future__ import annotations

from dataclasses import dataclass

from medbench.hparams import check
from medbench.method import CondensedSet, DistillTask, register_method

from . import _synthetic as syn

_CANDIDATES = 3  # seed stream of the extra subsets (0-2 are used by _synthetic)


@dataclass(frozen=True)
class RandomParams:
    candidates: int = 1  # subsets drawn; > 1: keep the best on val (the matched baseline)
    eval_epochs: int = 300  # training of the network that scores a subset on val (candidates > 1)
    eval_lr: float = 0.01
    augment: bool = False  # DSA while scoring, as DSA/DM/MTT score their checkpoints

    def __post_init__(self) -> None:
        check(self.candidates >= 1, f"candidates must be at least 1, got {self.candidates}")
        check(self.eval_epochs >= 1, f"eval_epochs must be at least 1, got {self.eval_epochs}")
        check(self.eval_lr > 0, f"eval_lr must be positive, got {self.eval_lr}")


@register_method("random", params=RandomParams)
def random_selection(task: DistillTask, params: RandomParams) -> CondensedSet:
    """IPC real training images per class, drawn uniformly without replacement (class-balanced)."""
    indices = task.initial_indices()
    chosen, history = 0, []
    if params.candidates > 1:
        labels = task.train.labels[indices]
        aug = syn.augmenter(params.augment, task)
        pool = [indices] + [task.subset_indices(syn.generator_for(task.seed, _CANDIDATES, k))
                            for k in range(1, params.candidates)]
        history = [syn.val_accuracy(task, task.real(idx), labels, epochs=params.eval_epochs, lr=params.eval_lr,
                                    augment=aug) for idx in pool]
        chosen = max(range(len(pool)), key=lambda k: (history[k], -k))
        indices = pool[chosen]
    # The indices travel with the set: a privacy audit must know these are real patients' images.
    return CondensedSet(task.real(indices), task.train.labels[indices].clone(),
                        extras={"train_indices": indices.cpu()},
                        info={"chosen_candidate": chosen, "candidates": params.candidates,
                              "val_history": list(enumerate(history))})
