"""Benchmarks of one DC outer step and one DM iteration at the reference scale: IPC 10, 28 px
RGB, 8 classes, ConvNet width 128 depth 3, real batch 256 per class (generated data).

A DC *iteration* at IPC 10 is 10 such outer steps plus 9 × 50 inner epochs on the 80 images;
record numbers with ``pytest tests/benchmarks/test_bench_distill.py --benchmark-enable``.
"""

from __future__ import annotations

import pytest
import torch

from medbench.data.splits import Split
from medbench.distill.contract import DistillTask
from medbench.methods import synthetic as syn
from medbench.methods.dc import DISTANCES, gradient_loss
from medbench.methods.dm import matching_loss
from medbench.nn.augment import AugmentConfig, SiameseAugment
from medbench.nn.models import ModelSpec

CLASSES, IPC, SIZE, BATCH_REAL = 8, 10, 28, 256


@pytest.fixture(scope="module")
def task() -> DistillTask:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(CLASSES).repeat_interleave(BATCH_REAL)
    images = torch.randint(0, 256, (len(labels), 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    split = Split(images, labels)
    return DistillTask(train=split, val=split, num_classes=CLASSES, ipc=IPC, seed=0, device=torch.device("cpu"),
                       normalize=lambda x: x.float() / 127.5 - 1,
                       model=ModelSpec("convnet", {"width": 128, "depth": 3, "norm": "instance"}))


def _images(task: DistillTask) -> tuple[torch.Tensor, torch.optim.Optimizer]:
    images = syn.initial_set(task, "real")[0].requires_grad_(True)
    return images, torch.optim.SGD([images], lr=0.1, momentum=0.5)


def test_bench_dc_outer_step(benchmark, task) -> None:
    """Per-class real and synthetic gradients, matching distance, one image update (DSA adds
    only the augmentation of the batches, small next to the gradients: measured within noise)."""
    images, optimizer = _images(task)
    net = syn.fresh_model(task, torch.Generator().manual_seed(0))
    aug = None
    generator = torch.Generator().manual_seed(1)

    def outer_step() -> torch.Tensor:
        loss = gradient_loss(net, task, images, generator, batch_real=BATCH_REAL, distance=DISTANCES["ours"],
                             augment=aug)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach()

    loss = benchmark.pedantic(outer_step, rounds=3, warmup_rounds=1)
    assert torch.isfinite(loss)


def test_bench_dm_iteration(benchmark, task) -> None:
    """A fresh network, embeddings of 8 × 256 real and 80 synthetic images, one image update."""
    images, optimizer = _images(task)
    aug = SiameseAugment(AugmentConfig(), 3)
    generator = torch.Generator().manual_seed(1)

    def iteration() -> torch.Tensor:
        loss = matching_loss(task, images, generator, batch_real=BATCH_REAL, augment=aug)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach()

    loss = benchmark.pedantic(iteration, rounds=5, warmup_rounds=1)
    assert torch.isfinite(loss)
