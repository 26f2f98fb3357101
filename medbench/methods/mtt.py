"""MTT: dataset distillation by matching training trajectories (Cazenavette et al., CVPR 2022).

From a random expert epoch ``i`` a student starts at ``θ_i`` and takes ``J = syn_steps`` SGD steps
on mini-batches of the (augmented) synthetic images with a learnable step size ``α``; the loss

    L = ‖θ̃_J − θ*_{i+K}‖² / ‖θ_i − θ*_{i+K}‖²        (K = expert_epochs)

is back-propagated through all ``J`` steps to the images and to ``α``.

The unroll and its exact gradient (``implementation=unrolled``, one graph as the official code,
or ``tesla``, in memory independent of J; ``auto``, the default, unrolls where the memory budget
allows) and the expert buffer are the trajectory-matching family's shared machinery:
:mod:`medbench.methods.trajectory`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from medbench.core.hparams import SINCE_KEY, SPEED_ONLY_KEY, check
from medbench.distill.contract import CondensedSet, DistillTask, register_method
from medbench.distill.space import Dim
from medbench.methods import synthetic as syn
from medbench.methods.trajectory import (
    BufferParams,
    Diverged,
    Matching,
    check_buffer_params,
    match_trajectories,
    open_buffer,
    prepare_buffer,
)
from medbench.nn.whitening import ZCA

__all__ = ["Diverged", "MTTParams", "mtt"]


@dataclass(frozen=True)
class MTTParams(BufferParams):
    """Hyper-parameters. The defaults are the official distill.py's and buffer.py's (CIFAR
    settings: syn_steps 20, expert_epochs 3, max_start_epoch 25, lr_img 1000, lr_lr 1e-5,
    lr_teacher 0.01, 5000 iterations, 100 experts × 50 epochs, batch 256, DSA, real init), except
    where noted: ``eval_every``/``eval_epochs`` are medbench's checkpoint selection on val (the
    official code evaluates every 100 iterations on test and reports the last), and the real
    initialisation is the same subset ``random`` draws with the seed (paired comparisons).
    The expert buffer's settings are :class:`BufferParams`'."""

    syn_steps: int = 20  # J: student steps per iteration
    expert_epochs: int = 3  # K: target is K expert epochs after the start
    max_start_epoch: int = 25  # the start epoch is drawn from [0, max_start_epoch)
    lr_img: float = 1000.0  # official for CIFAR; diverged on BloodMNIST in one run, 100 worked
    lr_lr: float = 1e-5
    # α learned as itself ("linear", the official code: it can turn negative) or as log α ("log": always
    # positive; lr_lr then steps log α). Default chosen by measurement: reports/current_methods/README.md.
    lr_space: Literal["log", "linear"] = field(default="log", metadata={SINCE_KEY: "linear"})
    momentum: float = 0.5  # SGD momentum for the images and for α
    batch_syn: int | None = None  # None: all synthetic images in every step
    iterations: int = 5000
    init: Literal["real", "noise"] = "real"
    # The gradient's implementation: all three give the same gradient (the official code unrolls), so
    # they are one cell (identity "tesla", the only implementation before issue 26's auto).
    implementation: Literal["auto", "tesla", "unrolled"] = field(default="auto", metadata={SPEED_ONLY_KEY: "tesla"})
    checkpoint_every: int | None = None  # tesla: θ checkpoint spacing; None: ⌈√J⌉, 1: keep all
    eval_every: int = 500  # evaluate (on val) and save a resumable checkpoint this often
    eval_epochs: int = 300  # epochs of the quick network trained on the set to score it on val

    def __post_init__(self) -> None:
        check_loop_params(self)
        check(self.max_start_epoch >= 1, f"max_start_epoch must be at least 1, got {self.max_start_epoch}")
        check(self.max_start_epoch - 1 + self.expert_epochs <= self.buffer_epochs,
              f"max_start_epoch {self.max_start_epoch} + expert_epochs {self.expert_epochs} - 1 exceeds "
              f"the {self.buffer_epochs} epochs of the expert buffer")


def check_loop_params(p: MTTParams) -> None:
    """The checks every params dataclass of the shared loop passes (MTT's and DATM's)."""
    check_buffer_params(p)
    check(p.syn_steps >= 1, f"syn_steps must be at least 1, got {p.syn_steps}")
    check(p.expert_epochs >= 1, f"expert_epochs must be at least 1, got {p.expert_epochs}")
    for name in ("lr_img", "lr_lr"):
        value = getattr(p, name)
        check(value > 0 and math.isfinite(value), f"{name} must be positive, got {value}")
    check(0.0 <= p.momentum < 1.0, f"momentum must lie in [0, 1), got {p.momentum}")
    check(p.lr_space in ("log", "linear"), f"lr_space must be log or linear, got {p.lr_space!r}")
    check(p.batch_syn is None or p.batch_syn >= 1, f"batch_syn must be at least 1, got {p.batch_syn}")
    check(p.iterations >= 0, f"iterations must be non-negative, got {p.iterations}")
    check(p.checkpoint_every is None or p.checkpoint_every >= 1,
          f"checkpoint_every must be at least 1, got {p.checkpoint_every}")
    check(p.eval_every >= 1, f"eval_every must be at least 1, got {p.eval_every}")
    check(p.eval_epochs >= 1, f"eval_epochs must be at least 1, got {p.eval_epochs}")


def _init_images(task: DistillTask, params: MTTParams, generator: torch.Generator,
                 zca: ZCA | None) -> torch.Tensor:
    if params.init == "noise":
        shape = (task.num_classes * task.ipc, task.channels, task.size, task.size)
        return torch.randn(shape, generator=generator).to(task.device)
    images = task.real(task.initial_indices())  # random's subset for this seed: paired comparisons
    return zca(images) if zca is not None else images


# What `medbench tune` searches, around the official CIFAR values. lr_teacher is left out: it is also the
# experts' training lr, so every value would train a new expert buffer.
SEARCH_SPACE = {"lr_img": Dim(10.0, 10000.0, "log"), "lr_lr": Dim(1e-7, 1e-3, "log"),
                "syn_steps": Dim(5, 60, "log", integer=True), "expert_epochs": Dim(1, 5, integer=True),
                "max_start_epoch": Dim(2, 40, integer=True)}


def matched_random(p: MTTParams) -> tuple[str, dict]:
    """Random choosing among as many subsets as MTT has checkpoints, scored at the initial lr."""
    return syn.matched_random(p, augment=p.augment, lr=p.lr_teacher)


# The conformance kit's tiny run: 2 experts × 4 epochs, a 3-step unroll, a checkpoint every 2 iterations.
CONFORM = {"num_experts": 2, "buffer_epochs": 4, "batch_train": 16, "max_start_epoch": 2, "expert_epochs": 2,
           "syn_steps": 3, "iterations": 6, "eval_every": 2, "eval_epochs": 3, "lr_img": 10.0, "augment": False}


@register_method("mtt", params=MTTParams, prepare=prepare_buffer, search_space=SEARCH_SPACE, matched=matched_random,
                 conform_params=CONFORM)
def mtt(task: DistillTask, params: MTTParams) -> CondensedSet:
    """Matching training trajectories (Cazenavette et al., 2022), the exact gradient unrolled or recomputed."""
    buffer = open_buffer(task, params, params.max_start_epoch - 1 + params.expert_epochs)
    generator = torch.Generator().manual_seed(task.seed)
    images = _init_images(task, params, generator, buffer.zca())
    labels = torch.arange(task.num_classes, device=task.device).repeat_interleave(task.ipc)
    return match_trajectories(task, params, buffer, Matching("mtt", images, labels,
                                                             lambda it: (0, params.max_start_epoch)), generator)
