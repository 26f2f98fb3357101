"""The one small interface every distillation method implements, and the method registry.

A method is a function ``(task: DistillTask, params: P) -> CondensedSet`` registered with
``@register_method("name", params=P)``, where ``P`` is a dataclass of its hyper-parameters with
its defaults (the official code's values where one exists; the docstring names any difference).
Methods never see the test split.

A method that keeps the best of several candidates (checkpoints, subsets) scores them on val with
the task's **selection metric** (:data:`SELECTION_METRICS`, balanced accuracy by default: it does not
reward predicting the majority class) and returns the score of the set it keeps as
``info["val_score"]``. Such a method declares ``selects`` (a cell's identity then includes the
metric) and, where one exists, its **matched baseline** (``matched``): the baseline that makes the
same choice among as many candidates, e.g. ``random`` with ``candidates=N``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from medbench.core import hparams
from medbench.core.devices import default_memory_budget, to_device
from medbench.core.errors import MedbenchError
from medbench.core.registry import Registry
from medbench.data.splits import Split, Splits, TrainGeometry
from medbench.distill import partition
from medbench.distill.budget import Budget, Spent
from medbench.distill.budget import over as budget_over
from medbench.nn.models import ModelSpec

P = TypeVar("P")

# The properties the conformance kit (:mod:`medbench.testing`) checks; a method exempts one with a
# reason (``register_method(exempt={"resume": "one pass, nothing to resume"})``), and every
# property it does not exempt is checked.
PROPERTIES = ("search-space", "output", "deterministic", "seed", "test-split", "checkpoints", "provenance",
              "resume", "budget", "non-finite")

# Val scores a method may choose its candidates by; the first is the default. Cells chosen by
# accuracy (every cell stored before the metric existed) keep their ids and are labelled as such.
SELECTION_METRICS = ("balanced_accuracy", "accuracy")
DEFAULT_SELECTION = SELECTION_METRICS[0]


@dataclass(frozen=True)
class CondensedSet:
    """What a method returns: a small training set in the normalised space of the real data."""

    images: torch.Tensor  # float32 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,) hard labels, or float (N, num_classes) soft labels
    lr: float | None = None  # a learned evaluation learning rate, if the method learns one
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. a ZCA transform
    info: dict[str, Any] = field(default_factory=dict)  # plain facts worth storing (chosen iteration…)

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError("condensed images and labels differ in length")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def hard_labels(self) -> torch.Tensor:
        """Each image's class: the labels themselves, the class a soft-label method made the image
        for (``extras["hard_labels"]``), or else the most probable class of its soft label."""
        if not self.labels.is_floating_point():
            return self.labels
        return self.extras.get("hard_labels", self.labels.argmax(1)).long()

    def training_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels a network trains on: the stored ones, or, for a partitioned set
        (IDM), every stored image's tiles expanded to full size (:mod:`medbench.distill.partition`)."""
        factor = int(self.extras[partition.EXTRA]) if partition.EXTRA in self.extras else 1
        return partition.expand(self.images, self.labels, factor)

    def detach(self) -> CondensedSet:
        return dataclasses.replace(self, images=self.images.detach().float().cpu(),
                                   labels=self.labels.detach().cpu())


