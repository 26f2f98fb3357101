"""Cross-architecture evaluation networks: torchvision's ResNet-18, VGG-11 and AlexNet adapted to
small medical images (28–224 px, 1 or 3 channels), plus the batch-norm ConvNet.

A distilled set tuned on the ConvNet may not transfer to other networks; these are the usual
"cross-architecture" networks of the distillation literature. They are built from torchvision's
own definitions (random weights) and only the parts that assume 224 px RGB are changed: the
first convolution (channels; 3×3 stride 1 and no max-pool for ResNet at ≤ 64 px; a 5×5 stride-1
stem for AlexNet at ≤ 64 px), max-pools that would pool a feature map below their kernel are
dropped, and the head uses adaptive average pooling so that 28 px works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import nn

from medbench.core.errors import MedbenchError
from medbench.nn.models.convnet import ConvNet
from medbench.nn.models.registry import register_model

Norm = Literal["batch", "instance", "none"]
SMALL = 64  # at or below this resolution the ImageNet stems would throw most pixels away


def _norm_layer(kind: str) -> Callable[[int], nn.Module]:
    if kind == "batch":
        return nn.BatchNorm2d
    if kind == "instance":
        # One group per channel: instance norm with affine parameters and no running statistics,
        # which does not depend on the batch (IPC 1 sets give batches of a handful of images).
        return lambda c: nn.GroupNorm(c, c, affine=True)
    if kind == "none":
        return lambda c: nn.Identity()
    raise MedbenchError(f"unknown norm {kind!r}; choose batch, instance or none")


def _drop_small_pools(features: nn.Sequential, size: int) -> nn.Sequential:
    """Replace each max-pool that would shrink the feature map below 2 px by an identity, so the
    feature extractor runs at 28 px (VGG's five pools and AlexNet's three do not fit) and instance
    norm never sees a single pixel."""
    layers = list(features)
    side = size
    for i, layer in enumerate(layers):
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p = (v if isinstance(v, int) else v[0] for v in (layer.kernel_size, layer.stride, layer.padding))
            out = (side + 2 * p - k) // s + 1
            if isinstance(layer, nn.MaxPool2d) and out < 2:
                layers[i] = nn.Identity()
                continue
            side = out
    return nn.Sequential(*layers)


def _replace_batchnorm(module: nn.Sequential, norm: Callable[[int], nn.Module]) -> nn.Sequential:
    return nn.Sequential(*[norm(m.num_features) if isinstance(m, nn.BatchNorm2d) else m for m in module])


def build_resnet18(channels: int, num_classes: int, size: int, norm: Norm = "batch") -> nn.Module:
    """torchvision's ResNet-18; at ≤ 64 px the stem is conv 3×3 stride 1 without max-pool."""
    from torchvision import models as tvm  # imported on use: torchvision loads slowly
    model = tvm.resnet18(weights=None, num_classes=num_classes, norm_layer=_norm_layer(norm))
    if size <= SMALL:
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
    return model


def build_vgg11(channels: int, num_classes: int, size: int, norm: Norm = "instance") -> nn.Module:
    """torchvision's VGG-11 (configuration A); pools below 2 px dropped, 1×1 adaptive pooling and a
    single linear head (the 4096-wide ImageNet head would dwarf a few hundred training images)."""
    from torchvision import models as tvm  # imported on use: torchvision loads slowly
    model = tvm.vgg11_bn(weights=None) if norm != "none" else tvm.vgg11(weights=None)
    features = model.features
    first = features[0]
    features[0] = nn.Conv2d(channels, first.out_channels, kernel_size=3, padding=1)
    if norm == "instance":
        features = _replace_batchnorm(features, _norm_layer("instance"))
    model.features = _drop_small_pools(features, size)
    model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    model.classifier = nn.Linear(512, num_classes)
    return model


def build_alexnet(channels: int, num_classes: int, size: int, hidden: int = 4096,
                  dropout: float = 0.5) -> nn.Module:
    """torchvision's AlexNet; at ≤ 64 px the 11×11 stride-4 stem becomes 5×5 stride 1, pools that
    no longer fit are dropped, and the head pools adaptively to 1×1 (256 features)."""
    from torchvision import models as tvm  # imported on use: torchvision loads slowly
    model = tvm.alexnet(weights=None, dropout=dropout)
    features = model.features
    if size <= SMALL:
        features[0] = nn.Conv2d(channels, 64, kernel_size=5, stride=1, padding=2)
    else:
        features[0] = nn.Conv2d(channels, 64, kernel_size=11, stride=4, padding=2)
    model.features = _drop_small_pools(features, size)
    model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    model.classifier = nn.Sequential(
        nn.Dropout(p=dropout), nn.Linear(256, hidden), nn.ReLU(inplace=True),
        nn.Dropout(p=dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )
    return model


@register_model("resnet18")
def resnet18(channels: int, num_classes: int, size: int, **options) -> nn.Module:
    return build_resnet18(channels, num_classes, size, **options)


@register_model("vgg11")
def vgg11(channels: int, num_classes: int, size: int, **options) -> nn.Module:
    return build_vgg11(channels, num_classes, size, **options)


@register_model("alexnet")
def alexnet(channels: int, num_classes: int, size: int, **options) -> nn.Module:
    return build_alexnet(channels, num_classes, size, **options)


@register_model("convnet_bn")
def convnet_bn(channels: int, num_classes: int, size: int, **options) -> ConvNet:
    """The ConvNet with batch norm instead of instance norm (ConvNetBN of the literature)."""
    options = {k: v for k, v in options.items() if k != "norm"}
    return ConvNet(channels, num_classes, size, norm="batch", **options)
