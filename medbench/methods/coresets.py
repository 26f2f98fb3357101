"""Coreset baselines: real training images chosen in the embedding space of a trained network.

A distillation method should beat a *good* selection of real images, not only a random one.
Both selections work per class on the penultimate features (``model.embed``) of the task's
network (the evaluation ConvNet) trained on the whole real training split: ``embed_epochs`` of SGD
(lr ``embed_lr``, momentum 0.9, weight decay 5e-4, batch 256, lr × 0.1 halfway, no augmentation),
initialised and ordered from the cell seed. The same seed gives the same network and selection.

* ``herding`` (Welling, ICML 2009; as a coreset baseline in the DC paper): greedily add the image
  that brings the running mean of the chosen embeddings closest to the class mean.
* ``kcenter`` (greedy farthest-point, Sener & Savarese, ICLR 2018): start from the image nearest
  the class mean, then repeatedly add the image farthest from everything chosen so far.

Both return real patients' images with their training indices, as ``random`` does, so the
privacy audit knows what they are.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch

from medbench.core import seeds
from medbench.core.hparams import check
from medbench.core.seeds import generator_for
from medbench.distill.contract import CondensedSet, DistillTask, register_method
from medbench.nn.models import ModelSpec
from medbench.nn.training import train_network

from . import synthetic as syn


@dataclass(frozen=True)
class CoresetParams:
    embed_epochs: int = 10  # training of the embedding network on the whole training split
    embed_lr: float = 0.01

    def __post_init__(self) -> None:
        check(self.embed_epochs >= 0, f"embed_epochs must be non-negative, got {self.embed_epochs}")
        check(self.embed_lr > 0, f"embed_lr must be positive, got {self.embed_lr}")


# Features of recent (training split, seed, network, settings): herding and k-center at every IPC of a
# seed share one embedding network, trained once per process instead of once per cell. Keyed weakly
# on the training images tensor (a dataset stays loaded across its cells), so a freed dataset's
# entry goes with it; at most CACHED entries are kept (N_train × D float64 each).
CACHED = 2
_features: dict[int, tuple[weakref.ref, OrderedDict[tuple, torch.Tensor]]] = {}


def _entries(images: torch.Tensor) -> OrderedDict[tuple, torch.Tensor]:
    """The cache of one training images tensor (by identity: tensors compare element-wise, so they
    cannot key a WeakKeyDictionary); dropped when the tensor is freed."""
    held = _features.get(id(images))
    if held is None or held[0]() is not images:
        held = (weakref.ref(images), OrderedDict())
        _features[id(images)] = held
        weakref.finalize(images, _features.pop, id(images), None)
    return held[1]


def _cache_key(task: DistillTask, params: CoresetParams) -> tuple:
    probe = torch.tensor([0, 255], dtype=torch.uint8, device=task.device).view(2, 1, 1, 1).expand(
        2, task.channels, 1, 1)
    affine = tuple(task.normalize(probe).flatten().tolist())  # the normalisation, as numbers
    return (task.seed, task.model.name, repr(sorted(task.model.options.items())), params, affine)


def embeddings(task: DistillTask, params: CoresetParams) -> torch.Tensor:
    """(N_train, D) penultimate features of the task's network trained on the real training split,
    from the process's cache when another cell of this dataset, seed and settings made them."""
    if type(task.model) is not ModelSpec:  # a subclass may build other networks (the kit's NaN probe)
        return _embeddings(task, params)
    entries = _entries(task.train.images)
    key = _cache_key(task, params)
    if key not in entries:
        entries[key] = _embeddings(task, params)
        while len(entries) > CACHED:
            entries.popitem(last=False)
    entries.move_to_end(key)
    return entries[key]


@torch.no_grad()
def _embeddings(task: DistillTask, params: CoresetParams, batch_size: int = 1024) -> torch.Tensor:
    generator = generator_for(task.seed, seeds.EMBED, 0)
    net = syn.fresh_model(task, generator)
    images = task.normalize(task.train.images)
    if params.embed_epochs:
        with torch.enable_grad():
            train_network(net, images, task.train.labels, epochs=params.embed_epochs, lr=params.embed_lr,
                          generator=generator)
    net.eval()
    return torch.cat([net.embed(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]).double()


def herding_order(features: torch.Tensor, k: int) -> list[int]:
    """Indices (into ``features``) of ``k`` greedy herding picks: each step adds the row that brings
    the mean of the chosen rows closest (L2) to the mean of all rows."""
    target = features.mean(0)
    total = torch.zeros_like(target)
    available = torch.ones(len(features), dtype=torch.bool)
    chosen: list[int] = []
    for step in range(1, k + 1):
        distance = ((total + features) / step - target).norm(dim=1)
        distance[~available] = float("inf")
        pick = int(distance.argmin())
        chosen.append(pick)
        available[pick] = False
        total += features[pick]
    return chosen


def kcenter_order(features: torch.Tensor, k: int) -> list[int]:
    """Indices of ``k`` greedy k-center picks: the row nearest the mean, then farthest-point."""
    first = int((features - features.mean(0)).norm(dim=1).argmin())
    chosen = [first]
    nearest = (features - features[first]).norm(dim=1)
    nearest[first] = -1.0  # never picked again, even among identical rows (distance 0 everywhere)
    while len(chosen) < k:
        pick = int(nearest.argmax())
        chosen.append(pick)
        nearest = torch.minimum(nearest, (features - features[pick]).norm(dim=1))
        nearest[chosen] = -1.0
    return chosen


# What the conformance kit does not check on a coreset, and why.
SELECTION_EXEMPT = {"checkpoints": "one embedding network, then a greedy selection: no val-scored checkpoints",
                    "resume": "one pass (seconds), nothing to resume", "budget": "one pass, no iterations to stop"}


def _select(task: DistillTask, params: CoresetParams, order) -> CondensedSet:
    syn.check_ipc(task)
    features = embeddings(task, params).cpu()
    picks = []
    for pool in task.class_indices:
        local = order(features[pool.cpu()], task.ipc)
        picks.append(pool[torch.tensor(local, device=pool.device)])
    indices = torch.cat(picks)
    return CondensedSet(task.real(indices), task.train.labels[indices].clone(),
                        extras={"train_indices": indices.cpu()},
                        info={"embedding": f"{task.model.name} trained {params.embed_epochs} epochs on the "
                                           f"training split"})


@register_method("herding", params=CoresetParams, selects=False, exempt=SELECTION_EXEMPT,
                 conform_params={"embed_epochs": 1})
def herding(task: DistillTask, params: CoresetParams) -> CondensedSet:
    """Herding: real images whose running mean embedding tracks the class mean (coreset baseline)."""
    return _select(task, params, herding_order)


@register_method("kcenter", params=CoresetParams, selects=False, exempt=SELECTION_EXEMPT,
                 conform_params={"embed_epochs": 1})
def kcenter(task: DistillTask, params: CoresetParams) -> CondensedSet:
    """Greedy k-center (farthest-point) real images in embedding space (coreset baseline)."""
    return _select(task, params, kcenter_order)
