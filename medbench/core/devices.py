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

import os

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


# Share of the device's free memory a process takes by default (``--memory-budget``): half, so the
# data, the evaluation networks and the operating system keep the rest.
MEMORY_SHARE = 0.5


def free_bytes(device: torch.device | str) -> int:
    """Memory free on ``device`` now: CUDA's free memory, or the host's ``MemAvailable``."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_memory_budget(device: torch.device | str, processes: int = 1) -> int:
    """Bytes one of ``processes`` workers may plan for (:data:`MEMORY_SHARE` of the free memory)."""
    return int(free_bytes(device) * MEMORY_SHARE / max(1, processes))
