"""What DC, DSA and DM share: learnable synthetic images, per-iteration seeding, checkpoint
selection on val (by the task's selection metric), and atomic save/resume.

Randomness: iteration ``i`` draws everything (real batches, network initialisation,
augmentation) from a generator seeded by ``(task.seed, i)``, so the RNG state to resume from is
just the iteration number, and an interrupted run resumes to exactly the uninterrupted result.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medbench.core import seeds
from medbench.core.errors import CellFailed, MedbenchError
from medbench.core.files import atomic_open
from medbench.core.hparams import check
from medbench.core.seeds import generator_for
from medbench.distill.budget import Meter, Spent
from medbench.distill.contract import CondensedSet, DistillTask
from medbench.nn.augment import SiameseAugment, dsa
from medbench.nn.training import Augment, candidate_scores

INITS = ("real", "noise")


def check_loop_params(p: Any) -> None:
    """Validation shared by the params dataclasses of the methods built on :func:`distill`."""
    check(p.iterations >= 1, f"iterations must be at least 1, got {p.iterations}")
    check(p.lr_img > 0, f"lr_img must be positive, got {p.lr_img}")
    check(0 <= p.momentum_img < 1, f"momentum_img must lie in [0, 1), got {p.momentum_img}")
    check(p.init in INITS, f"unknown init {p.init!r}; choose {' or '.join(INITS)}")
    check(p.batch_real >= 1, f"batch_real must be at least 1, got {p.batch_real}")
    check(p.eval_every >= 1, f"eval_every must be at least 1, got {p.eval_every}")
    check(p.eval_epochs >= 1, f"eval_epochs must be at least 1, got {p.eval_epochs}")
    check(p.eval_lr > 0, f"eval_lr must be positive, got {p.eval_lr}")


def check_ipc(task: DistillTask) -> None:
    """Initialising from real images (and a meaningful comparison with random selection) needs
    IPC distinct images in every class."""
    smallest = min(len(pool) for pool in task.class_indices)
    if task.ipc < 1 or task.ipc > smallest:
        raise MedbenchError(f"IPC {task.ipc} must lie in 1..{smallest} (the smallest class's training images)")


def fresh_model(task: DistillTask, generator: torch.Generator) -> nn.Module:
    """``task.build_model()`` initialised from ``generator`` without touching the global RNG."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return task.build_model()


def augmenter(enabled: bool, task: DistillTask) -> SiameseAugment | None:
    return dsa(task.channels, enabled)


