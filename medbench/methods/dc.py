"""Dataset condensation by gradient matching: DC (Zhao, Mopuri & Bilen, ICLR 2021) and DSA,
the same with differentiable siamese augmentation (Zhao & Bilen, ICML 2021).

Each iteration draws a fresh network. For ``outer_loop`` steps it matches, class by class, the
gradient of the loss on a real batch with the gradient on that class's synthetic images, updates
the images, and trains the network ``inner_loop`` epochs on the synthetic set.

Outer/inner loops by IPC: the official code (DatasetCondensation ``utils.get_loops``) defines
(outer, inner) only for IPC 1, 10, 20, 30, 40, 50 — (1, 1), (10, 50), (20, 25), (30, 20),
(40, 15), (50, 10) — and exits otherwise. Those
are used as they are; any other IPC gets ``outer = min(IPC, 50)`` (in the table outer always
equals IPC) and the inner loop of the nearest tabulated IPC from 10 up, ties to the smaller
IPC (IPC 1's inner loop never runs: the last outer step skips it). So IPC 2, 3, 5 → (IPC, 50),
IPC 15 → (15, 50), IPC 25 → (25, 25), IPC 35 → (35, 20), IPC 100 → (50, 10).
``outer_loop``/``inner_loop`` override.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from medbench.core.devices import to_device
from medbench.core.hparams import check
from medbench.distill.contract import CondensedSet, DistillTask, register_method
from medbench.distill.space import Dim
from medbench.nn.augment import SiameseAugment
from medbench.nn.blocking import gradients

from . import synthetic as syn

LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def loop_schedule(ipc: int) -> tuple[int, int]:
    """(outer_loop, inner_loop) for ``ipc``: the official table, else the rule in the module doc."""
    if ipc in LOOPS:
        return LOOPS[ipc]
    nearest = min((k for k in LOOPS if k > 1), key=lambda k: (abs(k - ipc), k))
    return min(ipc, 50), LOOPS[nearest][1]


Grads = Sequence[torch.Tensor]  # one (C, *param.shape) tensor per parameter: per-class gradients


def _distance_ours(g_syn: Grads, g_real: Grads) -> torch.Tensor:
    """The paper's layer-wise distance: 1 − cosine per output channel, summed. One-dimensional
    parameters (biases, norm scales) are left out, as in the reference code."""
    total = g_syn[0].new_zeros(())
    for s, r in zip(g_syn, g_real, strict=True):
        if s.dim() <= 2:  # class dimension + a 1-D parameter
            continue
        s, r = s.flatten(2), r.flatten(2)
        cosine = (s * r).sum(-1) / (s.norm(dim=-1) * r.norm(dim=-1) + 1e-6)
        total = total + (1 - cosine).sum()
    return total


def _distance_mse(g_syn: Grads, g_real: Grads) -> torch.Tensor:
    return sum(((s - r) ** 2).sum() for s, r in zip(g_syn, g_real, strict=True))


def _distance_cos(g_syn: Grads, g_real: Grads) -> torch.Tensor:
    """1 − cosine between the whole flattened gradients, per class."""
    s = torch.cat([g.flatten(1) for g in g_syn], 1)
    r = torch.cat([g.flatten(1) for g in g_real], 1)
    return (1 - (s * r).sum(-1) / (s.norm(dim=-1) * r.norm(dim=-1) + 1e-6)).sum()


DISTANCES: dict[str, Callable[[Grads, Grads], torch.Tensor]] = {
    "ours": _distance_ours, "mse": _distance_mse, "cos": _distance_cos,
}


@dataclass(frozen=True)
class DCParams:
    """DC/DSA settings. The defaults are the official main.py's (Iteration 1000, lr_img 0.1 with
    momentum 0.5, lr_net 0.01, batch_real 256, dis_metric ours) except ``init``: medbench starts
    from real images (the same subset as ``random`` with the seed, so gains are paired); the
    official default is ``noise`` (its README runs use ``real``). ``eval_every``/``eval_epochs``
    are medbench's checkpoint selection on val (the official code keeps the last iteration)."""

    iterations: int = 1000
    lr_img: float = 0.1
    momentum_img: float = 0.5
    lr_net: float = 0.01
    batch_real: int = 256
    batch_train: int = 256  # batch size of the inner-loop training on the synthetic set
    outer_loop: int | None = None  # None: by IPC (module doc)
    inner_loop: int | None = None
    dis_metric: str = "ours"
    init: str = "real"
    eval_every: int = 100  # checkpoint (val-scored) every so many iterations, and at the end
    eval_epochs: int = 300  # training of the network that scores a checkpoint on val
    eval_lr: float = 0.01

    def __post_init__(self) -> None:
        syn.check_loop_params(self)
        check(self.lr_net > 0, f"lr_net must be positive, got {self.lr_net}")
        check(self.batch_train >= 1, f"batch_train must be at least 1, got {self.batch_train}")
        check(self.outer_loop is None or self.outer_loop >= 1, "outer_loop must be at least 1")
        check(self.inner_loop is None or self.inner_loop >= 0, "inner_loop must be non-negative")
        check(self.dis_metric in DISTANCES,
              f"unknown dis_metric {self.dis_metric!r}; choose {', '.join(DISTANCES)}")


