import copy

import pytest
import torch

from medbench.core.errors import MedbenchError
from medbench.nn.models import ModelSpec, list_models
from medbench.nn.models.convnet import ConvNet, default_depth


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("size", "depth"), [(28, 3), (64, 4), (128, 5)])
def test_convnet_shapes_for_gray_and_rgb(channels, size, depth):
    assert default_depth(size) == depth
    net = ConvNet(channels, num_classes=7, size=size, width=8)
    x = torch.randn(2, channels, size, size)
    assert net(x).shape == (2, 7)
    side = (size + 4 if size == 28 else size) >> depth  # 28 px runs as 32 px (the official network)
    assert net.embed(x).shape == (2, 8 * side * side)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == depth


def test_default_depth_rule_covers_other_sizes():
    assert [default_depth(s) for s in (32, 112, 224)] == [3, 5, 6]


@pytest.mark.parametrize(("norm", "kind"), [("instance", torch.nn.GroupNorm), ("batch", torch.nn.BatchNorm2d)])
def test_norm_choice(norm, kind):
    net = ConvNet(1, 2, 28, width=4, norm=norm)
    assert any(isinstance(m, kind) for m in net.modules())
    instance = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert all(m.num_groups == m.num_channels for m in instance)  # one group per channel


def test_registry_and_bad_options():
    assert "convnet" in list_models()
    assert ModelSpec("convnet", {"width": 4}).build(3, 5, 28)(torch.randn(1, 3, 28, 28)).shape == (1, 5)
    with pytest.raises(MedbenchError, match="below one pixel"):
        ConvNet(1, 2, 28, depth=6)
    with pytest.raises(MedbenchError, match="unknown model"):
        ModelSpec("nonet").build(1, 2, 28)


@pytest.mark.parametrize("shape", [(16, 128, 28, 28), (16, 128, 7, 7), (3, 8, 9, 9), (80, 32, 28, 28)])
def test_the_cpu_pool_is_avg_pool_bit_for_bit(shape):
    """AvgPool2x2 runs as a depthwise convolution on a CPU: the same outputs, input gradients and
    second derivatives (MTT's unroll differentiates through them twice) as nn.AvgPool2d(2)."""
    from medbench.nn.models.convnet import AvgPool2x2

    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, requires_grad=True)
    upstream = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, generator=g)
    v = torch.randn(*shape, generator=g)
    results = []
    for pool in (torch.nn.AvgPool2d(2), AvgPool2x2()):
        y = pool(x)
        (grad,) = torch.autograd.grad(y, x, upstream * y, create_graph=True)  # nonlinear in x: a real 2nd order
        (second,) = torch.autograd.grad(grad, x, v)
        results.append((y, grad, second))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast it is avg_pool2d itself
        assert torch.equal(AvgPool2x2()(x), torch.nn.AvgPool2d(2)(x))


def test_convnet_trains_the_same_with_either_pool():
    from medbench.nn.models.convnet import AvgPool2x2

    torch.manual_seed(0)
    net = ConvNet(3, 4, 28, width=16)
    plain = copy.deepcopy(net)
    for i, m in enumerate(plain.features):
        if isinstance(m, AvgPool2x2):
            plain.features[i] = torch.nn.AvgPool2d(2)
    x, y = torch.randn(12, 3, 28, 28), torch.arange(12) % 4
    for model in (net, plain):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(5):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), plain.parameters(), strict=True))