def sample_real(task: DistillTask, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``n`` real images of every class, stacked as ``(C, B, ...)`` with ``(C, B)`` weights.

    Classes with fewer than ``B`` images are padded with copies of their own images at weight 0,
    so per-class means over the weights equal the means over the images actually drawn.
    """
    batches = [task.sample_class(c, n, generator) for c in range(task.num_classes)]
    width = max(b.shape[0] for b in batches)
    images, weights = [], []
    for b in batches:
        pad = width - b.shape[0]
        images.append(torch.cat([b, b[torch.arange(pad, device=b.device) % b.shape[0]]]) if pad else b)
        weights.append(torch.cat([torch.ones(b.shape[0]), torch.zeros(pad)]))
    return torch.stack(images), torch.stack(weights).to(images[0].device)


def initial_images(task: DistillTask, init: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """IPC images per class, class-contiguous, and their fixed labels."""
    labels = torch.arange(task.num_classes, device=task.device).repeat_interleave(task.ipc)
    if init == "real":
        images = task.real(task.initial_indices())  # random's subset for this seed: paired comparisons
    else:
        shape = (task.num_classes * task.ipc, task.channels, task.size, task.size)
        images = torch.randn(shape, generator=generator).to(task.device)
    return images.float().contiguous(), labels


def initial_set(task: DistillTask, init: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact initialisation :func:`distill` starts from."""
    return initial_images(task, init, generator_for(task.seed, seeds.INIT, 0))


def iteration_generator(task: DistillTask, iteration: int) -> torch.Generator:
    return generator_for(task.seed, seeds.ITERATION, iteration)


def val_scores(task: DistillTask, images: torch.Tensor, labels: torch.Tensor, *, epochs: int, lr: float,
               augment: Augment | None) -> dict[str, float]:
    """Val accuracy and balanced accuracy of a network trained on the candidate set. The same
    initialisation and data order for every candidate, so checkpoints are compared on the set alone."""
    generator = generator_for(task.seed, seeds.SELECTION, 0)
    return candidate_scores(fresh_model(task, generator), images.detach(), labels, task.val.images, task.val.labels,
                            epochs=epochs, lr=lr, generator=generator, augment=augment, prepare=task.normalize)


def val_score(task: DistillTask, images: torch.Tensor, labels: torch.Tensor, *, epochs: int, lr: float,
              augment: Augment | None) -> float:
    """:func:`val_scores` in the task's selection metric: what candidates are chosen by."""
    return task.selection_score(val_scores(task, images, labels, epochs=epochs, lr=lr, augment=augment))


def checkpoint_count(iterations: int, eval_every: int) -> int:
    """How many checkpoints a loop of ``iterations`` scored every ``eval_every`` chooses among: the
    initial set, every ``eval_every``-th iteration and the last one (fewer if a budget stops it)."""
    return 1 + iterations // eval_every + (1 if iterations % eval_every else 0)


def matched_random(params: Any, *, augment: bool, method: str = "random", lr: float | None = None,
                   **extra: Any) -> tuple[str, dict[str, Any]]:
    """The matched baseline of a checkpoint-choosing loop: ``method`` (random, or a tiled random)
    choosing among as many real subsets as the loop has checkpoints, each scored on val by a
    network trained as the loop scores its checkpoints (epochs, lr, augmentation)."""
    return method, {"candidates": checkpoint_count(params.iterations, params.eval_every),
                    "eval_epochs": params.eval_epochs, "eval_lr": lr if lr is not None else params.eval_lr,
                    "augment": augment, **extra}


# step(images, optimizer, generator) runs one iteration's image updates and returns its matching
# loss as a 0-dim tensor (not a float: no device sync per iteration).
Step = Callable[[torch.Tensor, torch.optim.Optimizer, torch.Generator], torch.Tensor]


@dataclass
class _State:
    iteration: int
    images: torch.Tensor
    optimizer: dict
    best_images: torch.Tensor
    best_iteration: int
    best_accuracy: float  # the best checkpoint's val score in the selection metric (name kept: resumable states)
    history: list[tuple[int, float]]  # (iteration, val score) of every checkpoint
    losses: list[tuple[int, float]]  # (iteration, mean matching loss since the last checkpoint)
    seconds: float = 0.0  # distillation seconds so far (checkpoint scoring excluded), across resumes
    checkpoints: list[tuple[int, float, float]] = dataclasses.field(default_factory=list)  # (it, seconds, val)
    cpu_seconds: float = 0.0  # process CPU seconds of the same iterations
    flops: float = 0.0  # FLOPs of the same iterations (medbench.distill.budget)


Decode = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def distill(task: DistillTask, params: Any, *, name: str, step: Step, augment: SiameseAugment | None,
            initial: torch.Tensor | None = None, decode: Decode | None = None,
            on_resume: Callable[[int], None] | None = None,
            on_save: Callable[[int], None] | None = None) -> CondensedSet:
    """Run ``params.iterations`` of ``step`` on learnable images, checkpointing every
    ``params.eval_every`` and at the end, and return the checkpoint with the best val score in the
    task's selection metric (iteration 0, the initialisation, is a candidate too).

    ``initial``: the starting images (default :func:`initial_set`); ``decode``: what a network
    trains on given the stored (images, labels), for checkpoint scoring (IDM's expansion);
    ``on_resume(i)``: called once with the iteration the loop starts from (0 on a fresh run), for
    method state that lives outside the images (IDM's model queue); ``on_save(i)``: called before
    each checkpoint of iteration ``i`` is written, to save that state beside it."""
    check_ipc(task)
    labels = torch.arange(task.num_classes, device=task.device).repeat_interleave(task.ipc)
    fingerprint = {"method": name, "params": dataclasses.asdict(params), "ipc": task.ipc, "seed": task.seed,
                   "num_classes": task.num_classes, "shape": list(task.train.images.shape[1:]),
                   "model": [task.model.name, task.model.options]}
    if task.selection_metric != "accuracy":  # states saved before the metric existed chose by accuracy
        fingerprint["selection"] = task.selection_metric
    path = task.checkpoint_dir / f"{name}.pt" if task.checkpoint_dir is not None else None

    def evaluate(images: torch.Tensor, iteration: int, seconds: float) -> float:
        x, y = decode(images.detach(), labels) if decode is not None else (images, labels)
        scores = val_scores(task, x, y, epochs=params.eval_epochs, lr=params.eval_lr, augment=augment)
        task.checkpoint(iteration, seconds, scores)
        return task.selection_score(scores)

    state = _load(path, fingerprint, task.device)
    if state is None:
        images = initial if initial is not None else initial_set(task, params.init)[0]
        acc = evaluate(images, 0, 0.0)
        state = _State(0, images, {}, images.clone(), 0, acc, [(0, acc)], [], 0.0, [(0, 0.0, acc)])
        _save(path, fingerprint, state)

    images = state.images.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([images], lr=params.lr_img, momentum=params.momentum_img)
    if state.optimizer:
        optimizer.load_state_dict(state.optimizer)
    window: list[torch.Tensor] = []
    if on_resume is not None:
        on_resume(state.iteration)
    meter = Meter(Spent(state.seconds, state.cpu_seconds, state.flops), count_flops=task.counts_flops)
    budget_hit = task.over_budget(meter.spent)
    for it in range(state.iteration, params.iterations):
        if budget_hit:
            break
        with meter.iteration():
            window.append(step(images, optimizer, iteration_generator(task, it)).detach())
        done = it + 1
        task.report(done, params.iterations)
        budget_hit = task.over_budget(meter.spent)
        if done % params.eval_every == 0 or done == params.iterations or budget_hit:
            losses = torch.stack(window)
            finite = torch.isfinite(losses)
            if not bool(finite.all() & torch.isfinite(images).all()):
                # Never keep an earlier checkpoint (or the real initialisation) as a finished result.
                bad = (~finite).nonzero()
                where = f"at iteration {done - len(window) + int(bad[0]) + 1}" if len(bad) else f"by iteration {done}"
                raise CellFailed(f"{name} diverged {where} (non-finite matching loss or images; "
                                 f"lr_img {params.lr_img:g})")
            seconds = meter.spent.seconds
            acc = evaluate(images, done, seconds)
            state.history.append((done, acc))
            state.checkpoints.append((done, seconds, acc))
            state.losses.append((done, float(losses.mean())))
            window = []
            if acc > state.best_accuracy:
                state.best_images, state.best_iteration, state.best_accuracy = images.detach().clone(), done, acc
            state.iteration, state.images, state.optimizer = done, images.detach(), optimizer.state_dict()
            state.seconds, state.cpu_seconds, state.flops = dataclasses.astuple(meter.spent)
            if on_save is not None and path is not None:
                on_save(done)
            _save(path, fingerprint, state)

    spent = Spent(state.seconds, state.cpu_seconds, state.flops)  # as of the last checkpoint: what the result cost
    # The initialisation chosen unchanged is real training images: name them (privacy audits, exports).
    real_start = initial is None and params.init == "real" and state.best_iteration == 0
    return CondensedSet(
        state.best_images.detach().clone(), labels,
        extras={"train_indices": task.initial_indices().cpu()} if real_start else {},
        info={"chosen_iteration": state.best_iteration, "candidates": len(state.history),
              "selection_metric": task.selection_metric, "val_score": state.best_accuracy,
              "iterations": params.iterations, "val_history": state.history,
              "matching_loss": state.losses, "checkpoints": state.checkpoints,
              "spent": spent.as_dict(task.counts_flops), "flops_per_iteration": meter.flops_per_iteration,
              **({"stopped_by_budget": state.iteration} if task.over_budget(spent)
                 and state.iteration < params.iterations else {})},
    )


def _save(path: os.PathLike | None, fingerprint: dict, state: _State) -> None:
    if path is None:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    payload = {"fingerprint": fingerprint, **dataclasses.asdict(state)}
    payload["images"] = state.images.detach().cpu()
    payload["best_images"] = state.best_images.detach().cpu()
    with atomic_open(Path(path)) as fh:  # a crash mid-write leaves the previous checkpoint intact
        torch.save(payload, fh)


def _load(path: os.PathLike | None, fingerprint: dict, device: torch.device) -> _State | None:
    if path is None or not os.path.exists(path):
        return None
    payload = torch.load(path, map_location=device, weights_only=True)
    if payload.get("fingerprint") != fingerprint:
        raise MedbenchError(f"checkpoint {path} belongs to another run (settings differ); remove it to restart")
    payload.pop("fingerprint")
    return _State(**payload)
