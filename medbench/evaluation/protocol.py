"""The one evaluation protocol every method's output goes through.

Train K fresh networks from K derived seeds on the condensed set, score all of them on val,
and only then on test: nothing is ever chosen after the test split has been looked at.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from medbench.core import hparams, seeds
from medbench.core.errors import CellFailed
from medbench.core.hparams import check
from medbench.data.splits import Splits
from medbench.distill.contract import CondensedSet
from medbench.evaluation.metrics import classification_metrics
from medbench.nn.augment import dsa
from medbench.nn.batched import (
    DEFAULT_OPTIONS,
    Ensemble,
    EvalOptions,
    build_ensemble,
    choose_batching,
    predict_proba_stacked,
    train_stacked,
)
from medbench.nn.models import ModelSpec, architecture
from medbench.nn.training import Augment, TrainingDiverged, predict_proba, train_network
from medbench.nn.whitening import ZCA


def _dsa(channels: int) -> Augment:
    return dsa(channels)


# Evaluation-time augmentation by name: a factory from the number of channels to an augment.
EVAL_AUGMENTS: dict[str, Callable[[int], Augment | None]] = {"none": lambda channels: None, "dsa": _dsa}

# How a network trains on a set with soft labels (rows of class probabilities), by name.
SOFT_LABEL_LOSSES: dict[str, str] = {
    "soft_ce": "cross-entropy with the set's label distributions, −Σ p log softmax(z), temperature 1: "
               "DATM's evaluation (SoftCrossEntropy on the softmax of its label logits); equals KL(p‖q) "
               "up to a constant, so the same gradients",
}

# Settings added after cells were stored: they enter a protocol's identity only when changed from
# these defaults, so cells stored earlier keep their protocol_id and cell_id.
_LATER_FIELDS = {"soft_label_loss": "soft_ce", "precision": "fp32"}

# Forward-pass precisions by name (:attr:`Protocol.precision`).
PRECISIONS = ("fp32", "bf16")

# Metric-name prefix of a soft-label set's second evaluation, with hard labels (DD-Ranking's HLR).
HARD_LABELS = "hard_labels_"


@dataclass(frozen=True)
class Protocol:
    """How condensed sets are evaluated: a named protocol (:mod:`medbench.evaluation.named`) and
    any fields changed from it. The defaults are the ``dsa`` protocol (the DSA, DM and MTT papers'
    evaluation: 1,000 epochs with DSA augmentation); ``name`` says which protocol the settings
    started from and is not part of the identity (:meth:`identity`): equal settings are one protocol.

    Where medbench differs from the papers' ``evaluate_synset`` (DatasetCondensation and
    mtt-distillation ``utils.py``): they train ``epochs + 1`` epochs and divide the lr by 10 after
    epoch ``epochs // 2 + 1``; medbench trains ``epochs`` and divides at ``epochs // 2``. They
    evaluate 20 (DC, DSA, DM) or 5 (MTT) networks on one distilled set; medbench trains
    ``eval_models`` networks per seed and replicates over seeds.
    """

    name: str = "dsa"
    model: str = "convnet"
    width: int = 128
    depth: int | None = None  # None: by resolution (3 for 28–32 px, 4 for 64, 5 for 112–128)
    norm: str = "instance"
    epochs: int = 1000
    full_epochs: int = 100  # the whole training set: MedMNIST v2's own training budget
    lr: float = 0.01
    use_learned_lr: bool = True  # a method's learned lr (MTT) replaces ``lr`` when present
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    eval_models: int = 5
    augment: str = "dsa"  # "dsa": DSA's augmentation (per-image draws) while training on the set; or "none"
    soft_label_loss: str = "soft_ce"  # sets with soft labels train with this loss (SOFT_LABEL_LOSSES)
    # Arithmetic of the networks' forward passes: "fp32", or "bf16" autocast (losses stay float32). It
    # changes the numbers, so it is part of the protocol's identity (reports/bf16 measures both).
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check(self.epochs >= 1 and self.full_epochs >= 1, "epochs must be at least 1")
        check(self.lr > 0 and math.isfinite(self.lr), f"lr must be a finite positive number, got {self.lr}")
        check(self.batch_size >= 1, "batch size must be at least 1")
        check(self.eval_models >= 1, "eval models must be at least 1")
        check(self.width >= 1 and (self.depth is None or self.depth >= 1), "width and depth must be ≥ 1")
        check(self.augment in EVAL_AUGMENTS,
              f"unknown eval augmentation {self.augment!r}; available: {', '.join(EVAL_AUGMENTS)}")
        check(self.soft_label_loss in SOFT_LABEL_LOSSES,
              f"unknown soft-label loss {self.soft_label_loss!r}; available: {', '.join(SOFT_LABEL_LOSSES)}")
        check(self.precision in PRECISIONS,
              f"unknown precision {self.precision!r}; available: {', '.join(PRECISIONS)}")

    def model_spec(self) -> ModelSpec:
        options = {"width": self.width, "depth": self.depth, "norm": self.norm}
        return ModelSpec(self.model, options if self.model == "convnet" else {})

    def identity(self) -> dict:
        """What makes two protocols the same: every setting plus the network's architecture version
        (so results of an older network never pool with newer ones), not the name."""
        out = {k: v for k, v in asdict(self).items()
               if k != "name" and not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}
        out["architecture"] = architecture(self.model)
        return out

    def record(self) -> dict:
        """The protocol as stored with every cell: its name, its settings and the architecture."""
        return {"name": self.name, **asdict(self), "architecture": architecture(self.model)}

    @classmethod
    def from_record(cls, record: dict) -> Protocol:
        """The protocol of a stored cell (the architecture entry is derived, not a setting; cells
        stored before named protocols get the name "unnamed")."""
        values = {k: v for k, v in record.items() if k != "architecture"}
        values.setdefault("name", "unnamed")
        return hparams.build(cls, values, context="stored protocol")


@dataclass(frozen=True)
class ModelScore:
    """The scores of one evaluation network."""

    index: int
    seed: int
    lr: float
    epochs: int
    val: dict[str, float]
    test: dict[str, float]
    train_seconds: float
    test_predicted: np.ndarray | None = None  # the class predicted for every test image (test bootstraps)


def model_seeds(seed: int, count: int) -> list[int]:
    """Independent, reproducible seeds for the K evaluation networks of one cell."""
    return [int(s) for s in np.random.SeedSequence([seed, seeds.EVAL_MODELS]).generate_state(count)]


def _training_seed(model_seed: int) -> int:
    """The global-RNG seed while a network trains: its own stream, not a replay of its initialisation's."""
    return int(np.random.SeedSequence([model_seed, seeds.EVAL_TRAINING]).generate_state(1)[0])


