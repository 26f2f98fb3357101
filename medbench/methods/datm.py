"""DATM: difficulty-aligned trajectory matching with learned soft labels (Guo et al., ICLR 2024),
and ``random_soft``, the random subset with soft labels from the same teacher (its fair baseline).

DATM is MTT (the shared loop of :mod:`.distill`) with three changes, facts from the official
NUS-HPC-AI-Lab/DATM code (``distill/DATM.py``, ``configs/CIFAR-10/ConvIN``):

* **Difficulty alignment.** The start epoch is drawn from ``[min_start_epoch, upper)``, where
  ``upper`` grows linearly from ``current_max_start_epoch`` at iteration 0 to ``max_start_epoch``
  at iteration ``expansion_end`` (the official "sequential generation"). Small sets match early,
  easy trajectory segments; larger sets later, harder ones. The range is tied to IPC: unset fields
  take the official CIFAR-10 values, IPC 1: [0, 4) fixed; IPC ≤ 10: [0, 10 → 20) over 1,000
  iterations; larger: [0, 20 → 40) over 2,000 iterations.
* **Soft labels.** Each synthetic image carries learnable label logits, initialised as the mean
  logits of the buffer's experts (at their last epoch) over the experts that classify the image
  correctly; the student's loss is the soft cross-entropy with their softmax; the logits are
  updated by SGD (``lr_labels``, momentum 0.9) through the same exact unroll gradient as the images.
* **Initialisation on images the teacher gets right.** Starting from random's subset of the seed
  (paired comparisons; the official code takes the first such images in a random order), every
  image the first expert misclassifies is replaced by the next correctly classified image of its
  class in a seeded order; if a class has too few, the rest stay misclassified (stated in the info).
* An iteration whose matching loss exceeds ``threshold`` changes nothing.

The set's labels are the softmax of the learned logits; the protocol evaluates it with soft
cross-entropy (``Protocol.soft_label_loss``, as DATM's evaluation) and the learned lr.
Where medbench's defaults differ from the official CIFAR-10 IPC-10 config: ``zca`` False
(official True), ``iterations`` 5000 (10000), the buffer of :class:`BufferParams` (official: its
own buffer script with 100 experts), ``eval_every``/``eval_epochs`` are checkpoint selection on val.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from medbench.core import seeds
from medbench.core.devices import to_device
from medbench.core.errors import CellFailed, MedbenchError
from medbench.core.hparams import check
from medbench.core.seeds import derived_seed
from medbench.distill.contract import CondensedSet, DistillTask, register_method
from medbench.distill.space import Dim
from medbench.methods.mtt import MTTParams, check_loop_params
from medbench.methods.trajectory import (
    BufferParams,
    ExpertBuffer,
    Matching,
    match_trajectories,
    open_buffer,
    prepare_buffer,
    set_labels,
    teacher_logits,
)

# (ipc bound, (min_start_epoch, current_max_start_epoch, max_start_epoch, expansion_end)): official CIFAR-10.
RANGES = ((1, (0, 4, 4, 0)), (10, (0, 10, 20, 1000)), (None, (0, 20, 40, 2000)))


@dataclass(frozen=True)
class DATMParams(MTTParams):
    """DATM's settings: MTT's plus the matching range, the label learning rate and the threshold.
    Defaults: the official CIFAR-10 IPC-10 config (syn_steps 80, expert_epochs 2, lr_img 100, lr_lr
    1e-5, lr_y 2, threshold 1.0) with the range by IPC (see the module doc)."""

    syn_steps: int = 80
    expert_epochs: int = 2
    max_start_epoch: int | None = None  # None: by IPC (RANGES)
    min_start_epoch: int | None = None
    current_max_start_epoch: int | None = None  # the upper bound at iteration 0
    expansion_end: int | None = None  # iteration at which the upper bound reaches max_start_epoch
    lr_img: float = 100.0
    lr_labels: float = 2.0  # official lr_y (5 at IPC 1)
    threshold: float = 1.0  # official (1.1 at IPC 1)

    def __post_init__(self) -> None:
        check_loop_params(self)
        check(self.lr_labels > 0, f"lr_labels must be positive, got {self.lr_labels}")
        check(self.threshold > 0, f"threshold must be positive, got {self.threshold}")
        for name in ("max_start_epoch", "min_start_epoch", "current_max_start_epoch", "expansion_end"):
            value = getattr(self, name)
            check(value is None or value >= 0, f"{name} must be non-negative, got {value}")

    def matching_range(self, ipc: int) -> tuple[int, int, int, int]:
        """(min_start_epoch, current_max_start_epoch, max_start_epoch, expansion_end) for ``ipc``:
        the fields given, the rest from the official range for that IPC."""
        rule = next(r for bound, r in RANGES if bound is None or ipc <= bound)
        low = rule[0] if self.min_start_epoch is None else self.min_start_epoch
        high = rule[2] if self.max_start_epoch is None else self.max_start_epoch
        first = min(high, rule[1] if self.current_max_start_epoch is None else self.current_max_start_epoch)
        end = rule[3] if self.expansion_end is None else self.expansion_end
        check(low < first, f"min_start_epoch {low} must lie below the upper bound {first} at IPC {ipc}")
        return low, first, high, end


def upper_bound(iteration: int, first: int, high: int, end: int) -> int:
    """The official sequential generation: first + (high − first)·it/end, capped at high."""
    if end <= 0:
        return high
    return min(high, first + int((high - first) * iteration / end))


def teacher_start(task: DistillTask, buffer: ExpertBuffer, *, correct_only: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Training indices of the initial images, their teacher label logits, and the number of images
    the first expert still misclassifies. ``correct_only``: DATM's replacement rule; otherwise
    random's subset as it is (``random_soft``)."""
    zca = buffer.zca()
    indices = task.initial_indices()
    labels = task.train.labels[indices]
    logits, right = teacher_logits(task, buffer, task.real(indices), labels, zca)
    if correct_only and not bool(right.all()):
        order = torch.randperm(len(task.train.labels), generator=torch.Generator().manual_seed(
            derived_seed(task.seed, seeds.DATM_ORDER)))
        indices = indices.clone()
        for c in range(task.num_classes):
            slots = [int(i) for i in torch.nonzero((labels == c) & ~right).flatten()]
            if not slots:
                continue
            # The class's other images in the seeded order, as tensors (no per-image device sync).
            ordered = to_device(order, task.train.labels.device)
            pool = ordered[(task.train.labels[ordered] == c) & ~torch.isin(ordered, indices[labels == c])]
            for start in range(0, len(pool), 512):
                if not slots:
                    break
                batch = pool[start:start + 512]
                cand_logits, ok = teacher_logits(task, buffer, task.real(batch), task.train.labels[batch], zca)
                for k in torch.nonzero(ok).flatten().tolist():
                    if not slots:
                        break
                    slot = slots.pop(0)
                    indices[slot], logits[slot], right[slot] = batch[k], cand_logits[k], True
    return indices, logits, int((~right).sum())


