"""Model registry: ``@register_model("name")`` over ``factory(channels, num_classes, size, **kw)``;
architecture versions; :class:`ModelSpec`, what a protocol builds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from medbench.core.registry import Registry

ModelFactory = Callable[..., nn.Module]
# The built-in networks by name (imported on first lookup); plug-ins use the "medbench.models" group.
BUILTIN_MODELS = {"convnet": "medbench.nn.models.convnet:convnet",
                  **{name: "medbench.nn.models.torchvision_nets" for name in ("resnet18", "vgg11", "alexnet",
                                                                              "convnet_bn")}}
MODELS: Registry[ModelFactory] = Registry("model", entry_point_group="medbench.models", builtins=BUILTIN_MODELS)
# name -> architecture version. A change that alters what a network computes (a layer's padding, a
# feature size) bumps the version; the version is part of every protocol's identity, so results made
# with the old network are never pooled with new ones.
VERSIONS: dict[str, int] = {}


def register_model(name: str, *, version: int = 1) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``factory(channels, num_classes, size, **options)`` under ``name`` at ``version``."""

    def wrap(_name: str, factory: ModelFactory) -> ModelFactory:
        VERSIONS[name] = version
        return factory

    return MODELS.decorator(name, wrap)


def architecture(name: str) -> str:
    """``name-vN``: the model and its architecture version (unknown names fail with the list)."""
    MODELS.get(name)
    return f"{name}-v{VERSIONS.get(name, 1)}"


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)


@dataclass(frozen=True)
class ModelSpec:
    """Which network to build and with what options; everything else comes from the data."""

    name: str = "convnet"
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, channels: int, num_classes: int, size: int) -> nn.Module:
        return MODELS.get(self.name)(channels=channels, num_classes=num_classes, size=size, **self.options)
