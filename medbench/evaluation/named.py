"""Named evaluation protocols: the published ones, each with its source.

A protocol name fixes how evaluation networks are trained on a condensed set. ``medbench run
--protocol NAME`` (or ``protocol: NAME`` in a grid file) starts from one; fields given explicitly
(``--epochs``, ``eval: {width: 32}``) override it, and every table says which fields were changed.
The name is not part of a protocol's identity: ``dsa``, ``dm`` and ``mtt`` name the same
settings, so their cells are one protocol and can be compared.

Facts from the official code (DatasetCondensation ``main.py``, ``main_DM.py``, ``utils.py``;
mtt-distillation ``distill.py``, ``utils.py``): every paper trains the evaluation ConvNet
(width 128, instance norm, average pooling) with SGD, momentum 0.9, weight decay 5e-4, lr 0.01,
batch 256, the lr divided by 10 halfway. DC trains 300 epochs without augmentation (its MNIST
runs aside); DSA, DM and MTT train 1,000 epochs with DSA augmentation, and MTT with its learned
lr. medbench uses the learned lr wherever a method learns one, under every protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from medbench.core import hparams
from medbench.core.registry import Registry
from medbench.evaluation.protocol import Protocol

DEFAULT_PROTOCOL = Protocol.name  # the dataclass's default: "dsa"


@dataclass(frozen=True)
class NamedProtocol:
    name: str
    settings: dict[str, Any]  # fields of Protocol; the rest keep medbench's defaults
    source: str

    def build(self, overrides: dict[str, Any] | None = None) -> Protocol:
        """This protocol with ``overrides`` applied (validated like any other setting)."""
        values = {**self.settings, **(overrides or {}), "name": self.name}
        return hparams.build(Protocol, values, context=f"protocol {self.name}")


PROTOCOLS: Registry[NamedProtocol] = Registry("protocol")

# What every paper shares (see the module doc); medbench's own choices (eval_models, full_epochs)
# are not pinned, so they stay medbench's defaults under every name.
_COMMON = {"model": "convnet", "width": 128, "depth": None, "norm": "instance", "lr": 0.01, "momentum": 0.9,
           "weight_decay": 5e-4, "batch_size": 256, "use_learned_lr": True}


def register_protocol(name: str, settings: dict[str, Any], source: str) -> NamedProtocol:
    return PROTOCOLS.add(name, NamedProtocol(name, {**_COMMON, **settings}, source))


register_protocol("dc", {"epochs": 300, "augment": "none"},
                  "DC (Zhao, Mopuri & Bilen, ICLR 2021), DatasetCondensation main.py: epoch_eval_train 300, "
                  "no augmentation (its MNIST runs use crop/scale/rotate and 1,000 epochs; 20 networks)")
register_protocol("dsa", {"epochs": 1000, "augment": "dsa"},
                  "DSA (Zhao & Bilen, ICML 2021), DatasetCondensation main.py --method DSA: 1,000 epochs with DSA "
                  "augmentation, color_crop_cutout_flip_scale_rotate (20 networks)")
register_protocol("dm", {"epochs": 1000, "augment": "dsa"},
                  "DM (Zhao & Bilen, WACV 2023), DatasetCondensation main_DM.py: 1,000 epochs with DSA "
                  "augmentation (20 networks; its README runs 5)")
register_protocol("mtt", {"epochs": 1000, "augment": "dsa"},
                  "MTT (Cazenavette et al., CVPR 2022), mtt-distillation distill.py: 1,000 epochs with DSA "
                  "augmentation and the learned lr (5 networks)")


def named_protocol(name: str, overrides: dict[str, Any] | None = None) -> Protocol:
    """The protocol ``name`` with explicit ``overrides``; an unknown name fails with the list."""
    return PROTOCOLS.get(name).build(overrides)


def changed_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a stored protocol that differ from the named protocol it started from
    (all settings when the name is unknown, e.g. cells stored before protocols had names)."""
    name = record.get("name")
    base = PROTOCOLS.get(name).build().record() if name in PROTOCOLS else {}
    keys = [f.name for f in fields(Protocol) if f.name != "name"]
    return {k: record.get(k) for k in keys if k in record and (not base or record.get(k) != base.get(k))}
