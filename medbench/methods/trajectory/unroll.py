"""One student unroll of trajectory matching and the gradient of its matching loss.

From expert parameters ``θ_i`` a student takes ``J`` SGD steps on mini-batches of the (augmented)
synthetic images with a learnable step size ``α``; the loss ``‖θ̃_J − θ*_{i+K}‖² / ‖θ_i − θ*_{i+K}‖²``
is differentiated w.r.t. the images and ``α``. Two implementations of that gradient (``implementation=``):

* ``unrolled``: as the official code: one autograd graph through all ``J`` steps; memory grows with ``J``.
* ``auto`` (default): ``unrolled`` when its graph fits the task's memory budget
  (:func:`choose_implementation`, from shapes only), else ``tesla``: the same gradient either way.
* ``tesla``: the *exact* same gradient with activation memory independent of ``J``.
  The forward pass keeps no graph. The backward pass runs the adjoint recursion of the unroll
  ``θ_{j+1} = θ_j − α g_j(θ_j, X_j)`` in reverse, one step at a time, rebuilding only that step's
  graph::

      λ_J = ∂L/∂θ_J = 2 (θ_J − θ*) / ‖θ_i − θ*‖²
      ∂L/∂X_j += −α (∂g_j/∂X_j)ᵀ λ_{j+1}       (vector-Jacobian product to the batch images)
      ∂L/∂α  += −g_jᵀ λ_{j+1}
      λ_j     = λ_{j+1} − α H_j λ_{j+1}          (H_j = ∂g_j/∂θ_j, a Hessian-vector product)

  One double-backward graph exists at a time. The ``θ_j`` it needs are recomputed from
  parameter-vector checkpoints every ``checkpoint_every`` steps (default ``⌈√J⌉``: O(√J)
  parameter vectors, a few MB, and one extra first-order pass over the unroll).

  This is exact (equal to ``unrolled`` up to floating-point rounding; the tests check it in
  float64). TESLA (Cui et al., ICML 2023) as published is *not*: its code differentiates
  ``(θ_J − θ*)ᵀ g_j`` w.r.t. ``X_j`` at a fixed ``θ_j`` and the loss w.r.t. ``α`` at fixed
  ``g_j``, i.e. it uses ``λ_J`` for every step and drops the ``−α H_j λ`` terms through which an
  early batch changes every later ``θ``. That is exact only for a loss linear in ``θ``
  (``H = 0``) and otherwise an O(α·‖H‖) approximation. The name ``tesla`` is kept for the
  memory idea (recompute per step, accumulate per-batch image gradients); the adjoint makes it
  exact at the price of one Hessian-vector product per step, which the same double-backward
  pass delivers together with the image VJP.

Labels are class indices (MTT) or learnable *label logits* (DATM): a float ``(N, classes)`` tensor
whose softmax is the target of the student's soft cross-entropy. With ``learn_labels=True`` both
implementations also return ``∂L/∂labels`` (the same vector-Jacobian product as for the images,
taken w.r.t. the batch's label logits).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from medbench.core.devices import to_device
from medbench.nn.blocking import gradients
from medbench.nn.training import loss_fn

from .buffer import FlatParams


@dataclass(frozen=True)
class Step:
    """What student step ``j`` uses, drawn before the unroll so both implementations agree."""

    indices: torch.Tensor  # into the synthetic set
    augment: Any | None  # augmentation parameters, or None


def plan_unroll(n: int, batch: int, steps: int, generator: torch.Generator,
                augment: Any | None = None, images: torch.Tensor | None = None) -> list[Step]:
    """Mini-batches cycling through fresh permutations (as the reference) and per-image DSA draws.

    Drawn on the CPU and, when ``images`` is given, queued to its device here, before the unroll,
    so no student step waits on a host copy."""
    plan: list[Step] = []
    chunks: list[torch.Tensor] = []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.randperm(n, generator=generator).split(batch))
        idx = chunks.pop(0)
        params = None
        if augment is not None and images is not None:
            params = augment.sample(images[: len(idx)], generator, n=len(idx)).to(images.device, images.dtype)
        plan.append(Step(idx if images is None else to_device(idx, images.device), params))
    return plan


@dataclass(frozen=True)
class Match:
    loss: torch.Tensor  # 0-dim, on the device: reading it is a host sync, left to the caller
    grad_images: torch.Tensor
    grad_lr: torch.Tensor
    grad_labels: torch.Tensor | None = None  # only for learnable label logits (learn_labels=True)


def targets(labels: torch.Tensor) -> torch.Tensor:
    """What the student's loss compares with: class indices as they are, label logits as their softmax."""
    return labels.softmax(1) if labels.is_floating_point() else labels


def _batch(images: torch.Tensor, step: Step, augment: Any | None) -> torch.Tensor:
    x = images[step.indices.to(images.device)]
    return augment.apply(x, step.augment) if step.augment is not None else x


def _step_grad(net: FlatParams, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
               create_graph: bool) -> torch.Tensor:
    """The student's gradient on a batch, in cache-sized blocks on a CPU (:mod:`medbench.nn.blocking`)."""
    return gradients(net.module, x, y, [theta], lambda logits, yb: loss_fn(logits, targets(yb)),
                     forward=lambda xb: net(theta, xb), create_graph=create_graph)[0]


