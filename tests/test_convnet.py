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
