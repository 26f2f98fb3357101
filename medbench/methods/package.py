"""``package``: a distilled set exported by another site (``medbench export``) as the training set.

Keeping the package a *method* rather than a dataset leaves the dataset layer untouched: the
receiver names their own dataset (val/test come from there), the package only replaces the
distillation step, and the standard protocol evaluates it like any method's output.

A package holds a *training* set only. The receiver names a dataset of their own (the same task,
e.g. their PneumoniaMNIST-style data) and evaluates with the standard protocol on its val/test,
through the ``package`` method: ``medbench run --methods package --method-args
package:path=DIR --ipc N --datasets THEIRS``. The images are moved from the source's
normalisation into the receiver's (the pixels are what was shared; the statistics belong to each
site's training split), and a ZCA transform is rewritten to take receiver-normalised inputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medbench.core.errors import MedbenchError
from medbench.core.files import npz_arrays
from medbench.data.package import MANIFEST, NPZ, require_valid
from medbench.data.splits import Splits
from medbench.distill.contract import CondensedSet, DistillTask, register_method


def is_package(path: Path | str) -> bool:
    return (Path(path).expanduser() / MANIFEST).is_file()


def _receiver_stats(task: DistillTask) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std behind ``task.normalize`` (an affine map of pixel/255)."""
    c = task.channels
    zero = task.normalize(torch.zeros(1, c, 1, 1, dtype=torch.uint8, device=task.device)).cpu().view(c)
    one = task.normalize(torch.full((1, c, 1, 1), 255, dtype=torch.uint8, device=task.device)).cpu().view(c)
    std = 1.0 / (one - zero)
    return -zero * std, std


def check_compatible(manifest: dict[str, Any], channels: int, size: int, num_classes: int, ipc: int,
                     where: str) -> None:
    """One line naming every mismatch between the package and the receiving dataset."""
    ds = manifest.get("dataset", {})
    ours = (ds.get("channels"), ds.get("size"), ds.get("num_classes"))
    theirs = (channels, size, num_classes)
    if ours != theirs:
        raise MedbenchError(
            f"{where}: package from {ds.get('name')} is {ours[0]}-channel {ours[1]} px with {ours[2]} classes, "
            f"the dataset is {channels}-channel {size} px with {num_classes} classes")
    if manifest.get("ipc") is not None and ipc != manifest["ipc"]:
        raise MedbenchError(f"{where}: package has IPC {manifest['ipc']}; run it with --ipc {manifest['ipc']}")


def check_package(path: Path, sha256: str, channels: int, size: int, num_classes: int, ipc: int) -> dict[str, Any]:
    """Verify a package (every checksum, the pinned sha256) and its fit to the receiving dataset;
    its manifest, or one line naming the problem."""
    path = Path(path).expanduser()
    manifest = require_valid(path).manifest
    if sha256 and manifest["files"][NPZ]["sha256"] != sha256:
        raise MedbenchError(f"{path}: {NPZ} has sha256 {manifest['files'][NPZ]['sha256'][:12]}…, "
                            f"not the pinned {sha256[:12]}…")
    check_compatible(manifest, channels, size, num_classes, ipc, str(path))
    return manifest


def package_condensed(path: Path, task: DistillTask, sha256: str = "") -> CondensedSet:
    """The package's images as a condensed set in ``task``'s normalisation, after verifying it."""
    path = Path(path).expanduser()
    manifest = check_package(path, sha256, task.channels, task.size, task.num_classes, task.ipc)
    arrays = npz_arrays(path / NPZ)
    images = torch.from_numpy(arrays["images_float32"]).float()
    c = images.shape[1]
    src_mean = torch.from_numpy(arrays["norm_mean"].astype(np.float32)).view(1, c, 1, 1)
    src_std = torch.from_numpy(arrays["norm_std"].astype(np.float32)).view(1, c, 1, 1)
    extras: dict[str, torch.Tensor] = {}
    if "extra_zca_matrix" in arrays:
        # Images live in the ZCA space; leave them and fold the change of normalisation into the
        # transform instead: W (a⊙x_r + b − μ) = (W diag a)(x_r − (μ − b)/a).
        mean_r, std_r = _receiver_stats(task)
        hw = images.shape[2] * images.shape[3]
        a = (std_r / src_std.view(c)).repeat_interleave(hw)
        b = ((mean_r - src_mean.view(c)) / src_std.view(c)).repeat_interleave(hw)
        matrix = torch.from_numpy(arrays["extra_zca_matrix"]).float()
        mu = torch.from_numpy(arrays["extra_zca_mean"]).float()
        extras = {"zca_matrix": matrix * a[None, :], "zca_mean": (mu - b) / a}
    else:
        pixels = images * src_std + src_mean  # [0, 1] pixel space of the source
        images = task.normalize((pixels * 255.0).to(task.device)).cpu()  # float input: no rounding
    if "soft_labels" in arrays:
        labels = torch.from_numpy(arrays["soft_labels"]).float()
    else:
        labels = torch.from_numpy(arrays["train_labels"].reshape(-1).astype(np.int64))
    lr = float(arrays["learned_lr"]) if "learned_lr" in arrays else None
    info = {"package_cell": manifest.get("source_cell", {}).get("cell_id"),
            "package_sha256": manifest["files"][NPZ]["sha256"],
            "package_dataset": manifest.get("dataset", {}).get("name"),
            "package_method": manifest.get("method", {}).get("name")}
    return CondensedSet(images.contiguous(), labels, lr=lr, extras=extras, info=info)


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


@register_method("package", params=PackageParams, selects=False, preflight=preflight,
                 conform_params="medbench.testing.inputs:package_params", exempt={
                     "seed": "the package fixes the set", "checkpoints": "reads a package, no iterations",
                     "resume": "reads a package", "budget": "reads a package", "non-finite": "no loss",
                     "provenance": "its images are another site's; their indices there are in its manifest"})
def package(task: DistillTask, params: PackageParams) -> CondensedSet:
    """A shared package (medbench export) as the training set, evaluated on your own val/test."""
    return package_condensed(Path(params.path), task, params.sha256)
