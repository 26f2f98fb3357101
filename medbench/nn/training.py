"""Plain supervised training and batched prediction, shared by the protocol and by methods
that pick checkpoints on val."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medbench.core.devices import to_device
from medbench.core.errors import CellFailed
from medbench.nn.blocking import block_size

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for hard (int) or soft (probability) labels."""
    return F.cross_entropy(logits, labels if labels.is_floating_point() else labels.long())


class TrainingDiverged(CellFailed):
    """The training loss became non-finite; ``model`` is the network's index when several train together."""

    def __init__(self, epoch: int, model: int = 0) -> None:
        super().__init__(f"network {model} diverged: non-finite training loss by epoch {epoch}")
        self.epoch, self.model = epoch, model


def divergence_check_due(epoch: int, epochs: int) -> bool:
    """Whether to look at the loss after ``epoch`` (0-based): about ten times per run and at the
    end. Each look waits for the device, so not after every step; a NaN run stops early instead
    of training on (slowly: NaN and denormal arithmetic is slow on CPUs) to the last epoch."""
    return (epoch + 1) % max(1, epochs // 10) == 0 or epoch + 1 == epochs


def apply_schedule(optimizer: torch.optim.Optimizer, lr: float, epoch: int, epochs: int) -> None:
    """The evaluation schedule of the DC/DSA/DM/MTT code: lr × 0.1 from half the epochs on.
    Shared by the sequential and the batched trainers, which must stay identical."""
    if epoch == epochs // 2 and epochs > 1:
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.1


def train_network(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    generator: torch.Generator,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 256,
    augment: Augment | None = None,
    on_epoch: Callable[[int], None] | None = None,
    amp: bool = False,
) -> nn.Module:
    """SGD on (images, labels) for ``epochs``, learning rate × 0.1 at half the epochs.

    The schedule is the one of the DC/DSA/DM/MTT evaluation code. ``generator`` (CPU) fixes the
    data order and augmentation draws, so one seed gives one run. Raises
    :class:`TrainingDiverged` when the loss becomes non-finite (see :func:`divergence_check_due`).
    ``amp``: bf16 autocast around each forward pass only. Not around the loop: autocast keeps its
    bf16 copies of the weights for its whole region, so every step would run the initial weights.
    """
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = images.shape[0]
    forward_context = (torch.autocast(images.device.type, dtype=torch.bfloat16) if amp
                       else contextlib.nullcontext())  # built once: entered on every step
    for epoch in range(epochs):
        apply_schedule(optimizer, lr, epoch, epochs)
        order = to_device(torch.randperm(n, generator=generator), images.device)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            x = images[batch]
            if augment is not None:
                x = augment(x, generator)
            optimizer.zero_grad(set_to_none=True)
            loss = backward_in_blocks(model, x, labels[batch], forward_context)
            optimizer.step()
        if divergence_check_due(epoch, epochs) and not bool(torch.isfinite(loss.detach())):
            raise TrainingDiverged(epoch + 1)
        if on_epoch is not None:
            on_epoch(epoch + 1)
    return model


def backward_in_blocks(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       forward_context: Any = None, logits_out: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The mean loss of one SGD step, its gradients accumulated into ``model``: on a CPU in
    cache-sized blocks of the batch (:mod:`medbench.nn.blocking`), each block's loss weighted by its
    share, so the gradient is the batch's up to float rounding (~2e-5 relative at width 128).
    ``logits_out``: a list that receives each block's logits (detached), in order."""
    forward_context = forward_context if forward_context is not None else contextlib.nullcontext()
    block = block_size(model, x)
    if block >= x.shape[0]:
        with forward_context:
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        if logits_out is not None:
            logits_out.append(logits.detach())
        return loss
    total = x.new_zeros(())
    for xb, yb in zip(x.split(block), y.split(block), strict=True):
        with forward_context:
            logits = model(xb)
        if logits_out is not None:
            logits_out.append(logits.detach())
        part = loss_fn(logits.float(), yb) * (xb.shape[0] / x.shape[0])
        part.backward()
        total = total + part.detach()
    return total


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    images: torch.Tensor,
    *,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Softmax probabilities over ``images`` in batches; ``prepare`` turns a raw batch into input."""
    model.eval()
    out = []
    batch_size = min(batch_size, block_size(model, images))  # cache-sized on a CPU: the same outputs
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size]
        out.append(torch.softmax(model(prepare(x) if prepare else x).float(), dim=1))
    model.train()
    return torch.cat(out).cpu()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             prepare: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    probs = predict_proba(model, images, prepare=prepare)
    return float((probs.argmax(1) == labels.cpu()).float().mean())


def candidate_scores(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, val_images: torch.Tensor,
                     val_labels: torch.Tensor, *, epochs: int, lr: float, generator: torch.Generator,
                     augment: Augment | None = None,
                     prepare: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """Val accuracy and balanced accuracy of ``model`` trained on a candidate set (checkpoint
    selection in the methods, by the task's selection metric); 0 when its training diverged, so a
    set its network cannot train on is never the one kept."""
    try:
        train_network(model, images, labels, epochs=epochs, lr=lr, generator=generator, augment=augment)
    except TrainingDiverged:
        return {"accuracy": 0.0, "balanced_accuracy": 0.0}
    predicted = predict_proba(model, val_images, prepare=prepare).argmax(1)
    truth = val_labels.cpu()
    right = (predicted == truth).float()
    recalls = [float(right[truth == c].mean()) for c in truth.unique()]
    return {"accuracy": float(right.mean()), "balanced_accuracy": sum(recalls) / len(recalls)}

