"""Benchmark of one evaluation epoch: the unit of the protocol's cost (K networks × epochs of it).

ConvNet width 128 (depth 3 at 28 px), 3 channels, IPC 10 × 8 classes = 80 images, batch 256:
one SGD step per epoch, as for every IPC ≤ 32 on an 8-class set. With and without DSA.

    python -m pytest tests/benchmarks/test_bench_eval.py --benchmark-enable --benchmark-autosave
    python -m pytest tests/benchmarks/test_bench_eval.py --benchmark-enable --benchmark-compare
"""

from __future__ import annotations

import pytest
import torch

from medbench.nn.augment import AugmentConfig, SiameseAugment
from medbench.nn.models import ModelSpec
from medbench.nn.training import train_network

CLASSES, IPC, SIZE, CHANNELS = 8, 10, 28, 3


@pytest.mark.parametrize("augment", ["none", "dsa"])
def test_bench_eval_epoch(benchmark, augment):
    """One epoch of the evaluation protocol's training on an IPC-10 condensed set."""
    torch.manual_seed(0)
    model = ModelSpec("convnet", {"width": 128}).build(CHANNELS, CLASSES, SIZE)
    images = torch.randn(CLASSES * IPC, CHANNELS, SIZE, SIZE)
    labels = torch.arange(CLASSES).repeat_interleave(IPC)
    aug = SiameseAugment(AugmentConfig(), CHANNELS) if augment == "dsa" else None
    generator = torch.Generator().manual_seed(0)
    before = [p.detach().clone() for p in model.parameters()]

    benchmark(train_network, model, images, labels, epochs=1, lr=0.01, generator=generator, augment=aug)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert all(torch.isfinite(p).all() for p in model.parameters())
