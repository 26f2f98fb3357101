"""Benchmarks of one MTT iteration (small, so the default --benchmark-disable smoke run is quick).

For the memory curve over J run ``python tests/benchmarks/mtt_memory.py`` (a subprocess per
setting; see that file).
"""

from __future__ import annotations

import pytest
import torch
from mtt_memory import probe

from medbench.methods.trajectory import IMPLEMENTATIONS, FlatParams, build_seeded, plan_unroll
from medbench.nn.augment import AugmentConfig, SiameseAugment
from medbench.nn.models import ModelSpec


@pytest.mark.parametrize("implementation", sorted(IMPLEMENTATIONS))
def test_bench_mtt_iteration(benchmark, implementation):
    """One distillation iteration: 3 classes × IPC 2, 16 px RGB, width-16 ConvNet, J = 4, DSA."""
    torch.manual_seed(0)
    net = FlatParams(build_seeded(ModelSpec("convnet", {"width": 16}), 3, 3, 16, 0, torch.device("cpu")))
    g = torch.Generator().manual_seed(0)
    start = net.flatten()
    target = start + 0.01 * torch.randn(net.size, generator=g)
    images = torch.randn(6, 3, 16, 16, generator=g)
    labels = torch.arange(3).repeat_interleave(2)
    augment = SiameseAugment(AugmentConfig(), 3)
    plan = plan_unroll(6, 6, 4, g, augment, images)
    match = IMPLEMENTATIONS[implementation]
    out = benchmark(match, net, images, labels, torch.tensor(0.01), start, target, plan, augment)
    assert torch.isfinite(out.grad_images).all()


def test_memory_probe_runs_in_subprocess():
    """The probe script works end to end (tiny setting; the real table is run by hand)."""
    row = probe("tesla", 2, classes=2, ipc=1, size=8, width=4, augment=False, threads=1)
    assert row["steps"] == 2 and row["peak_mb"] > 0 and row["delta_mb"] >= 0 and row["params"] > 0
