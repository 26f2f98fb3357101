"""Networks: the ConvNet of the distillation literature and torchvision's, adapted to small inputs,
by name (:mod:`medbench.nn.models.registry`)."""

from medbench.nn.models.registry import MODELS, VERSIONS, ModelSpec, architecture, list_models, register_model

__all__ = ["MODELS", "VERSIONS", "ModelSpec", "architecture", "list_models", "register_model"]
