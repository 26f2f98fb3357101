"""The conformance kit's checks of one run's result (:mod:`medbench.testing.conformance` runs the
method and decides which checks apply)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from medbench.core.errors import MedbenchError
from medbench.data.splits import Splits
from medbench.distill.contract import CondensedSet, Method
from medbench.distill.space import Dim
from medbench.tuning.space import check_space

IPC = 2  # images per class of every kit run


@dataclass
class Trial:
    """One run of the method: its set or its error, and what the kit observed."""

    condensed: CondensedSet | None = None
    error: BaseException | None = None
    seconds: float = 0.0
    checkpoints: list[tuple[Any, Any, Any]] = field(default_factory=list)
    reports: list[int] = field(default_factory=list)  # the ``done`` of every progress report
    opened: list[str] = field(default_factory=list)

    def describe_error(self) -> str:
        err = self.error
        return f"{type(err).__name__}: {err}" if err is not None else "no error"


class Fail(Exception):
    """A property fails: its one line."""


class NotApplicable(Exception):
    """A property that cannot apply to this output (found, not declared): its reason."""


def need(trial: Trial, what: str = "the run") -> CondensedSet:
    if trial.condensed is None:
        raise Fail(f"{what} raised {trial.describe_error()}")
    return trial.condensed


def differences(a: CondensedSet, b: CondensedSet) -> list[str]:
    out = []
    if a.images.shape != b.images.shape:
        out.append(f"images {tuple(a.images.shape)} vs {tuple(b.images.shape)}")
    elif not torch.equal(a.images, b.images):
        out.append(f"images (max |Δ| {float((a.images.float() - b.images.float()).abs().max()):.3g})")
    if a.labels.shape != b.labels.shape or not torch.equal(a.labels, b.labels):
        out.append("labels")
    for key in sorted(set(a.extras) | set(b.extras)):
        x, y = a.extras.get(key), b.extras.get(key)
        if x is None or y is None or x.shape != y.shape or not torch.equal(x.cpu(), y.cpu()):
            out.append(f"extras[{key}]")
    if a.lr != b.lr:
        out.append(f"lr {a.lr} vs {b.lr}")
    return out


def check_search_space(method: Method) -> str:
    if not method.search_space:
        raise NotApplicable("declares no search space")
    for name, dim in method.search_space.items():
        if not isinstance(dim, Dim):
            raise Fail(f"{name} is {type(dim).__name__}, not a medbench.distill.space.Dim")
    try:
        check_space(method.name, method.search_space, method.params)
        for name, dim in method.search_space.items():
            for value in dim.choices or (dim.low, dim.high):
                method.make_params({name: int(value) if dim.integer else value})
    except MedbenchError as exc:
        raise Fail(str(exc)) from None
    return f"{len(method.search_space)} field(s): " + ", ".join(
        f"{k} {d.describe()}" for k, d in method.search_space.items())


def check_output(condensed: CondensedSet, splits: Splits, method: Method) -> str:
    problems = []
    if not isinstance(condensed, CondensedSet):
        raise Fail(f"returned {type(condensed).__name__}, not a CondensedSet")
    images, labels = condensed.images, condensed.labels
    expected = (splits.channels, splits.size, splits.size)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.float32:
        problems.append(f"images are {getattr(images, 'dtype', type(images).__name__)}, not float32")
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        problems.append(f"images {tuple(images.shape)}, expected N×{'×'.join(map(str, expected))}")
    elif not torch.isfinite(images).all():
        problems.append("non-finite images")
    k = splits.num_classes
    if labels.is_floating_point():
        if labels.ndim != 2 or labels.shape[1] != k:
            problems.append(f"soft labels {tuple(labels.shape)}, expected N×{k}")
        elif not torch.isfinite(labels).all():
            problems.append("non-finite soft labels")
    elif labels.dtype != torch.int64 or labels.ndim != 1:
        problems.append(f"labels are {labels.dtype} {tuple(labels.shape)}, expected int64 (N,)")
    elif len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= k):
        problems.append(f"labels outside 0..{k - 1}")
    if not problems:
        counts = torch.bincount(condensed.hard_labels().cpu(), minlength=k).tolist()
        if method.uses_ipc and counts != [IPC] * k:
            problems.append(f"images per class {counts}, expected IPC {IPC} of each of {k} classes")
        if not method.uses_ipc and len(condensed) != len(splits.train):
            problems.append(f"{len(condensed)} images, expected the {len(splits.train)} training images")
    if condensed.lr is not None and not (math.isfinite(condensed.lr) and condensed.lr > 0):
        problems.append(f"learned lr {condensed.lr}")
    if problems:
        raise Fail("; ".join(problems))
    kind = "soft" if labels.is_floating_point() else "hard"
    return f"{len(condensed)} images {tuple(images.shape[1:])}, {kind} labels"


def check_checkpoints(trial: Trial, method: Method, params: Any) -> str:
    condensed = need(trial)
    if not trial.checkpoints:
        raise Fail("recorded no checkpoint (call task.checkpoint(iteration, seconds, val_scores))")
    iterations = [c[0] for c in trial.checkpoints]
    seconds = [c[1] for c in trial.checkpoints]
    if not all(isinstance(i, int) and i >= 0 for i in iterations) or iterations != sorted(set(iterations)):
        raise Fail(f"iterations {iterations} are not increasing non-negative integers")
    finite = all(isinstance(s, int | float) and math.isfinite(s) and s >= 0 for s in seconds)
    if not finite or seconds != sorted(seconds):
        raise Fail(f"seconds {seconds} are not finite and non-decreasing")
    for it, _, scores in trial.checkpoints:
        for key in ("accuracy", "balanced_accuracy"):
            value = scores.get(key)
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise Fail(f"checkpoint {it}: val {key} is {value!r}, expected a number in [0, 1]")
    if method.chooses(dataclasses.asdict(params)):
        chosen = condensed.info.get("val_score")
        if not any(chosen == scores["balanced_accuracy"] for _, _, scores in trial.checkpoints):
            raise Fail(f"info['val_score'] {chosen!r} is not the balanced accuracy of any checkpoint")
    return f"{len(iterations)} checkpoints, iterations {iterations[0]}..{iterations[-1]}, {seconds[-1]:.3g} s"


def check_provenance(condensed: CondensedSet, splits: Splits) -> str:
    train = splits.normalize(splits.train.images).cpu()
    index = {train[i].numpy().tobytes(): i for i in range(len(train))}
    images = condensed.images.detach().cpu()
    real = [r for r in range(len(images)) if images[r].numpy().tobytes() in index]
    if not real:
        raise NotApplicable("returns no training image unchanged")
    indices = condensed.extras.get("train_indices")
    if indices is None:
        raise Fail(f"{len(real)} of {len(images)} images are training images, but extras['train_indices'] "
                    f"is missing")
    indices = indices.cpu().long().reshape(-1)
    if len(indices) != len(images):
        raise Fail(f"extras['train_indices'] has {len(indices)} entries for {len(images)} images")
    wrong = [r for r in real if not torch.equal(train[int(indices[r])], images[r])]
    if wrong:
        raise Fail(f"extras['train_indices'] names the wrong training image for image(s) {wrong[:5]}")
    return f"{len(real)} of {len(images)} images are training images, each named in extras['train_indices']"