def match_unrolled(net: FlatParams, images: torch.Tensor, labels: torch.Tensor, lr: torch.Tensor,
                   start: torch.Tensor, target: torch.Tensor, plan: list[Step],
                   augment: Any | None = None, learn_labels: bool = False) -> Match:
    """As the official code: one graph through every step (memory grows with the number of steps)."""
    images = images.detach().requires_grad_(True)
    lr = lr.detach().requires_grad_(True)
    labels = labels.detach().requires_grad_(learn_labels)
    theta = start.detach().requires_grad_(True)
    for step in plan:
        x = _batch(images, step, augment)
        theta = theta - lr * _step_grad(net, theta, x, labels[step.indices.to(labels.device)], True)
    loss = (theta - target).pow(2).sum() / (start - target).pow(2).sum()
    grads = torch.autograd.grad(loss, (images, lr, labels) if learn_labels else (images, lr))
    return Match(loss.detach(), grads[0], grads[1], grads[2] if learn_labels else None)


def match_recompute(net: FlatParams, images: torch.Tensor, labels: torch.Tensor, lr: torch.Tensor,
                    start: torch.Tensor, target: torch.Tensor, plan: list[Step],
                    augment: Any | None = None, checkpoint_every: int | None = None,
                    learn_labels: bool = False) -> Match:
    """The exact gradient of :func:`match_unrolled` with one step's graph alive at a time.

    Memory: O(J/c + c) parameter vectors (c = ``checkpoint_every``) and one step's activations.
    """
    steps = len(plan)
    every = checkpoint_every or max(1, math.ceil(math.sqrt(steps)))
    images = images.detach()
    labels = labels.detach()
    alpha = lr.detach()
    start = start.detach()

    def advance(theta: torch.Tensor, j: int) -> torch.Tensor:
        theta = theta.detach().requires_grad_(True)
        x = _batch(images, plan[j], augment)
        g = _step_grad(net, theta, x, labels[plan[j].indices.to(labels.device)], False)
        return (theta - alpha * g).detach()

    checkpoints: dict[int, torch.Tensor] = {}
    theta = start
    for j in range(steps):
        if j % every == 0:
            checkpoints[j] = theta
        theta = advance(theta, j)

    scale = (start - target).pow(2).sum()
    loss = ((theta - target).pow(2).sum() / scale).detach()
    lam = 2.0 * (theta - target) / scale  # ∂L/∂θ_J
    grad_images = torch.zeros_like(images)
    grad_labels = torch.zeros_like(labels) if learn_labels else None
    grad_lr = torch.zeros((), dtype=lr.dtype, device=lr.device)
    for seg in reversed(range(0, steps, every)):
        end = min(seg + every, steps)
        thetas = [checkpoints.pop(seg)]
        for j in range(seg, end - 1):
            thetas.append(advance(thetas[-1], j))
        for j in reversed(range(seg, end)):
            step = plan[j]
            idx = step.indices.to(images.device)
            theta_j = thetas.pop().requires_grad_(True)
            xb = images[idx].requires_grad_(True)
            yb = labels[idx].requires_grad_(learn_labels)
            x = augment.apply(xb, step.augment) if step.augment is not None else xb
            g = _step_grad(net, theta_j, x, yb, True)
            # One double-backward pass gives H_j λ, (∂g_j/∂X_j)ᵀ λ and, for label logits, (∂g_j/∂Y_j)ᵀ λ.
            vjp = torch.autograd.grad(g, (theta_j, xb, yb) if learn_labels else (theta_j, xb), grad_outputs=lam)
            hvp, gx = vjp[0], vjp[1]
            grad_images.index_add_(0, idx, -alpha * gx)
            if grad_labels is not None:
                grad_labels.index_add_(0, idx, -alpha * vjp[2])
            grad_lr = grad_lr - torch.dot(g.detach(), lam)
            lam = lam - alpha * hvp
    return Match(loss, grad_images, grad_lr, grad_labels)


IMPLEMENTATIONS: dict[str, Callable[..., Match]] = {"unrolled": match_unrolled, "tesla": match_recompute}


def unrolled_bytes(net: FlatParams, images: torch.Tensor, labels: torch.Tensor, lr: torch.Tensor,
                   start: torch.Tensor, plan: list[Step], augment: Any | None = None) -> int:
    """What :func:`match_unrolled`'s graph holds for ``plan``: the bytes autograd saves for one
    student step (counted, not timed: a function of the shapes) times the number of steps."""
    seen: set[tuple[int, int]] = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total += key[1]
        return t

    step = plan[0]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        theta = start.detach().requires_grad_(True)
        x = _batch(images.detach().requires_grad_(True), step, augment)
        y = labels[step.indices.to(labels.device)]
        grad = _step_grad(net, theta, x, y, True)
        (theta - lr.detach().requires_grad_(True) * grad).sum()
    return total * len(plan)


# The unrolled graph's peak over its saved tensors (backward's transient buffers): measured 1.20× on
# ConvNet width 128, 80 images, J = 10, DSA (2.77 GiB peak RSS growth vs 2.30 GiB counted).
UNROLL_HEADROOM = 1.25


def choose_implementation(requested: str, budget_bytes: int, estimate: Callable[[], int]) -> tuple[str, int | None]:
    """The implementation to run and the unrolled graph's estimated peak bytes (None when not
    estimated): ``auto`` takes ``unrolled`` (one graph, the official code's speed) when
    :data:`UNROLL_HEADROOM` × the counted graph is within ``budget_bytes``, else ``tesla`` (the same
    gradient in memory independent of J)."""
    if requested != "auto":
        return requested, None
    need = int(estimate() * UNROLL_HEADROOM)
    return ("unrolled" if need <= budget_bytes else "tesla"), need


