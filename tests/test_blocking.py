"""Cache-sized blocks on a CPU: chosen from shapes, the same forward outputs, the same gradients up
to float rounding, never through batch norm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import medbench.nn.blocking as blocking
from medbench.nn.blocking import block_size, in_blocks
from medbench.nn.models import ModelSpec
from medbench.nn.training import predict_proba, train_network

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(width: int = 128, norm: str = "instance", size: int = 32) -> torch.nn.Module:
    torch.manual_seed(0)
    return ModelSpec("convnet", {"width": width, "depth": 3, "norm": norm}).build(3, 4, size)


@pytest.mark.parametrize("width, size, expected", [(128, 32, 16), (128, 28, 16), (32, 28, 64), (128, 64, 4),
                                                   (16, 28, 128)])
def test_the_block_is_a_power_of_two_whose_first_activation_fits_8_mib(width, size, expected):
    images = torch.zeros(512, 3, size, size)
    assert block_size(_net(width, size=size), images) == expected
    assert expected * width * size * size * 4 <= blocking.BLOCK_BYTES < 2 * expected * width * size * size * 4


def test_no_blocks_through_batch_norm_or_for_few_images():
    images = torch.zeros(512, 3, 32, 32)
    assert block_size(_net(norm="batch"), images) == 512
    assert block_size(_net(), images[:10]) == 10


def test_forward_in_blocks_equals_one_pass():
    net, x = _net(), torch.randn(48, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(in_blocks(net.embed, net, x), net.embed(x), rtol=1e-5, atol=1e-6)
        probs = predict_proba(net, x)
        assert torch.allclose(probs, torch.softmax(net(x), 1), rtol=1e-5, atol=1e-6)


def test_a_training_step_in_blocks_matches_one_pass_per_parameter(monkeypatch):
    """Three SGD epochs on 64 images (4 blocks of 16 at width 128) against the same run in one pass:
    every parameter within float tolerance."""
    x, y = torch.randn(64, 3, 32, 32), torch.arange(64) % 4
    blocked = train_network(_net(), x, y, epochs=3, lr=0.01, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(blocking, "BLOCK_BYTES", 2**40)  # one block: the plain step
    plain = train_network(_net(), x, y, epochs=3, lr=0.01, generator=torch.Generator().manual_seed(0))
    for (name, a), b in zip(blocked.named_parameters(), plain.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name
    loss = F.cross_entropy(blocked(x), y)
    assert torch.isfinite(loss)
