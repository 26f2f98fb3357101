"""A tiny generated classification problem for the distillation tests (no files, no network).

Each class is a fixed low-amplitude pattern under strong pixel noise: single real images are
poor class representatives, while the class means are clean, so methods that summarise a class
(DC, DM) beat random selection at IPC 1 by a wide margin.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medbench.data.splits import Split, Splits
from medbench.distill.contract import CondensedSet, DistillTask
from medbench.nn.models import ModelSpec
from medbench.nn.training import accuracy, train_network


def make_splits(num_classes: int = 4, size: int = 12, channels: int = 1, per_class: int = 64,
                signal: float = 30.0, noise: float = 70.0, seed: int = 0) -> Splits:
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(num_classes, channels, size, size, generator=g)

    def split(n: int) -> Split:
        labels = torch.arange(num_classes).repeat_interleave(n)
        x = 128 + signal * templates[labels] + noise * torch.randn(len(labels), channels, size, size, generator=g)
        return Split(x.round().clamp(0, 255).to(torch.uint8), labels)

    train, val, test = split(per_class), split(per_class // 2), split(per_class)
    mean = tuple(float(m) for m in train.images.float().div(255).mean(dim=(0, 2, 3)))
    std = tuple(float(s) for s in train.images.float().div(255).std(dim=(0, 2, 3)))
    return Splits("synthetic", train, val, test, num_classes, mean, std)


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
    if "checkpoints" in out:
        out["checkpoints"] = [(it, val) for it, _seconds, val in out["checkpoints"]]
    return out
