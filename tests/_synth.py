"""The distillation tests' tiny generated problem (:func:`medbench.testing.data.make_splits`, no
files, no network), a tiny network, a task around them and a held-out yardstick."""

from __future__ import annotations

from pathlib import Path

import torch

from medbench.data.splits import Splits
from medbench.distill.contract import CondensedSet, DistillTask
from medbench.nn.models import ModelSpec
from medbench.nn.training import accuracy, train_network
from medbench.testing.data import make_splits  # noqa: F401  (the tests import it from here)


def tiny_model(width: int = 8, depth: int = 2) -> ModelSpec:
    return ModelSpec("convnet", {"width": width, "depth": depth, "norm": "instance"})


def make_task(splits: Splits, ipc: int = 1, *, seed: int = 0, model: ModelSpec | None = None,
              checkpoint_dir: Path | None = None, progress=None) -> DistillTask:
    return DistillTask(train=splits.train, val=splits.val, num_classes=splits.num_classes, ipc=ipc, seed=seed,
                       device=torch.device("cpu"), normalize=splits.normalize, model=model or tiny_model(),
                       checkpoint_dir=checkpoint_dir, progress=progress)


def held_out_accuracy(splits: Splits, condensed: CondensedSet, seeds: int = 2) -> float:
    """Mean accuracy on the held-out split of tiny networks trained on ``condensed`` (the tests' yardstick)."""
    scores = []
    for s in range(seeds):
        torch.manual_seed(s)
        model = tiny_model().build(splits.channels, splits.num_classes, splits.size)
        train_network(model, condensed.images, condensed.labels, epochs=100, lr=0.01,
                      generator=torch.Generator().manual_seed(s))
        scores.append(accuracy(model, splits.test.images, splits.test.labels, prepare=splits.normalize))
    return sum(scores) / len(scores)


def without_timings(info: dict) -> dict:
    """A condensed set's info without its wall-clock seconds (the only part a resume may change);
    the checkpoints' iterations and val scores stay."""
    out = dict(info)
    if "spent" in out:  # FLOPs are counted, not timed: they stay
        out["spent"] = {"flops": out["spent"]["flops"]}  # None: not counted
    if "checkpoints" in out:
        out["checkpoints"] = [(it, val) for it, _seconds, val in out["checkpoints"]]
    return out
