"""The distillation loop every trajectory-matching method shares (MTT, DATM).

Each iteration draws an expert and a start epoch ``i`` from the method's matching range, unrolls a
student from ``θ_i`` on the synthetic set (:mod:`.unroll`) and steps the images, the learned lr α
and, for soft-label methods, the label logits on the gradient of the normalised matching loss.
Checkpoints are scored on val (never test), the best is kept, and the whole state is saved
atomically every ``eval_every`` iterations so an interrupted cell resumes bit-for-bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from medbench.core import seeds
from medbench.core.devices import to_device
from medbench.core.errors import CellFailed
from medbench.core.files import atomic_write_bytes
from medbench.core.seeds import derived_seed
from medbench.distill.budget import Meter, Spent
from medbench.distill.contract import CondensedSet, DistillTask
from medbench.nn.training import candidate_scores
from medbench.nn.whitening import ZCA

from .buffer import ExpertBuffer, FlatParams, build_seeded, make_augment
from .unroll import IMPLEMENTATIONS, choose_implementation, plan_unroll, unrolled_bytes


class Diverged(CellFailed):
    """Distillation blew up (non-finite loss or images, or a learned lr that is no longer positive).

    A :class:`CellFailed`, so the harness stores the cell as failed with the one-line message
    "diverged at iteration N (reason)" and goes on. ``condensed`` is the last good result: the
    set chosen on val (the task's selection metric) among the checkpoints evaluated before the blow-up.
    """

    def __init__(self, iteration: int, reason: str, condensed: CondensedSet | None) -> None:
        super().__init__(f"diverged at iteration {iteration} ({reason})")
        self.iteration = iteration
        self.reason = reason
        self.condensed = condensed


@dataclass(frozen=True)
class Matching:
    """What a method brings to the shared loop: its start, its matching range, its label rule."""

    name: str  # the method, for its state file and messages
    images: torch.Tensor  # the initial synthetic images (in ZCA space when the buffer uses ZCA)
    labels: torch.Tensor  # int class indices (fixed) or float label logits (learned when lr_labels)
    start_range: Callable[[int], tuple[int, int]]  # iteration -> [low, high) of the start epoch
    lr_labels: float | None = None  # SGD lr of the label logits; None: labels stay fixed
    momentum_labels: float = 0.9
    threshold: float | None = None  # skip the update of an iteration whose loss exceeds this (DATM)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # facts stored with the result


@dataclass
class _State:
    """Everything needed to resume bit-for-bit: tensors plus a few numbers."""

    iteration: int
    images: torch.Tensor
    lr: torch.Tensor
    labels: torch.Tensor
    best_images: torch.Tensor
    best_labels: torch.Tensor
    best_lr: float
    best_iteration: int
    best_val: float
    generator: torch.Tensor
    skipped: int = 0  # iterations whose update the threshold skipped
    momentum: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0  # distillation seconds so far (checkpoint scoring excluded), across resumes
    checkpoints: list[tuple[int, float, float]] = dataclasses.field(default_factory=list)  # (it, seconds, val)
    cpu_seconds: float = 0.0  # process CPU seconds of the same iterations
    flops: float = 0.0  # FLOPs of the same iterations (medbench.distill.budget)

    _TENSORS = ("images", "labels", "best_images", "best_labels", "generator")

    def save(self, path: Path, digest: str) -> None:
        tensors = {k: getattr(self, k) for k in self._TENSORS}
        tensors["lr"] = self.lr.reshape(1)
        tensors.update({f"momentum_{k}": v.reshape(-1) if k == "lr" else v for k, v in self.momentum.items()})
        meta = {"digest": digest, "iteration": str(self.iteration), "best_lr": repr(self.best_lr),
                "best_iteration": str(self.best_iteration), "best_val": repr(self.best_val),
                "skipped": str(self.skipped), "seconds": repr(self.seconds),
                "cpu_seconds": repr(self.cpu_seconds), "flops": repr(self.flops),
                "checkpoints": json.dumps(self.checkpoints)}
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
        momentum = {k.removeprefix("momentum_"): v for k, v in tensors.items() if k.startswith("momentum_")}
        if "lr" in momentum:
            momentum["lr"] = momentum["lr"][0]
        return cls(int(meta["iteration"]), tensors["images"], tensors["lr"][0], tensors["labels"],
                   tensors["best_images"], tensors["best_labels"], float(meta["best_lr"]),
                   int(meta["best_iteration"]), float(meta["best_val"]), tensors["generator"],
                   int(meta.get("skipped", 0)), momentum, float(meta.get("seconds", 0.0)),
                   [tuple(c) for c in json.loads(meta.get("checkpoints", "[]"))],
                   float(meta.get("cpu_seconds", 0.0)), float(meta.get("flops", 0.0)))


def params_digest(params: Any, task: DistillTask, name: str) -> str:
    payload = {"method": name, "params": dataclasses.asdict(params), "ipc": task.ipc, "seed": task.seed,
               "classes": task.num_classes}
    if task.selection_metric != "accuracy":  # states saved before the metric existed chose by accuracy
        payload["selection"] = task.selection_metric
    blob = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def set_labels(labels: torch.Tensor) -> torch.Tensor:
    """The labels a condensed set carries: class indices, or the softmax of learned logits."""
    return labels.softmax(1) if labels.is_floating_point() else labels


def val_scores(task: DistillTask, images: torch.Tensor, labels: torch.Tensor, lr: float, params: Any,
               zca: ZCA | None, iteration: int, augment: Any | None) -> dict[str, float]:
    """Score a checkpoint: a quickly trained network on the set, evaluated on val (never test).

    Trained as the protocol trains (SGD 0.9, wd 5e-4, lr step at half) with the learned lr, the
    set's (soft) labels and, as the official evaluation, DSA when the method uses it."""
    seed = derived_seed(task.seed, iteration, seeds.CHECKPOINT_SCORING)
    model = build_seeded(task.model, task.channels, task.num_classes, task.size, seed, task.device)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = task.normalize(x)
        return zca(x) if zca is not None else x

    return candidate_scores(model, images.detach(), set_labels(labels.detach()), task.val.images, task.val.labels,
                            epochs=params.eval_epochs, lr=lr, generator=torch.Generator().manual_seed(seed),
                            augment=augment, prepare=prepare)


def _spent(state: _State) -> Spent:
    return Spent(state.seconds, state.cpu_seconds, state.flops)


def _divergence(loss: torch.Tensor, lr: torch.Tensor) -> str:
    """Why an iteration failed its health check."""
    learned = float(lr.detach())
    if not math.isfinite(float(loss)):
        return "non-finite matching loss"
    return "non-finite images or labels" if math.isfinite(learned) and learned > 0 else f"learned lr {learned:g}"


def match_trajectories(task: DistillTask, params: Any, buffer: ExpertBuffer, matching: Matching,
                       generator: torch.Generator | None = None) -> CondensedSet:
    """Run ``params.iterations`` of trajectory matching from ``matching``'s start (see the module doc).

    ``params`` carries the loop's settings (syn_steps, expert_epochs, lr_img, lr_lr, lr_teacher,
    momentum, batch_syn, iterations, augment, implementation, checkpoint_every, eval_every,
    eval_epochs); MTT's and DATM's params dataclasses both do. ``generator`` draws the experts, start
    epochs and unroll plans (default: seeded with ``task.seed``; MTT passes the one its noise
    initialisation drew from, so its stream is the one it always was)."""
    zca = buffer.zca()
    net = FlatParams(build_seeded(task.model, task.channels, task.num_classes, task.size,
                                  derived_seed(task.seed, seeds.STUDENT), task.device))
    net.module.train()
    augment = make_augment(params.augment, task.channels)
    learn_labels = matching.lr_labels is not None
    generator = generator if generator is not None else torch.Generator().manual_seed(task.seed)
    batch = params.batch_syn or len(matching.labels)
    budget = task.memory_bytes()

    def estimate() -> int:  # the unrolled graph of one iteration, from a plan drawn on a copy of the stream
        probe = torch.Generator().manual_seed(task.seed)
        plan = plan_unroll(len(matching.labels), batch, params.syn_steps, probe, augment, matching.images)
        return unrolled_bytes(net, matching.images, matching.labels, torch.tensor(params.lr_teacher),
                              net.flatten().to(task.device), plan, augment)  # any start: shapes decide

    implementation, unrolled_need = choose_implementation(params.implementation, budget, estimate)
    params = dataclasses.replace(params, implementation=implementation)  # resumes only on the same path
    match = IMPLEMENTATIONS[implementation]
    extra = {"checkpoint_every": params.checkpoint_every} if implementation == "tesla" else {}
    memory = {} if unrolled_need is None else {"implementation_chosen_by": {
        "unrolled_bytes": unrolled_need, "memory_budget": budget}}

    digest = params_digest(params, task, matching.name)
    state_path = task.checkpoint_dir / f"{matching.name}_state.safetensors" if task.checkpoint_dir else None
    state = _State.load(state_path, digest) if state_path and state_path.is_file() else None
    def score(images: torch.Tensor, labels: torch.Tensor, lr: float, iteration: int, seconds: float) -> float:
        scores = val_scores(task, images, labels, lr, params, zca, iteration, augment)
        task.checkpoint(iteration, seconds, scores)
        return task.selection_score(scores)

    # The learned step size α is learned as itself (the official parameterisation) or as log α, which
    # keeps it positive whatever the gradient (``lr_space``); the state holds the learned parameter.
    log_lr = params.lr_space == "log"
    if state is None:
        images0, labels0 = matching.images.detach().clone(), matching.labels.detach().clone()
        val = score(images0, labels0, params.lr_teacher, 0, 0.0)
        alpha0 = torch.tensor(params.lr_teacher)
        state = _State(0, images0, alpha0.log() if log_lr else alpha0, labels0, images0.clone(), labels0.clone(),
                       params.lr_teacher, 0, val, generator.get_state(), checkpoints=[(0, 0.0, val)])
    generator.set_state(state.generator)
    images = state.images.to(task.device).requires_grad_(True)
    lr = state.lr.to(task.device).requires_grad_(True)  # α, or log α

    def alpha() -> torch.Tensor:
        return lr.detach().exp() if log_lr else lr.detach()

    labels = state.labels.to(task.device).requires_grad_(learn_labels)
    optimizers = {"images": torch.optim.SGD([images], lr=params.lr_img, momentum=params.momentum),
                  "lr": torch.optim.SGD([lr], lr=params.lr_lr, momentum=params.momentum)}
    if learn_labels:
        optimizers["labels"] = torch.optim.SGD([labels], lr=matching.lr_labels, momentum=matching.momentum_labels)
    tensors = {"images": images, "lr": lr, "labels": labels}
    for key, buf in state.momentum.items():
        optimizers[key].state[tensors[key]]["momentum_buffer"] = buf.to(task.device)
    expert_acc = buffer.test_accuracy  # NaN until built or completed with the full splits

    def result(st: _State, status: str) -> CondensedSet:
        extras = zca.to_extras() if zca is not None else {}
        info = {"chosen_iteration": st.best_iteration, "candidates": len(st.checkpoints),
                "selection_metric": task.selection_metric, "val_score": st.best_val,
                "learned_lr": st.best_lr, "iterations_run": st.iteration, "status": status,
                "implementation": implementation, **memory, "expert_buffer": str(buffer.path),
                "expert_test_accuracy": None if math.isnan(expert_acc) else expert_acc, "zca": zca is not None,
                "expert_train_seconds": buffer.train_seconds,  # shared by every cell of the dataset
                "checkpoints": st.checkpoints,
                "spent": _spent(st).as_dict(task.counts_flops), "flops_per_iteration": meter.flops_per_iteration,
                **({"stopped_by_budget": st.iteration} if task.over_budget(_spent(st))
                   and st.iteration < params.iterations else {}),
                **({"skipped_updates": st.skipped} if matching.threshold is not None else {}), **matching.info}
        return CondensedSet(st.best_images.detach().float().cpu(), set_labels(st.best_labels.detach()).cpu(),
                            lr=st.best_lr, extras=extras, info=info)

    def snapshot(iteration: int, skipped: int, spent: Spent) -> _State:
        momentum = {k: opt.state[tensors[k]]["momentum_buffer"].clone() for k, opt in optimizers.items()
                    if opt.state[tensors[k]].get("momentum_buffer") is not None}
        return dataclasses.replace(state, iteration=iteration, images=images.detach().clone(),
                                   lr=lr.detach().clone(), labels=labels.detach().clone(),
                                   generator=generator.get_state(), skipped=skipped, momentum=momentum,
                                   seconds=spent.seconds, cpu_seconds=spent.cpu_seconds, flops=spent.flops)

    skipped = state.skipped
    meter = Meter(_spent(state), count_flops=task.counts_flops)
    budget_hit = task.over_budget(meter.spent)
    task.report(state.iteration, params.iterations)
    for it in range(state.iteration, params.iterations):
        if budget_hit:
            break
        with meter.iteration():
            expert = int(torch.randint(buffer.num_experts, (1,), generator=generator))
            low, high = matching.start_range(it)
            start_epoch = low + int(torch.randint(high - low, (1,), generator=generator))
            pair = to_device(buffer.snapshots(expert, [start_epoch, start_epoch + params.expert_epochs]), task.device)
            plan = plan_unroll(len(labels), batch, params.syn_steps, generator, augment, images.detach())
            step_size = alpha()
            out = match(net, images, labels, step_size, pair[0], pair[1], plan, augment, learn_labels=learn_labels,
                        **extra)
            # DATM's threshold: an iteration whose matching loss exceeds it changes nothing.
            if matching.threshold is None or float(out.loss) <= matching.threshold:
                grad_lr = out.grad_lr * step_size if log_lr else out.grad_lr  # ∂L/∂log α = α ∂L/∂α
                images.grad, lr.grad = out.grad_images, grad_lr.reshape(lr.shape)
                if learn_labels:
                    labels.grad = out.grad_labels
                for opt in optimizers.values():
                    opt.step()
            else:
                skipped += 1
            # One host sync per iteration for all the divergence checks; the reason only on failure.
            learned = alpha()
            healthy = (torch.isfinite(out.loss) & torch.isfinite(learned) & (learned > 0) & torch.isfinite(images).all()
                       & torch.isfinite(labels).all())
            if not bool(healthy):
                raise Diverged(it, _divergence(out.loss, learned), result(state, f"diverged at iteration {it}"))
        done = it + 1
        task.report(done, params.iterations)
        budget_hit = task.over_budget(meter.spent)
        if done % params.eval_every == 0 or done == params.iterations or budget_hit:
            learned = float(alpha())
            seconds = meter.spent.seconds
            val = score(images, labels, learned, done, seconds)
            state = snapshot(done, skipped, meter.spent)
            state.checkpoints = [*state.checkpoints, (done, seconds, val)]
            if val > state.best_val:
                state = dataclasses.replace(state, best_images=images.detach().clone(),
                                            best_labels=labels.detach().clone(), best_lr=learned,
                                            best_iteration=done, best_val=val)
            if state_path is not None:
                state_path.parent.mkdir(parents=True, exist_ok=True)
                state.save(state_path, digest)
    return result(state, "ok")
