"""MTT: dataset distillation by matching training trajectories (Cazenavette et al., CVPR 2022).

From a random expert epoch ``i`` a student starts at ``θ_i`` and takes ``J = syn_steps`` SGD steps
on mini-batches of the (augmented) synthetic images with a learnable step size ``α``; the loss

    L = ‖θ̃_J − θ*_{i+K}‖² / ‖θ_i − θ*_{i+K}‖²        (K = expert_epochs)

is back-propagated through all ``J`` steps to the images and to ``α``.

The unroll and its exact constant-memory gradient (``implementation=tesla``, default, or
``unrolled``) and the expert buffer are the trajectory-matching family's shared machinery:
:mod:`medbench.methods.trajectory`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from medbench.methods.trajectory import (
    IMPLEMENTATIONS,
    ExpertBuffer,
    ExpertConfig,
    FlatParams,
    build_buffer,
    build_seeded,
    derived_seed,
    make_augment,
    plan_unroll,
    resolve_root,
)
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from medbench.data.splits import Splits
from medbench.devices import to_device
from medbench.errors import CellFailed, MedbenchError
from medbench.hparams import check
from medbench.method import CondensedSet, DistillTask, register_method
from medbench.models import ModelSpec
from medbench.storage.files import atomic_write_bytes
from medbench.training import candidate_accuracy
from medbench.whitening import ZCA

STATE_FILE = "mtt_state.safetensors"


class Diverged(CellFailed):
    """Distillation blew up (non-finite loss or images, or a learned lr that is no longer positive).

    A :class:`CellFailed`, so the harness stores the cell as failed with the one-line message
    "diverged at iteration N (reason)" and goes on. ``condensed`` is the last good result: the
    set chosen on validation accuracy among the checkpoints evaluated before the blow-up.
    """

    def __init__(self, iteration: int, reason: str, condensed: CondensedSet | None) -> None:
        super().__init__(f"diverged at iteration {iteration} ({reason})")
        self.iteration = iteration
        self.reason = reason
        self.condensed = condensed


@dataclass(frozen=True)
class MTTParams:
    """Hyper-parameters. The defaults are the official distill.py's and buffer.py's (CIFAR
    settings: syn_steps 20, expert_epochs 3, max_start_epoch 25, lr_img 1000, lr_lr 1e-5,
    lr_teacher 0.01, 5000 iterations, 100 experts × 50 epochs, batch 256, DSA, real init), except
    where noted: ``eval_every``/``eval_epochs`` are medbench's checkpoint selection on val (the
    official code evaluates every 100 iterations on test and reports the last), and the real
    initialisation is the same subset ``random`` draws with the seed (paired comparisons)."""

    syn_steps: int = 20  # J: student steps per iteration
    expert_epochs: int = 3  # K: target is K expert epochs after the start
    max_start_epoch: int = 25  # the start epoch is drawn from [0, max_start_epoch)
    lr_img: float = 1000.0  # official for CIFAR; diverged on BloodMNIST in one run, 100 worked
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01  # the experts' SGD lr and the initial learned lr α
    momentum: float = 0.5  # SGD momentum for the images and for α
    batch_syn: int | None = None  # None: all synthetic images in every step
    iterations: int = 5000
    init: Literal["real", "noise"] = "real"
    augment: bool = True  # DSA in the student steps (and in expert training, as the reference)
    zca: bool = False
    implementation: Literal["tesla", "unrolled"] = "tesla"
    checkpoint_every: int | None = None  # tesla: θ checkpoint spacing; None: ⌈√J⌉, 1: keep all
    eval_every: int = 500  # evaluate (on val) and save a resumable checkpoint this often
    eval_epochs: int = 300  # epochs of the quick network trained on the set to score it on val
    # The expert buffer (trained once, reused across IPCs, seeds and runs).
    buffer_dir: str | None = None  # a built buffer directory to use as is
    experts_root: str | None = None  # cache root; None: $MEDBENCH_EXPERTS, else ~/.medmnist/medbench_experts
    num_experts: int = 100
    buffer_epochs: int = 50  # E: epochs each expert is trained for
    batch_train: int = 256  # expert training batch
    expert_dtype: Literal["float32", "bfloat16"] = "float32"
    expert_seed: int = 0  # fixed, so every run of a dataset shares one buffer

    def __post_init__(self) -> None:
        check(self.syn_steps >= 1, f"syn_steps must be at least 1, got {self.syn_steps}")
        check(self.expert_epochs >= 1, f"expert_epochs must be at least 1, got {self.expert_epochs}")
        check(self.max_start_epoch >= 1, f"max_start_epoch must be at least 1, got {self.max_start_epoch}")
        check(self.max_start_epoch - 1 + self.expert_epochs <= self.buffer_epochs,
              f"max_start_epoch {self.max_start_epoch} + expert_epochs {self.expert_epochs} - 1 exceeds "
              f"the {self.buffer_epochs} epochs of the expert buffer")
        for name in ("lr_img", "lr_lr", "lr_teacher"):
            value = getattr(self, name)
            check(value > 0 and math.isfinite(value), f"{name} must be positive, got {value}")
        check(0.0 <= self.momentum < 1.0, f"momentum must lie in [0, 1), got {self.momentum}")
        check(self.batch_syn is None or self.batch_syn >= 1, f"batch_syn must be at least 1, got {self.batch_syn}")
        check(self.iterations >= 0, f"iterations must be non-negative, got {self.iterations}")
        check(self.checkpoint_every is None or self.checkpoint_every >= 1,
              f"checkpoint_every must be at least 1, got {self.checkpoint_every}")
        check(self.eval_every >= 1, f"eval_every must be at least 1, got {self.eval_every}")
        check(self.eval_epochs >= 1, f"eval_epochs must be at least 1, got {self.eval_epochs}")
        check(self.num_experts >= 1, f"num_experts must be at least 1, got {self.num_experts}")

    def expert_config(self) -> ExpertConfig:
        return ExpertConfig(num_experts=self.num_experts, epochs=self.buffer_epochs, lr=self.lr_teacher,
                            batch_size=self.batch_train, augment=self.augment, zca=self.zca,
                            dtype=self.expert_dtype, seed=self.expert_seed)


# --- the method ----------------------------------------------------------------------------


def open_buffer(task: DistillTask, params: MTTParams) -> ExpertBuffer:
    """The buffer named by ``buffer_dir``, else the cached one for this data (built if missing)."""
    if params.buffer_dir:
        buffer = ExpertBuffer(params.buffer_dir)
    else:
        buffer = build_buffer(task, params.expert_config(), resolve_root(params.experts_root),
                              progress=task.progress)
    net = FlatParams(build_seeded(task.model, task.channels, task.num_classes, task.size, 0,
                                  torch.device("cpu")))
    if buffer.num_params != net.size:
        raise MedbenchError(f"expert buffer {buffer.path} holds {buffer.num_params} parameters per "
                            f"network, the task's model has {net.size}")
    needed = params.max_start_epoch - 1 + params.expert_epochs
    if needed > buffer.num_epochs:
        raise MedbenchError(f"expert buffer {buffer.path} has {buffer.num_epochs} epochs, fewer than "
                            f"max_start_epoch - 1 + expert_epochs = {needed}")
    if buffer.config.zca != params.zca:
        raise MedbenchError(f"expert buffer {buffer.path} was built with zca={buffer.config.zca}, "
                            f"the method runs with zca={params.zca}")
    return buffer


def _params_digest(params: MTTParams, task: DistillTask) -> str:
    blob = json.dumps({"params": dataclasses.asdict(params), "ipc": task.ipc, "seed": task.seed,
                       "classes": task.num_classes}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class _State:
    """Everything needed to resume bit-for-bit: tensors plus a few numbers."""

    iteration: int
    images: torch.Tensor
    lr: torch.Tensor
    best_images: torch.Tensor
    best_lr: float
    best_iteration: int
    best_val: float
    generator: torch.Tensor
    momentum_images: torch.Tensor | None = None
    momentum_lr: torch.Tensor | None = None

    def save(self, path: Path, digest: str) -> None:
        tensors = {"images": self.images, "lr": self.lr.reshape(1), "best_images": self.best_images,
                   "generator": self.generator}
        if self.momentum_images is not None and self.momentum_lr is not None:
            tensors["momentum_images"] = self.momentum_images
            tensors["momentum_lr"] = self.momentum_lr.reshape(1)
        meta = {"digest": digest, "iteration": str(self.iteration), "best_lr": repr(self.best_lr),
                "best_iteration": str(self.best_iteration), "best_val": repr(self.best_val)}
        payload = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=meta)
        atomic_write_bytes(path, payload)

    @classmethod
    def load(cls, path: Path, digest: str) -> _State | None:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata()
            tensors = st_load(path.read_bytes())
        except Exception:  # an unreadable checkpoint is not worth failing a run over
            return None
        if meta.get("digest") != digest:
            return None
        return cls(int(meta["iteration"]), tensors["images"], tensors["lr"][0], tensors["best_images"],
                   float(meta["best_lr"]), int(meta["best_iteration"]), float(meta["best_val"]),
                   tensors["generator"], tensors.get("momentum_images"),
                   tensors["momentum_lr"][0] if "momentum_lr" in tensors else None)


def _init_images(task: DistillTask, params: MTTParams, generator: torch.Generator,
                 zca: ZCA | None) -> torch.Tensor:
    if params.init == "noise":
        shape = (task.num_classes * task.ipc, task.channels, task.size, task.size)
        return torch.randn(shape, generator=generator).to(task.device)
    images = task.real(task.initial_indices())  # random's subset for this seed: paired comparisons
    return zca(images) if zca is not None else images


def _val_accuracy(task: DistillTask, images: torch.Tensor, labels: torch.Tensor, lr: float,
                  params: MTTParams, zca: ZCA | None, iteration: int, augment: Any | None) -> float:
    """Score a checkpoint: a quickly trained network on the set, evaluated on val (never test).

    Trained as the protocol trains (SGD 0.9, wd 5e-4, lr step at half) with the learned lr and,
    as the official evaluation, DSA when the method uses it."""
    seed = derived_seed(task.seed, iteration, 0x7A1)
    model = build_seeded(task.model, task.channels, task.num_classes, task.size, seed, task.device)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = task.normalize(x)
        return zca(x) if zca is not None else x

    return candidate_accuracy(model, images.detach(), labels, task.val.images, task.val.labels,
                              epochs=params.eval_epochs, lr=lr, generator=torch.Generator().manual_seed(seed),
                              augment=augment, prepare=prepare)


def _divergence(loss: torch.Tensor, lr: torch.Tensor) -> str:
    """Why an iteration failed its health check."""
    learned = float(lr.detach())
    if not math.isfinite(float(loss)):
        return "non-finite matching loss"
    return "non-finite images" if math.isfinite(learned) and learned > 0 else f"learned lr {learned:g}"


def prepare_buffer(splits: Splits, params: MTTParams, model: ModelSpec,
                   progress: Callable[[int, int], None] | None = None) -> ExpertBuffer | None:
    """Build the dataset's expert buffer once, before its cells, from the full splits so the
    experts' test accuracy (this protocol's full-data reference) is recorded."""
    if params.buffer_dir:
        return None
    return build_buffer(splits, params.expert_config(), resolve_root(params.experts_root), model=model,
                        progress=progress)


@register_method("mtt", params=MTTParams, prepare=prepare_buffer)
def mtt(task: DistillTask, params: MTTParams) -> CondensedSet:
    """Matching training trajectories (Cazenavette et al., 2022), exact gradient in J-independent memory."""
    buffer = open_buffer(task, params)
    zca = buffer.zca()
    net = FlatParams(build_seeded(task.model, task.channels, task.num_classes, task.size,
                                  derived_seed(task.seed, 0x57), task.device))
    net.module.train()
    augment = make_augment(params.augment, task.channels)
    match = IMPLEMENTATIONS[params.implementation]
    extra = {"checkpoint_every": params.checkpoint_every} if params.implementation == "tesla" else {}

    generator = torch.Generator().manual_seed(task.seed)
    labels = torch.arange(task.num_classes, device=task.device).repeat_interleave(task.ipc)
    images = _init_images(task, params, generator, zca).detach().clone()
    lr = torch.tensor(params.lr_teacher, device=task.device)
    batch = params.batch_syn or len(labels)

    digest = _params_digest(params, task)
    state_path = task.checkpoint_dir / STATE_FILE if task.checkpoint_dir else None
    state = _State.load(state_path, digest) if state_path and state_path.is_file() else None
    if state is None:
        val = _val_accuracy(task, images, labels, params.lr_teacher, params, zca, 0, augment)
        state = _State(0, images, lr, images.clone(), params.lr_teacher, 0, val, generator.get_state())
    generator.set_state(state.generator)
    images = state.images.to(task.device).requires_grad_(True)
    lr = state.lr.to(task.device).requires_grad_(True)
    opt_images = torch.optim.SGD([images], lr=params.lr_img, momentum=params.momentum)
    opt_lr = torch.optim.SGD([lr], lr=params.lr_lr, momentum=params.momentum)
    if state.momentum_images is not None and state.momentum_lr is not None:
        opt_images.state[images]["momentum_buffer"] = state.momentum_images.to(task.device)
        opt_lr.state[lr]["momentum_buffer"] = state.momentum_lr.to(task.device)

    expert_acc = buffer.test_accuracy  # NaN until built or completed with the full splits

    def result(st: _State, status: str) -> CondensedSet:
        extras = zca.to_extras() if zca is not None else {}
        scored = sum(1 for d in range(1, st.iteration + 1) if d % params.eval_every == 0 or d == params.iterations)
        info = {"chosen_iteration": st.best_iteration, "candidates": 1 + scored, "val_accuracy": st.best_val,
                "learned_lr": st.best_lr,
                "iterations_run": st.iteration, "status": status, "implementation": params.implementation,
                "expert_buffer": str(buffer.path),
                "expert_test_accuracy": None if math.isnan(expert_acc) else expert_acc,
                "zca": zca is not None}
        return CondensedSet(st.best_images.detach().float().cpu(), labels.cpu(), lr=st.best_lr,
                            extras=extras, info=info)

    def snapshot(iteration: int) -> _State:
        buf_i = opt_images.state[images].get("momentum_buffer")
        buf_lr = opt_lr.state[lr].get("momentum_buffer")
        return dataclasses.replace(state, iteration=iteration, images=images.detach().clone(),
                                   lr=lr.detach().clone(), generator=generator.get_state(),
                                   momentum_images=None if buf_i is None else buf_i.clone(),
                                   momentum_lr=None if buf_lr is None else buf_lr.clone())

    task.report(state.iteration, params.iterations)
    for it in range(state.iteration, params.iterations):
        expert = int(torch.randint(buffer.num_experts, (1,), generator=generator))
        start_epoch = int(torch.randint(params.max_start_epoch, (1,), generator=generator))
        pair = to_device(buffer.snapshots(expert, [start_epoch, start_epoch + params.expert_epochs]), task.device)
        plan = plan_unroll(len(labels), batch, params.syn_steps, generator, augment, images.detach())
        out = match(net, images, labels, lr, pair[0], pair[1], plan, augment, **extra)
        images.grad, lr.grad = out.grad_images, out.grad_lr.reshape(lr.shape)
        opt_images.step()
        opt_lr.step()
        # One host sync per iteration for all three divergence checks; the reason only on failure.
        healthy = torch.isfinite(out.loss) & torch.isfinite(lr) & (lr > 0) & torch.isfinite(images).all()
        if not bool(healthy):
            raise Diverged(it, _divergence(out.loss, lr), result(state, f"diverged at iteration {it}"))
        done = it + 1
        task.report(done, params.iterations)
        if done % params.eval_every == 0 or done == params.iterations:
            learned = float(lr.detach())
            val = _val_accuracy(task, images, labels, learned, params, zca, done, augment)
            state = snapshot(done)
            if val > state.best_val:
                state = dataclasses.replace(state, best_images=images.detach().clone(), best_lr=learned,
                                            best_iteration=done, best_val=val)
            if state_path is not None:
                state_path.parent.mkdir(parents=True, exist_ok=True)
                state.save(state_path, digest)
    return result(state, "ok")