def real_gradients(net: nn.Module, batches: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per-class gradients on real batches, as constants. A loop over classes: real batches are
    large, and one vmapped call over the classes was slower on both devices measured (CPU: the
    loop ~3× faster; H200, width 128, 256 images per class: the DC outer step 0.91–0.95× with
    vmap, ``reports/bench/gpu-2026-11-23.md``)."""
    weights = [p for p in net.parameters()]
    per_class = []
    for c, x in enumerate(batches):  # each class in cache-sized blocks on a CPU (medbench.nn.blocking)
        y = torch.full((x.shape[0],), c, device=x.device)
        per_class.append(gradients(net, x, y, weights, F.cross_entropy))
    return [torch.stack(g) for g in zip(*per_class, strict=True)]


def synthetic_gradients(net: nn.Module, images: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """Per-class gradients on class-contiguous synthetic images, differentiable w.r.t. the
    images only (the network's weights enter as detached constants). One vmapped call over
    classes: synthetic batches are small, so per-class calls would be overhead-bound."""
    names = [n for n, _ in net.named_parameters()]
    weights = {n: p.detach() for n, p in net.named_parameters()}
    x = images.view(num_classes, -1, *images.shape[1:])
    y = torch.arange(num_classes, device=images.device).view(-1, 1).expand(num_classes, x.shape[1])

    def loss(w: dict[str, torch.Tensor], xc: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(net, w, (xc,)), yc)

    g = vmap(grad(loss), in_dims=(None, 0, 0))(weights, x, y)
    return [g[n] for n in names]


def _freeze_batchnorm(net: nn.Module, task: DistillTask, generator: torch.Generator) -> None:
    """As the reference: batch-norm statistics from a mixed real batch, then frozen (eval), so
    per-class batches do not normalise with their own statistics."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    net.train()
    with torch.no_grad():
        net(torch.cat([task.sample_class(c, 16, generator) for c in range(task.num_classes)]))
    for m in norms:
        m.eval()


def train_inner(net: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
                *, epochs: int, batch_size: int, generator: torch.Generator,
                augment: SiameseAugment | None) -> None:
    """Plain epochs on the (detached) synthetic set, independent augmentation per image."""
    net.train()
    n = images.shape[0]
    for _ in range(epochs):
        order = to_device(torch.randperm(n, generator=generator), images.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            x = images[idx] if augment is None else augment(images[idx], generator)
            loss = F.cross_entropy(net(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def gradient_loss(net: nn.Module, task: DistillTask, images: torch.Tensor, generator: torch.Generator, *,
                  batch_real: int, distance: Callable[[Grads, Grads], torch.Tensor],
                  augment: SiameseAugment | None) -> torch.Tensor:
    """The summed per-class gradient-matching distance of ``images`` under ``net``."""
    classes = task.num_classes
    _freeze_batchnorm(net, task, generator)
    real = [task.sample_class(c, batch_real, generator) for c in range(classes)]
    synthetic = images
    if augment is not None:
        # Siamese: one parameter set per class, shared by its real batch and its images.
        draw = augment.sample(images, generator, n=classes)
        real = [augment.apply(x, draw[c]) for c, x in enumerate(real)]
        synthetic = augment.apply(images, draw.repeat_interleave(task.ipc))
    return distance(synthetic_gradients(net, synthetic, classes), real_gradients(net, real))


def matching_loss(task: DistillTask, images: torch.Tensor, generator: torch.Generator, params: DCParams,
                  augment: SiameseAugment | None = None) -> torch.Tensor:
    """The first outer step's loss under a fresh network from ``generator`` (diagnostics, tests)."""
    return gradient_loss(syn.fresh_model(task, generator), task, images, generator, batch_real=params.batch_real,
                         distance=DISTANCES[params.dis_metric], augment=augment)


def make_step(task: DistillTask, p: DCParams, augment: SiameseAugment | None) -> syn.Step:
    outer, inner = loop_schedule(task.ipc)
    outer = p.outer_loop if p.outer_loop is not None else outer
    inner = p.inner_loop if p.inner_loop is not None else inner
    distance = DISTANCES[p.dis_metric]
    labels = torch.arange(task.num_classes, device=task.device).repeat_interleave(task.ipc)

    def step(images: torch.Tensor, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> torch.Tensor:
        net = syn.fresh_model(task, generator)  # the one network of this iteration
        net_optimizer = torch.optim.SGD(net.parameters(), lr=p.lr_net)
        total = images.new_zeros(())
        for ol in range(outer):
            loss = gradient_loss(net, task, images, generator, batch_real=p.batch_real, distance=distance,
                                 augment=augment)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total = total + loss.detach()
            if ol < outer - 1 and inner > 0:
                train_inner(net, net_optimizer, images.detach(), labels, epochs=inner,
                            batch_size=p.batch_train, generator=generator, augment=augment)
        return total / outer

    return step


def _run(task: DistillTask, params: DCParams, *, name: str, augment: bool) -> CondensedSet:
    aug = syn.augmenter(augment, task)
    return syn.distill(task, params, name=name, step=make_step(task, params, aug), augment=aug)


# What `medbench tune` searches (official values: lr_img 0.1, loops by IPC).
# The conformance kit's tiny run (medbench conform dc).
CONFORM = {"iterations": 6, "eval_every": 2, "eval_epochs": 3, "outer_loop": 2, "inner_loop": 2, "batch_real": 16}
SEARCH_SPACE = {"lr_img": Dim(0.01, 10.0, "log"), "outer_loop": Dim(1, 50, "log", integer=True),
                "inner_loop": Dim(1, 50, "log", integer=True)}


@register_method("dc", params=DCParams, search_space=SEARCH_SPACE, conform_params=CONFORM,
                 matched=lambda p: syn.matched_random(p, augment=False))
def dc(task: DistillTask, params: DCParams) -> CondensedSet:
    """Dataset condensation with gradient matching (Zhao, Mopuri & Bilen, ICLR 2021)."""
    return _run(task, params, name="dc", augment=False)


@register_method("dsa", params=DCParams, search_space=SEARCH_SPACE, conform_params=CONFORM,
                 matched=lambda p: syn.matched_random(p, augment=True))
def dsa(task: DistillTask, params: DCParams) -> CondensedSet:
    """Gradient matching with differentiable siamese augmentation (Zhao & Bilen, ICML 2021)."""
    return _run(task, params, name="dsa", augment=True)