@contextlib.contextmanager
def _global_rng(device: torch.device, seed: int) -> Iterator[None]:
    """torch's global RNG seeded for the block and restored afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def train_models(
    images: torch.Tensor,
    labels: torch.Tensor,
    seeds: list[int],
    *,
    spec: ModelSpec,
    channels: int,
    num_classes: int,
    size: int,
    epochs: int,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 256,
    augment: Augment | None = None,
    batching: str = "auto",
    options: EvalOptions = DEFAULT_OPTIONS,
    on_epoch: Callable[[int, int], None] | None = None,
) -> TrainedModels:
    """Train one network per seed on (images, labels): one at a time or together (``batching``,
    see :func:`medbench.nn.batched.choose_batching`); the same numbers either way.

    Model ``k`` is built with ``torch.manual_seed(seeds[k])`` (global RNG forked) and trained with
    ``torch.Generator().manual_seed(seeds[k])`` for its data order and augmentation.
    """
    device = images.device
    mode = choose_batching(batching, device=device, model=spec, models=len(seeds),
                           images_per_step=min(images.shape[0], batch_size))
    models = []
    for model_seed in seeds:
        with _global_rng(device, model_seed):
            models.append(spec.build(channels, num_classes, size).to(device))
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    total = epochs * len(seeds)
    images = options.memory_format(images)
    with options.backend_flags():
        if mode == "sequential":
            seconds = []
            for k, (model, generator) in enumerate(zip(models, generators, strict=True)):
                if options.channels_last:
                    model.to(memory_format=torch.channels_last)
                net = options.compiled(model)
                start = time.perf_counter()
                # Dropout (AlexNet) draws from the global RNG: seeded per network, so a result does not
                # depend on what ran earlier in the process.
                with _global_rng(device, _training_seed(seeds[k])):
                    try:
                        train_network(
                            net, images, labels, epochs=epochs, lr=lr, generator=generator, momentum=momentum,
                            weight_decay=weight_decay, batch_size=batch_size, augment=augment, amp=options.amp,
                            on_epoch=(lambda e, k=k: on_epoch(k * epochs + e, total)) if on_epoch else None,
                        )
                    except TrainingDiverged as exc:
                        raise TrainingDiverged(exc.epoch, model=k) from None
                seconds.append(time.perf_counter() - start)
            return TrainedModels(mode, models, None, seconds, options)
        start = time.perf_counter()
        ensemble = build_ensemble(mode, models, options)
        with _global_rng(device, _training_seed(seeds[0])):
            train_stacked(
                ensemble, images, labels, epochs=epochs, lr=lr, generators=generators, momentum=momentum,
                weight_decay=weight_decay, batch_size=batch_size, augment=augment, options=options,
                on_epoch=(lambda e: on_epoch(e * len(seeds), total)) if on_epoch else None,
            )
        # One computation: each model is charged an equal share of the wall-clock time.
        share = (time.perf_counter() - start) / len(seeds)
        return TrainedModels(mode, models, ensemble, [share] * len(seeds), options)


@dataclass
class TrainedModels:
    """K trained networks: separate modules (sequential) or one stacked ensemble (batched)."""

    mode: str
    models: list[torch.nn.Module]  # as built; trained in place only on the sequential path
    ensemble: Ensemble | None
    seconds: list[float]
    options: EvalOptions = DEFAULT_OPTIONS

    def predict_proba(self, images: torch.Tensor,
                      prepare: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """(K, N, classes) probabilities; the batched path runs all K models on each batch."""
        with self.options.autocast(images.device):
            if self.ensemble is None:
                return torch.stack([predict_proba(m, images, prepare=prepare) for m in self.models])
        return predict_proba_stacked(self.ensemble, images, prepare=prepare, options=self.options)


def evaluate(
    condensed: CondensedSet,
    splits: Splits,
    protocol: Protocol,
    *,
    seed: int,
    full: bool = False,
    on_epoch: Callable[[int, int], None] | None = None,
    batching: str = "auto",
    options: EvalOptions | None = None,
) -> list[ModelScore]:
    """Train ``protocol.eval_models`` networks on ``condensed`` and score them on val, then test.

    A set with soft labels trains with ``protocol.soft_label_loss`` and is evaluated a second time
    with its hard labels (each image's class, :meth:`CondensedSet.hard_labels`), same networks' seeds: those scores are
    stored as ``hard_labels_<metric>`` beside the soft-label ones (DD-Ranking's hard-label recovery).

    ``batching`` (auto|sequential|vmap|grouped) and ``options`` (GPU speed flags) choose how the
    networks are trained, not what they learn: they are deliberately not part of ``Protocol``, so
    stored cells keep their ``protocol_id`` whichever is used.
    """
    scores = _evaluate(condensed, splits, protocol, seed=seed, full=full, on_epoch=on_epoch, batching=batching,
                       options=options)
    if not condensed.labels.is_floating_point():
        return scores
    hard = dataclasses.replace(condensed, labels=condensed.hard_labels())
    second = _evaluate(hard, splits, protocol, seed=seed, full=full, on_epoch=on_epoch, batching=batching,
                       options=options)
    return [dataclasses.replace(s, val={**s.val, **{HARD_LABELS + k: v for k, v in h.val.items()}},
                                test={**s.test, **{HARD_LABELS + k: v for k, v in h.test.items()}})
            for s, h in zip(scores, second, strict=True)]


def _evaluate(condensed: CondensedSet, splits: Splits, protocol: Protocol, *, seed: int, full: bool,
              on_epoch: Callable[[int, int], None] | None, batching: str,
              options: EvalOptions | None) -> list[ModelScore]:
    device = splits.device
    images, labels = (t.to(device) for t in condensed.training_set())
    lr = condensed.lr if (protocol.use_learned_lr and condensed.lr) else protocol.lr
    epochs = protocol.full_epochs if full else protocol.epochs
    seeds = model_seeds(seed, protocol.eval_models)
    options = options or DEFAULT_OPTIONS
    if protocol.precision == "bf16":
        options = dataclasses.replace(options, amp=True)
    try:
        trained = train_models(
            images, labels, seeds, spec=protocol.model_spec(), channels=splits.channels,
            num_classes=splits.num_classes, size=splits.size, epochs=epochs, lr=lr, momentum=protocol.momentum,
            weight_decay=protocol.weight_decay, batch_size=protocol.batch_size,
            augment=EVAL_AUGMENTS[protocol.augment](splits.channels), batching=batching,
            options=options, on_epoch=on_epoch,
        )
    except TrainingDiverged as exc:
        raise CellFailed(f"evaluation network {exc.model} (seed {seeds[exc.model]}) diverged: non-finite training "
                         f"loss by epoch {exc.epoch} ({protocol.model}, lr {lr:g})") from None

    # A set distilled in ZCA-whitened space (MTT with zca) carries its transform: real images
    # must be scored in that same space.
    zca = ZCA.from_extras(condensed.extras)
    prepare = splits.normalize if zca is None else (lambda x: zca(splits.normalize(x)))

    predicted: dict[str, list[np.ndarray]] = {}

    def score(split_name: str) -> list[dict[str, float]]:
        split = getattr(splits, split_name)
        truth = split.labels.cpu().numpy()
        probs = list(trained.predict_proba(split.images, prepare=prepare))
        predicted[split_name] = [p.argmax(1).numpy().astype(np.int16) for p in probs]
        for k, p in enumerate(probs):
            if not torch.isfinite(p).all():
                # A network that blew up (too high an lr for this architecture, say) has no
                # meaningful score; scoring its argmax would report a constant guess as a result.
                raise CellFailed(f"evaluation network {k} (seed {seeds[k]}) diverged: non-finite outputs "
                                 f"({protocol.model}, lr {lr:g}, {epochs} epochs)")
        return [classification_metrics(truth, p.numpy()) for p in probs]

    val_scores = score("val")
    # The test split is read only here, after every network is trained and scored on val.
    test_scores = score("test")
    return [
        ModelScore(k, s, float(lr), epochs, v, t, secs, predicted["test"][k])
        for k, (s, v, t, secs) in enumerate(zip(seeds, val_scores, test_scores, trained.seconds, strict=True))
    ]
