"""The one evaluation protocol every method's output goes through.

Train K fresh networks from K derived seeds on the condensed set, score all of them on val,
and only then on test: nothing is ever chosen after the test split has been looked at.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from medbench.augment import AugmentConfig, SiameseAugment
from medbench.data.splits import Splits
from medbench.evaluation.metrics import classification_metrics
from medbench.hparams import check
from medbench.method import CondensedSet
from medbench.models import ModelSpec
from medbench.training import Augment, predict_proba, train_network
from medbench.whitening import ZCA


def _dsa(channels: int) -> Augment:
    return SiameseAugment(AugmentConfig(), channels)


# Evaluation-time augmentation by name: a factory from the number of channels to an augment.
EVAL_AUGMENTS: dict[str, Callable[[int], Augment | None]] = {"none": lambda channels: None, "dsa": _dsa}


@dataclass(frozen=True)
class Protocol:
    """How condensed sets are evaluated. Defaults follow the DC/DSA/DM/MTT evaluation code."""

    model: str = "convnet"
    width: int = 128
    depth: int | None = None  # None: by resolution (3 for 28–32 px, 4 for 64, 5 for 112–128)
    norm: str = "instance"
    epochs: int = 300
    full_epochs: int = 100  # the whole training set: MedMNIST v2's own training budget
    lr: float = 0.01
    use_learned_lr: bool = True  # a method's learned lr (MTT) replaces ``lr`` when present
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    eval_models: int = 5
    augment: str = "none"  # "dsa": DSA's augmentation (per-image draws) while training on the set

    def __post_init__(self) -> None:
        check(self.epochs >= 1 and self.full_epochs >= 1, "epochs must be at least 1")
        check(self.lr > 0, f"lr must be positive, got {self.lr}")
        check(self.batch_size >= 1, "batch size must be at least 1")
        check(self.eval_models >= 1, "eval models must be at least 1")
        check(self.width >= 1 and (self.depth is None or self.depth >= 1), "width and depth must be ≥ 1")
        check(self.augment in EVAL_AUGMENTS,
              f"unknown eval augmentation {self.augment!r}; available: {', '.join(EVAL_AUGMENTS)}")

    def model_spec(self) -> ModelSpec:
        options = {"width": self.width, "depth": self.depth, "norm": self.norm}
        return ModelSpec(self.model, options if self.model == "convnet" else {})


@dataclass(frozen=True)
class ModelScore:
    """The scores of one evaluation network."""

    index: int
    seed: int
    lr: float
    epochs: int
    val: dict[str, float]
    test: dict[str, float]
    train_seconds: float


def model_seeds(seed: int, count: int) -> list[int]:
    """Independent, reproducible seeds for the K evaluation networks of one cell."""
    return [int(s) for s in np.random.SeedSequence([seed, 0x5EED]).generate_state(count)]


def evaluate(
    condensed: CondensedSet,
    splits: Splits,
    protocol: Protocol,
    *,
    seed: int,
    full: bool = False,
    on_epoch: Callable[[int, int], None] | None = None,
) -> list[ModelScore]:
    """Train ``protocol.eval_models`` networks on ``condensed`` and score them on val, then test."""
    device = splits.device
    images = condensed.images.to(device)
    labels = condensed.labels.to(device)
    lr = condensed.lr if (protocol.use_learned_lr and condensed.lr) else protocol.lr
    epochs = protocol.full_epochs if full else protocol.epochs
    spec = protocol.model_spec()
    seeds = model_seeds(seed, protocol.eval_models)
    total_epochs = epochs * len(seeds)
    augment = EVAL_AUGMENTS[protocol.augment](splits.channels)

    trained = []
    for k, model_seed in enumerate(seeds):
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(model_seed)
            model = spec.build(splits.channels, splits.num_classes, splits.size).to(device)
        generator = torch.Generator().manual_seed(model_seed)
        start = time.perf_counter()
        train_network(
            model, images, labels, epochs=epochs, lr=lr, generator=generator,
            momentum=protocol.momentum, weight_decay=protocol.weight_decay, batch_size=protocol.batch_size,
            augment=augment, on_epoch=(lambda e, k=k: on_epoch(k * epochs + e, total_epochs)) if on_epoch else None,
        )
        trained.append((k, model_seed, model, time.perf_counter() - start))

    # A set distilled in ZCA-whitened space (MTT with zca) carries its transform: real images
    # must be scored in that same space.
    zca = ZCA.from_extras(condensed.extras)
    prepare = splits.normalize if zca is None else (lambda x: zca(splits.normalize(x)))

    def score(model: torch.nn.Module, split_name: str) -> dict[str, float]:
        split = getattr(splits, split_name)
        probs = predict_proba(model, split.images, prepare=prepare)
        return classification_metrics(split.labels.cpu().numpy(), probs.numpy())

    val_scores = [score(model, "val") for _, _, model, _ in trained]
    # The test split is read only here, after every network is trained and scored on val.
    test_scores = [score(model, "test") for _, _, model, _ in trained]
    return [
        ModelScore(k, s, float(lr), epochs, v, t, secs)
        for (k, s, _, secs), v, t in zip(trained, val_scores, test_scores, strict=True)
    ]