@dataclass(frozen=True)
class DistillTask(TrainGeometry):
    """Everything a method may use: training and validation data, never the test split."""

    train: Split  # uint8 images on ``device``
    val: Split
    num_classes: int
    ipc: int
    seed: int
    device: torch.device
    normalize: Callable[[torch.Tensor], torch.Tensor]  # uint8 -> normalised float
    model: ModelSpec = field(default_factory=ModelSpec)
    checkpoint_dir: Path | None = None  # where a long method may save state to resume from
    progress: Callable[[int, int], None] | None = None  # (done, total) for progress bars
    # Iterative methods call this for every val-scored checkpoint: (iteration, cumulative distillation
    # seconds, val scores {"accuracy", "balanced_accuracy"}) — tuning reports it to Ray Tune.
    on_checkpoint: Callable[[int, float, dict[str, float]], None] | None = None
    budget: Budget | None = None  # iterative methods stop once they have spent it (medbench.distill.budget)
    selection_metric: str = DEFAULT_SELECTION  # the val score candidates are chosen by (SELECTION_METRICS)
    # Bytes a method may plan to hold (e.g. MTT's unrolled graph); None: half the device's free memory.
    # Chooses between paths that compute the same thing, never what is computed.
    memory_budget: int | None = None

    @cached_property
    def class_indices(self) -> list[torch.Tensor]:
        """Training indices of each class, built once and kept on the device."""
        return [torch.nonzero(self.train.labels == c).flatten() for c in range(self.num_classes)]

    def subset_indices(self, generator: torch.Generator) -> torch.Tensor:
        """IPC training indices per class, drawn uniformly without replacement, class-contiguous."""
        chosen = []
        for c, pool in enumerate(self.class_indices):
            if len(pool) < self.ipc:
                raise MedbenchError(f"IPC {self.ipc} exceeds the {len(pool)} training images of class {c}")
            chosen.append(pool[to_device(torch.randperm(len(pool), generator=generator)[: self.ipc], pool.device)])
        return torch.cat(chosen)

    def initial_indices(self) -> torch.Tensor:
        """The subset every method that starts from real images starts from: the one ``random``
        selects with the same seed, so a method's gain over random is a paired difference."""
        return self.subset_indices(torch.Generator().manual_seed(self.seed))

    def real(self, indices: torch.Tensor) -> torch.Tensor:
        """Normalised float training images at ``indices``."""
        return self.normalize(self.train.images[indices])

    def sample_class(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` normalised images of class ``c`` drawn without replacement (all if fewer)."""
        pool = self.class_indices[c]
        order = to_device(torch.randperm(len(pool), generator=generator, device="cpu")[:n], pool.device)
        return self.real(pool[order])

    def memory_bytes(self) -> int:
        """:attr:`memory_budget`, or the machine's default (:func:`default_memory_budget`)."""
        return self.memory_budget if self.memory_budget is not None else default_memory_budget(self.device)

    def build_model(self) -> torch.nn.Module:
        return self.model.build(self.channels, self.num_classes, self.size).to(self.device)

    def report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)

    def checkpoint(self, iteration: int, seconds: float, scores: dict[str, float]) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint(iteration, seconds, scores)

    def selection_score(self, scores: dict[str, float]) -> float:
        """The value of ``scores`` (val accuracy, balanced accuracy) a candidate is chosen by."""
        return scores[self.selection_metric]

    @property
    def counts_flops(self) -> bool:
        """Whether iterations are FLOP-counted (only under a FLOP budget: :mod:`medbench.distill.budget`)."""
        return self.budget is not None and self.budget.kind == "flops"

    def over_budget(self, spent: Spent | float) -> bool:
        """Whether an iterative method has spent its distillation budget: ``spent`` from a
        :class:`~medbench.distill.budget.Meter`, or (a method counting only those) wall-clock seconds."""
        return budget_over(self.budget, spent)


@dataclass(frozen=True)
class NoParams:
    """A method without hyper-parameters."""


@dataclass(frozen=True)
class Method(Generic[P]):
    name: str
    run: Callable[[DistillTask, P], CondensedSet]
    params: type[P]
    description: str
    uses_ipc: bool = True  # False for "full": IPC is ignored and reported as "full"
    # Expensive work shared by all cells of a dataset (MTT's expert buffer), run once per dataset
    # by the harness before the cells: ``prepare(splits, params, model, progress)``.
    prepare: Callable[[Splits, P, ModelSpec, Callable[[int, int], None] | None], None] | None = None
    # What ``medbench tune`` searches: field -> medbench.tuning.space.Dim (ranges, scales).
    search_space: Mapping[str, Any] = field(default_factory=dict)
    # Whether the method (with these params) chooses among candidates on val: then the selection
    # metric is part of its cells' identity. A bool, or a function of the params.
    selects: bool | Callable[[P], bool] = True
    # The matched baseline of a selecting method, a function of its params: (method, params), e.g.
    # ("random", {"candidates": 11, ...}); None where there is none.
    matched: Callable[[P], tuple[str, dict[str, Any]] | None] | None = None
    # A check of the method's own inputs against a dataset, run before anything is written:
    # ``preflight(params, splits, ipc)`` raises MedbenchError (a share package's checksum, shape, IPC).
    preflight: Callable[[P, Splits, int | None], None] | None = None
    # Conformance-kit properties (PROPERTIES) that do not apply, each with its reason.
    exempt: Mapping[str, str] = field(default_factory=dict)
    # The kit's tiny settings: params values, or a function (splits, workdir) -> values (or its
    # "module:function" name) for methods whose inputs must be made first (a share package).
    conform_params: Mapping[str, Any] | Callable[[Splits, Path], Mapping[str, Any]] | str | None = None

    def make_params(self, values: Mapping[str, Any] | None = None) -> P:
        return hparams.build(self.params, values, context=f"method {self.name}")

    def chooses(self, values: Mapping[str, Any] | None = None) -> bool:
        """Whether this method, run with ``values``, chooses among candidates on val."""
        return self.selects(self.make_params(values)) if callable(self.selects) else bool(self.selects)

    def baseline(self, values: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]] | None:
        """The matched baseline (method, params) of this method run with ``values``, if any."""
        return self.matched(self.make_params(values)) if self.matched is not None else None


# The built-in methods, by name: imported on first lookup, never by importing a package.
BUILTIN_METHODS = {
    "random": "medbench.methods.random_selection:random_selection",
    "random_tiled": "medbench.methods.random_selection:random_tiled",
    "herding": "medbench.methods.coresets:herding",
    "kcenter": "medbench.methods.coresets:kcenter",
    "full": "medbench.methods.full:full_training_set",
    "dc": "medbench.methods.dc:dc",
    "dsa": "medbench.methods.dc:dsa",
    "dm": "medbench.methods.dm:dm",
    "idm": "medbench.methods.idm:idm",
    "mtt": "medbench.methods.mtt:mtt",
    "datm": "medbench.methods.datm:datm",
    "random_soft": "medbench.methods.datm:random_soft",
    "package": "medbench.methods.package:package",
}
METHODS: Registry[Method] = Registry("method", entry_point_group="medbench.methods", builtins=BUILTIN_METHODS)


def register_method(name: str, *, params: type = NoParams, uses_ipc: bool = True,
                    prepare: Callable | None = None, search_space: Mapping[str, Any] | None = None,
                    selects: bool | Callable[[Any], bool] = True,
                    matched: Callable[[Any], tuple[str, dict[str, Any]] | None] | None = None,
                    preflight: Callable[[Any, Splits, int | None], None] | None = None,
                    exempt: Mapping[str, str] | None = None,
                    conform_params: Mapping[str, Any] | Callable | str | None = None) -> Callable:
    """Register ``fn(task, params) -> CondensedSet`` under ``name``; its docstring's first line
    is the description ``medbench methods`` shows. ``search_space``: the fields ``medbench tune``
    searches, ``{field: Dim(low, high, scale)}`` (checked when tuning starts). ``selects``: whether
    the method chooses among candidates on val (``task.selection_metric``; default True, so an
    undeclared plug-in is never pooled across selection metrics); ``matched``: params -> its matched
    baseline ``(method, params)`` (see the module doc); ``preflight(params, splits, ipc)``: a check of
    the method's own inputs that ``run`` makes before it writes anything. ``exempt``: conformance
    properties (:data:`PROPERTIES`) that do not apply, ``{property: reason}``; ``conform_params``: the
    tiny settings ``medbench conform`` runs the method with (see :class:`Method`)."""
    unknown = sorted(set(exempt or {}) - set(PROPERTIES))
    if unknown:
        raise MedbenchError(f"method {name}: exempt names unknown properties {', '.join(unknown)}; "
                            f"the properties are {', '.join(PROPERTIES)}")
    empty = sorted(k for k, why in (exempt or {}).items() if not isinstance(why, str) or not why.strip())
    if empty:
        raise MedbenchError(f"method {name}: exempt {', '.join(empty)} without a reason")

    def wrap(_name: str, fn: Callable) -> Method:
        description = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        return Method(name, fn, params, description, uses_ipc, prepare, dict(search_space or {}), selects, matched,
                      preflight, dict(exempt or {}), conform_params)

    return METHODS.decorator(name, wrap)


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)


def get_method(name: str) -> Method:
    return METHODS.get(name)
