"""Cache-sized blocks of images for passes through a network on a CPU.

A ConvNet's first activations are large (width 128 at 32 px: 0.5 MB per image), so one pass over a
batch of 256 images streams hundreds of megabytes through memory between layers. Cut into blocks
whose first activation fits in about 8 MiB, each block's activations stay in cache from one layer to
the next: measured on a 2-core Xeon (AVX-512, one thread), a no-grad forward of width 128 at 28 px
ran 1.9× faster in blocks of 16 than in one batch of 512, bit-identical (``reports/bench/``).

The block size is chosen from shapes only (the first convolution's channels and the image size),
never from a measured time, so a command takes the same path on every machine. Blocks are used on a
CPU only (a GPU wants large batches), and never through batch normalisation, whose statistics
depend on the batch; networks that normalise per image (instance norm) give the same outputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

# The first activation of one block, float32. ``MEDBENCH_CPU_BLOCK_BYTES`` overrides it for a whole
# run (its worker processes inherit it); 0 turns blocks off: how speed-only equivalence is measured.
BLOCK_BYTES = int(os.environ.get("MEDBENCH_CPU_BLOCK_BYTES", 8 * 2**20)) or 2**62


def first_width(net: nn.Module) -> int | None:
    """Output channels of the network's first convolution (None: no convolution)."""
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.out_channels if conv is not None else None


def batch_dependent(net: nn.Module) -> bool:
    """Whether the network's outputs depend on the rest of the batch (batch normalisation in training)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in net.modules())


def block_size(net: nn.Module, images: torch.Tensor) -> int:
    """How many of ``images`` (N, C, H, W) go through ``net`` at once: a power of two whose first
    activation fits in :data:`BLOCK_BYTES`, or all of them (a GPU, batch norm, no convolution)."""
    width = first_width(net)
    n = int(images.shape[0])
    if images.device.type != "cpu" or width is None or batch_dependent(net) or images.ndim != 4:
        return max(n, 1)
    per_image = width * int(images.shape[-2]) * int(images.shape[-1]) * 4  # float32 activations
    fits = max(1, BLOCK_BYTES // per_image)
    return min(max(n, 1), 1 << (fits.bit_length() - 1))


def in_blocks(fn: Callable[[torch.Tensor], torch.Tensor], net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``fn(images)`` computed block by block (:func:`block_size`) and concatenated: for functions
    of each image alone (a no-grad forward, an embedding under instance norm)."""
    block = block_size(net, images)
    if block >= images.shape[0]:
        return fn(images)
    return torch.cat([fn(chunk) for chunk in images.split(block)])


def gradients(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, params: list[torch.Tensor],
              loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
              forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
              create_graph: bool = False) -> tuple[torch.Tensor, ...]:
    """d mean-``loss`` / d ``params`` over a batch, accumulated block by block (each block's mean loss
    weighted by its share): the batch's gradient up to float rounding. ``forward``: how images become
    logits (default ``net``, which also sizes the blocks; trajectory matching calls the network on a
    parameter vector); ``create_graph``: keep the gradient differentiable (MTT's unroll)."""
    forward = forward if forward is not None else net
    block = block_size(net, images)
    n = images.shape[0]
    if block >= n:
        return torch.autograd.grad(loss(forward(images), labels), params, create_graph=create_graph)
    total: tuple[torch.Tensor, ...] | None = None
    for xb, yb in zip(images.split(block), labels.split(block), strict=True):
        part = torch.autograd.grad(loss(forward(xb), yb) * (xb.shape[0] / n), params, create_graph=create_graph)
        total = part if total is None else tuple(a + b for a, b in zip(total, part, strict=True))
    assert total is not None
    return total
