"""Moving small host tensors (permutations, augmentation draws, expert snapshots) to the device
without stalling it.

Random draws stay on the CPU generator so a seed gives the same run on every device; each draw
then has to reach the GPU. A plain ``.to("cuda")`` of pageable memory synchronises the stream,
i.e. waits for every queued kernel, which in the inner loops (once per SGD step) empties the
GPU's queue. A pinned copy (cached by torch's host allocator) with ``non_blocking`` is queued
instead. Runs on an H200 (``reports/bench``), where its own effect was not measured apart;
on the CPU it is the identity.
"""

from __future__ import annotations

import torch

from medbench.core.errors import MedbenchError


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device``; a CPU -> CUDA copy is queued without a host sync."""
    device = torch.device(device)
    if t.device == device or (device.type == "cpu" and t.device.type == "cpu"):
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MedbenchError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda"):
        raise MedbenchError(f"unsupported device {name!r}; use cpu, cuda, cuda:N or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MedbenchError(f"device {name!r} asked for, but CUDA is not available here")
    return device
