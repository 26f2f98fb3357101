"""Random selection: the yardstick every distillation method is compared with.

With ``candidates=N`` it is the *matched* baseline of a method that chose its result among N
checkpoints on val: N random subsets, each scored on val (in the task's selection metric) by a
network trained on it exactly as the distillation methods score their checkpoints, and the best
one kept. Subset 0 is always the plain random subset of the seed (the one the distillation
methods start from).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medbench.core import seeds
from medbench.core.hparams import check
from medbench.core.seeds import generator_for
from medbench.distill import partition
from medbench.distill.contract import CondensedSet, DistillTask, register_method

from . import synthetic as syn


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


def _choose(task: DistillTask, params: RandomParams, pool: list[torch.Tensor], factor: int = 1) -> CondensedSet:
    """The best of ``pool`` (training indices, ``factor²`` per stored image for a tiled subset) on val,
    subset 0 without scoring when it is the only one."""
    labels = task.train.labels[pool[0][: len(pool[0]) // factor**2]]
    sets = [tiled_images(task, idx, factor) for idx in pool]
    history = []
    if len(pool) > 1:
        aug = syn.augmenter(params.augment, task)
        history = [syn.val_score(task, *partition.expand(x, labels, factor), epochs=params.eval_epochs,
                                 lr=params.eval_lr, augment=aug) for x in sets]
    chosen = max(range(len(pool)), key=lambda k: (history[k], -k)) if history else 0
    # The indices travel with the set: a privacy audit must know these are real patients' images.
    extras = {"train_indices": pool[chosen].cpu(), **({partition.EXTRA: torch.tensor(factor)} if factor > 1 else {})}
    return CondensedSet(sets[chosen], labels.clone(), extras=extras,
                        info={"chosen_candidate": chosen, "candidates": params.candidates,
                              "val_history": list(enumerate(history)),
                              **({"selection_metric": task.selection_metric, "val_score": history[chosen]}
                                 if history else {})})


# What the conformance kit does not check on a one-pass selection, and why.
ONE_PASS = {"checkpoints": "draws subsets in one pass; with candidates > 1 it scores them on val, not checkpoints",
            "resume": "one pass, nothing to resume", "budget": "one pass, no iterations to stop",
            "non-finite": "no loss: it draws real images"}


@register_method("random", params=RandomParams, selects=lambda p: p.candidates > 1, exempt=ONE_PASS,
                 conform_params={"candidates": 2, "eval_epochs": 2})
def random_selection(task: DistillTask, params: RandomParams) -> CondensedSet:
    """IPC real training images per class, drawn uniformly without replacement (class-balanced)."""
    pool = [task.initial_indices()] + [task.subset_indices(generator_for(task.seed, seeds.CANDIDATES, k))
                                       for k in range(1, params.candidates)]
    return _choose(task, params, pool)


def tiled_indices(task: DistillTask, first: torch.Tensor, generator: torch.Generator, factor: int) -> torch.Tensor:
    """Training indices of a tiled subset, tile-major: ``first`` (one image per stored image) as tile 0,
    the other ``factor² − 1`` tiles real images of the same class drawn uniformly from ``generator``
    (with replacement: a small class may repeat an image, tile 0's included)."""
    labels = task.train.labels[first]
    parts = [first]
    for _ in range(factor * factor - 1):
        parts.append(torch.stack([task.class_indices[int(c)][torch.randint(len(task.class_indices[int(c)]), (1,),
                                                                           generator=generator).item()]
                                  for c in labels]))
    return torch.cat(parts)


def tiled_images(task: DistillTask, indices: torch.Tensor, factor: int) -> torch.Tensor:
    """The stored images of a tiled subset (:func:`tiled_indices`): each holds its ``factor²`` real
    images downscaled into a grid (:func:`medbench.distill.partition.tile`)."""
    if factor == 1:
        return task.real(indices)
    parts = indices.view(factor * factor, -1)
    return partition.tile([task.real(p).float() for p in parts], factor)


def initial_tiles(task: DistillTask, factor: int) -> torch.Tensor:
    """IDM's initial set: tile 0 of each stored image random's subset of the seed, the other tiles
    further real images of its class drawn with the seed. ``random_tiled`` candidate 0 is this set."""
    first = task.initial_indices()
    if factor == 1:
        return task.real(first)
    return tiled_images(task, tiled_indices(task, first, generator_for(task.seed, seeds.TILES, 0), factor), factor)


@dataclass(frozen=True)
class TiledParams(RandomParams):
    partition: int = 2  # real images per side of a stored image (IDM's 2: four images in each)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.partition >= 1, f"partition must be at least 1, got {self.partition}")


@register_method("random_tiled", params=TiledParams, selects=lambda p: p.candidates > 1, exempt=ONE_PASS,
                 conform_params={"candidates": 2, "eval_epochs": 2})
def random_tiled(task: DistillTask, params: TiledParams) -> CondensedSet:
    """Random real images tiled partition × partition per stored image: the baseline of IDM-style sets."""
    f = params.partition
    pool = [tiled_indices(task, task.initial_indices(), generator_for(task.seed, seeds.TILES, 0), f)]
    pool += [tiled_indices(task, task.subset_indices(generator_for(task.seed, seeds.CANDIDATES, k)),
                           generator_for(task.seed, seeds.TILES, k), f) for k in range(1, params.candidates)]
    return _choose(task, params, pool, f)