def _images(task: DistillTask, buffer: ExpertBuffer, indices: torch.Tensor) -> torch.Tensor:
    zca = buffer.zca()
    images = task.real(indices)
    return zca(images) if zca is not None else images


# What `medbench tune` searches, around the official CIFAR-10 values.
# The conformance kit's tiny expert buffer (2 experts × 4 epochs).
CONFORM_BUFFER = {"num_experts": 2, "buffer_epochs": 4, "batch_train": 16, "augment": False}
SEARCH_SPACE = {"lr_img": Dim(10.0, 1000.0, "log"), "lr_labels": Dim(0.5, 20.0, "log"),
                "lr_lr": Dim(1e-7, 1e-3, "log"), "syn_steps": Dim(10, 80, "log", integer=True)}


def matched_soft(p: DATMParams) -> tuple[str, dict]:
    """A soft-label set's baseline: random_soft with the same expert buffer (the same teacher)."""
    return "random_soft", {f.name: getattr(p, f.name) for f in dataclasses.fields(BufferParams)}


@register_method("datm", params=DATMParams, prepare=prepare_buffer, search_space=SEARCH_SPACE, matched=matched_soft,
                 conform_params={**CONFORM_BUFFER, "expert_epochs": 2, "max_start_epoch": 3,
                                 "current_max_start_epoch": 1, "expansion_end": 2, "syn_steps": 3, "iterations": 6,
                                 "eval_every": 2, "eval_epochs": 3, "lr_img": 10.0, "threshold": 1e9})
def datm(task: DistillTask, params: DATMParams) -> CondensedSet:
    """Difficulty-aligned trajectory matching with learned soft labels (Guo et al., ICLR 2024)."""
    try:
        low, first, high, end = params.matching_range(task.ipc)
    except MedbenchError as exc:  # a range impossible at this IPC fails the cell, not the grid
        raise CellFailed(str(exc)) from None
    buffer = open_buffer(task, params, high - 1 + params.expert_epochs)
    indices, logits, wrong = teacher_start(task, buffer, correct_only=True)
    matching = Matching("datm", _images(task, buffer, indices), logits,
                        lambda it: (low, upper_bound(it, first, high, end)),
                        lr_labels=params.lr_labels, threshold=params.threshold,
                        info={"matching_range": [low, first, high, end], "misclassified_init": wrong})
    result = match_trajectories(task, params, buffer, matching)
    # Each image's class (its slot; replacements keep it): the hard labels of DD-Ranking's HLR.
    classes = torch.arange(task.num_classes).repeat_interleave(task.ipc)
    return dataclasses.replace(result, extras={**result.extras, "hard_labels": classes})


@register_method("random_soft", params=BufferParams, prepare=prepare_buffer, selects=False,
                 conform_params=CONFORM_BUFFER, exempt={
                     "checkpoints": "one pass: random's subset labelled by the experts",
                     "resume": "one pass, nothing to resume", "budget": "one pass, no iterations to stop",
                     "non-finite": "no loss of its own (the experts' are the buffer's)"})
def random_soft(task: DistillTask, params: BufferParams) -> CondensedSet:
    """Random's subset with soft labels from the expert buffer's teacher (DATM's label rule): the
    baseline a soft-label method is compared with (DD-Ranking's IOR)."""
    buffer = open_buffer(task, params)
    indices, logits, wrong = teacher_start(task, buffer, correct_only=False)
    zca = buffer.zca()
    # The indices travel with the set: a privacy audit must know these are real patients' images.
    extras = {"train_indices": indices.cpu(), "hard_labels": task.train.labels[indices].long().cpu(),
              **(zca.to_extras() if zca is not None else {})}
    return CondensedSet(_images(task, buffer, indices), set_labels(logits), extras=extras,
                        info={"teacher_misclassified": wrong, "expert_train_seconds": buffer.train_seconds})
