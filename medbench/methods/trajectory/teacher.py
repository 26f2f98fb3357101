"""The expert buffer as a method's settings, and what its experts teach beyond trajectories.

:class:`BufferParams` are the settings every trajectory-matching method (and ``random_soft``)
shares to find or build one buffer (:mod:`.buffer`); ``prepare_buffer`` builds it once per
dataset before the cells. :func:`teacher_logits` turns the experts into a teacher for soft labels
(DATM's label initialisation, the soft-label random baseline).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from medbench.core.errors import MedbenchError
from medbench.core.hparams import check
from medbench.data.splits import Splits
from medbench.distill.contract import DistillTask
from medbench.nn.models import ModelSpec
from medbench.nn.whitening import ZCA

from .buffer import ExpertBuffer, ExpertConfig, FlatParams, build_buffer, build_seeded, resolve_root


@dataclass(frozen=True)
class BufferParams:
    """Which expert buffer a method uses; defaults as the official mtt-distillation buffer.py
    (100 experts × 50 epochs, SGD lr 0.01, batch 256, DSA)."""

    lr_teacher: float = 0.01  # the experts' SGD lr (and MTT's initial learned lr α)
    augment: bool = True  # DSA in expert training (and in the student steps of MTT/DATM)
    zca: bool = False
    buffer_dir: str | None = None  # a built buffer directory to use as is
    experts_root: str | None = None  # cache root; None: $MEDBENCH_EXPERTS, else ~/.medmnist/medbench_experts
    num_experts: int = 100
    buffer_epochs: int = 50  # E: epochs each expert is trained for
    batch_train: int = 256  # expert training batch
    expert_dtype: Literal["float32", "bfloat16"] = "float32"
    expert_seed: int = 0  # fixed, so every run of a dataset shares one buffer

    def __post_init__(self) -> None:
        check_buffer_params(self)

    def expert_config(self) -> ExpertConfig:
        return ExpertConfig(num_experts=self.num_experts, epochs=self.buffer_epochs, lr=self.lr_teacher,
                            batch_size=self.batch_train, augment=self.augment, zca=self.zca,
                            dtype=self.expert_dtype, seed=self.expert_seed)


def check_buffer_params(p: BufferParams) -> None:
    check(p.lr_teacher > 0 and math.isfinite(p.lr_teacher), f"lr_teacher must be positive, got {p.lr_teacher}")
    check(p.num_experts >= 1, f"num_experts must be at least 1, got {p.num_experts}")
    check(p.buffer_epochs >= 1, f"buffer_epochs must be at least 1, got {p.buffer_epochs}")


def open_buffer(task: DistillTask, params: BufferParams, epochs_needed: int = 0) -> ExpertBuffer:
    """The buffer named by ``buffer_dir``, else the cached one for this data (built if missing),
    checked against the task's network, the epochs the method will read and its ZCA setting."""
    if params.buffer_dir:
        buffer = ExpertBuffer(params.buffer_dir)
    else:
        buffer = build_buffer(task, params.expert_config(), resolve_root(params.experts_root),
                              progress=task.progress)
    net = FlatParams(build_seeded(task.model, task.channels, task.num_classes, task.size, 0,
                                  torch.device("cpu")))
    if buffer.num_params != net.size:
        raise MedbenchError(f"expert buffer {buffer.path} holds {buffer.num_params} parameters per "
                            f"network, the task's model has {net.size}")
    if epochs_needed > buffer.num_epochs:
        raise MedbenchError(f"expert buffer {buffer.path} has {buffer.num_epochs} epochs, fewer than the "
                            f"{epochs_needed} the matching range needs")
    if buffer.config.zca != params.zca:
        raise MedbenchError(f"expert buffer {buffer.path} was built with zca={buffer.config.zca}, "
                            f"the method runs with zca={params.zca}")
    return buffer


def prepare_buffer(splits: Splits, params: BufferParams, model: ModelSpec,
                   progress: Callable[[int, int], None] | None = None) -> ExpertBuffer | None:
    """Build the dataset's expert buffer once, before its cells, from the full splits so the
    experts' test accuracy (this protocol's full-data reference) is recorded."""
    if params.buffer_dir:
        return None
    return build_buffer(splits, params.expert_config(), resolve_root(params.experts_root), model=model,
                        progress=progress)


@torch.no_grad()
def teacher_logits(task: DistillTask, buffer: ExpertBuffer, images: torch.Tensor, labels: torch.Tensor,
                   zca: ZCA | None = None, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """The experts' logits on ``images`` (normalised, whitened when ``zca``), averaged as DATM
    initialises its labels: each image's logits are the mean over the experts (at their last epoch)
    that classify it correctly; an image no expert gets right takes the mean over all experts.

    Returns ``(logits (N, classes), correct (N,))``: ``correct`` says whether the *first* expert
    classifies the image correctly (DATM keeps only such images when it initialises).
    """
    net = FlatParams(build_seeded(task.model, task.channels, task.num_classes, task.size, 0, task.device))
    net.module.eval()
    x = zca(images) if zca is not None else images
    total = torch.zeros(len(images), task.num_classes, device=images.device)
    every = torch.zeros_like(total)
    hits = torch.zeros(len(images), 1, device=images.device)
    first_correct = torch.zeros(len(images), dtype=torch.bool, device=images.device)
    for e in range(buffer.num_experts):
        theta = buffer.snapshots(e, [buffer.num_epochs]).to(task.device).float()[0]
        logits = torch.cat([net(theta, x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        right = (logits.argmax(1) == labels).unsqueeze(1)
        total += logits * right
        every += logits
        hits += right
        if e == 0:
            first_correct = right.squeeze(1)
    mean = torch.where(hits > 0, total / hits.clamp(min=1), every / buffer.num_experts)
    return mean, first_correct
