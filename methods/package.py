"""``package``: a distilled set exported by another site (``medbench export``) as the training set.

Keeping the package a *method* rather than a dataset leaves the dataset layer untouched: the
receiver names their own dataset (val/test come from there), the package only replaces the
distillation step, and the standard protocol evaluates it like any method's output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medbench.data.splits import Splits
from medbench.errors import MedbenchError
from medbench.method import CondensedSet, DistillTask, register_method
from medbench.sharing.package import check_package, is_package, package_condensed


@dataclass(frozen=True)
class PackageParams:
    path: str = ""  # the package folder (made absolute, so the cell id does not depend on cwd)
    sha256: str = ""  # optional: pin the package's condensed.npz checksum

    def __post_init__(self) -> None:
        if not self.path:
            raise MedbenchError("give the package folder: --method-args package:path=DIR")
        if not is_package(self.path):
            raise MedbenchError(f"{self.path}: no manifest.json here (not a medbench package)")
        object.__setattr__(self, "path", os.path.abspath(Path(self.path).expanduser()))


def preflight(params: PackageParams, splits: Splits, ipc: int | None) -> None:
    """The package verifies (every checksum, the pinned sha256) and fits the dataset and IPC: checked
    before ``run`` creates its database."""
    check_package(Path(params.path), params.sha256, splits.channels, splits.size, splits.num_classes, ipc or 0)


@register_method("package", params=PackageParams, selects=False, preflight=preflight)
def package(task: DistillTask, params: PackageParams) -> CondensedSet:
    """A shared package (medbench export) as the training set, evaluated on your own val/test."""
    return package_condensed(Path(params.path), task, params.sha256)
