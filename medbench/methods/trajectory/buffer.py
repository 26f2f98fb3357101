"""Expert trajectories for trajectory matching (MTT): train once, store, reuse everywhere.

An *expert buffer* is ``T`` networks trained on the real training split with plain SGD, each
stored as its flat parameter vector after every epoch (``E + 1`` snapshots, the initial one
included). Building it costs far more than one distillation run, so it is a content-addressed
cache: the directory name is a hash of everything that determines the trajectories (a
fingerprint of the training data, the architecture, the optimiser settings, augmentation, ZCA,
``T``, ``E``, seed and storage dtype), and every IPC, seed, run and method that needs the same
trajectories finds it there.

(One of the two modules over 500 lines: the buffer's on-disk format, its training, its cache key and
its resume after an interruption are one unit; split apart, a change to one would silently break
another's assumptions about the files.)

Layout of ``<root>/<key>/``::

    manifest.json            config, data fingerprint, per-expert file sha256/size/accuracies
    expert_000.safetensors   one tensor "trajectory" (E+1, P), float32 or bfloat16
    zca.safetensors          the ZCA transform the experts were trained with (only with zca)

Files are written atomically (temporary file + ``os.replace``) and the manifest after every
expert (every group of experts trained together, see :func:`build_buffer`'s ``batching``), so an
interrupted build resumes at the next missing expert; a file whose size, header or
sha256 disagrees with the manifest is reported in one line and rebuilt. Files are read with
safetensors (no pickle).

Who builds it: ``build_buffer`` accepts either the full :class:`Splits` (the ``medbench experts``
command: the experts' final test accuracy is recorded, the "full data" reference of the
protocol) or a :class:`DistillTask` (an MTT run that finds no buffer: train/val only, test
accuracy stays unknown). The key ignores the test split, so both produce the same directory and
a later call with the full splits only fills in the missing test accuracies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn
from torch.func import functional_call

from medbench.core import seeds
from medbench.core.devices import to_device
from medbench.core.errors import MedbenchError
from medbench.core.files import atomic_write_bytes, sha256_file
from medbench.core.hparams import check
from medbench.core.seeds import derived_seed
from medbench.data.splits import Split, Splits, TrainGeometry
from medbench.nn.augment import AugmentConfig, dsa
from medbench.nn.batched import build_ensemble, choose_batching, train_stacked
from medbench.nn.models import ModelSpec
from medbench.nn.training import accuracy, backward_in_blocks
from medbench.nn.whitening import ZCA

FORMAT_VERSION = 1
EXPERTS_DIRNAME = "medbench_experts"
MANIFEST = "manifest.json"
ZCA_FILE = "zca.safetensors"

Log = Callable[[str], None]
Progress = Callable[[int, int], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def default_root(data_root: Path | str) -> Path:
    """Where buffers live for a data root: ``<data_root>/medbench_experts``."""
    return Path(data_root).expanduser() / EXPERTS_DIRNAME


def resolve_root(root: Path | str | None = None) -> Path:
    """The cache root: ``root`` if given, else ``$MEDBENCH_EXPERTS``, else the default data root's
    ``medbench_experts``. The CLI and MTT both resolve it here, so by default they meet."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get("MEDBENCH_EXPERTS")
    if env:
        return Path(env).expanduser()
    from medbench.data.registry import DEFAULT_DATA_ROOT

    return default_root(DEFAULT_DATA_ROOT)


@dataclass(frozen=True)
class ExpertConfig:
    """How experts are trained. Defaults are those of the MTT reference ``buffer.py``."""

    num_experts: int = 100
    epochs: int = 50
    lr: float = 0.01  # plain SGD: no momentum, no weight decay, no schedule (reference)
    batch_size: int = 256
    augment: bool = True  # the siamese (DSA) augmentation's fresh draw on every batch
    zca: bool = False
    zca_eps: float = 0.1
    dtype: Literal["float32", "bfloat16"] = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.num_experts >= 1, f"num_experts must be at least 1, got {self.num_experts}")
        check(self.epochs >= 1, f"expert epochs must be at least 1, got {self.epochs}")
        check(self.lr > 0 and math.isfinite(self.lr), f"expert lr must be positive, got {self.lr}")
        check(self.batch_size >= 1, f"expert batch size must be at least 1, got {self.batch_size}")
        check(self.zca_eps > 0, f"zca_eps must be positive, got {self.zca_eps}")
        check(self.dtype in ("float32", "bfloat16"), f"dtype must be float32 or bfloat16, got {self.dtype!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.dtype == "bfloat16" else torch.float32


# --- flat parameters -----------------------------------------------------------------------


class FlatParams:
    """A module's parameters as one flat vector: flatten, load back, or call the module on it.

    Trajectory matching works on flat vectors (distances, snapshots); ``functional_call`` runs
    the module with a vector's views as its parameters, so gradients flow to the vector.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        named = list(module.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.size = sum(self.numels)

    def flatten(self) -> torch.Tensor:
        """A new float32 vector (a copy, never a view of the live parameters)."""
        return torch.cat([p.detach().reshape(-1).float() for p in self.module.parameters()])

    @torch.no_grad()
    def load(self, flat: torch.Tensor) -> None:
        for p, chunk in zip(self.module.parameters(), flat.split(self.numels), strict=True):
            p.copy_(chunk.view_as(p))

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: c.view(s) for n, c, s in zip(self.names, flat.split(self.numels), self.shapes, strict=True)}

    def __call__(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, self.unflatten(flat), (x,))


def build_seeded(spec: ModelSpec, channels: int, num_classes: int, size: int, seed: int,
                 device: torch.device) -> nn.Module:
    """A model initialised from ``seed`` without touching the global RNG's stream."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return spec.build(channels, num_classes, size).to(device)


# --- the data the experts see --------------------------------------------------------------


@dataclass(frozen=True)
class _Data(TrainGeometry):
    """What ``build_buffer`` needs, from either ``Splits`` or a ``DistillTask``."""

    name: str
    train: Split
    val: Split
    test: Split | None
    num_classes: int
    normalize: Callable[[torch.Tensor], torch.Tensor]
    model: ModelSpec
    device: torch.device


def _as_data(data: Any, model: ModelSpec | None) -> _Data:
    if isinstance(data, Splits):
        return _Data(data.name, data.train, data.val, data.test, data.num_classes, data.normalize,
                     model or ModelSpec(), data.device)
    # A DistillTask (duck-typed to avoid an import cycle with medbench.distill.contract): no test split.
    return _Data("", data.train, data.val, None, data.num_classes, data.normalize,
                 model or data.model, data.device)


def data_fingerprint(train: Split, normalize: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Any]:
    """sha256 of the training images and labels plus the normalisation they go through.

    Content, not a dataset name, identifies the trajectories: a method that only holds a
    ``DistillTask`` (no name) and the CLI that holds the named ``Splits`` reach the same buffer.
    """
    h = hashlib.sha256()
    images = train.images
    for start in range(0, images.shape[0], 4096):
        h.update(images[start : start + 4096].cpu().contiguous().numpy().tobytes())
    h.update(train.labels.cpu().to(torch.int64).numpy().tobytes())
    channels = int(images.shape[1])
    probe = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, channels, 1, 2)
    affine = normalize(probe.to(images.device)).flatten().cpu().tolist()
    return {
        "sha256": h.hexdigest(),
        "n_train": int(images.shape[0]),
        "image_shape": list(images.shape[1:]),
        "normalize": [round(v, 6) for v in affine],
    }


def _augment_description(enabled: bool) -> Any:
    if not enabled:
        return None
    config = AugmentConfig()
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else repr(config)


def make_augment(enabled: bool, channels: int) -> Any:
    """The siamese (DSA) augmentation with its default configuration, or None."""
    return dsa(channels, enabled)


def buffer_key(data: _Data, config: ExpertConfig, fingerprint: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The cache key and the JSON description it hashes."""
    model = build_seeded(data.model, data.channels, data.num_classes, data.size, 0, torch.device("cpu"))
    description = {
        "format": FORMAT_VERSION,
        "data": fingerprint,
        "num_classes": data.num_classes,
        # The architecture as built (its repr lists every layer), so equivalent specs share a key.
        "model": {"name": data.model.name, "architecture": repr(model)},
        "config": dataclasses.asdict(config),
        "augment": _augment_description(config.augment),
    }
    blob = json.dumps(description, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20], description


# --- files ---------------------------------------------------------------------------------


def _expert_file(index: int) -> str:
    return f"expert_{index:03d}.safetensors"


def _header_shape(path: Path) -> list[int] | None:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return list(fh.get_slice("trajectory").get_shape())
    except (SafetensorError, OSError, KeyError, ValueError):
        return None


# --- the buffer ----------------------------------------------------------------------------


class ExpertBuffer:
    """A built buffer on disk: trajectories are read lazily, one expert (or two epochs) at a time."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise MedbenchError(f"{self.path}: not an expert buffer ({exc.__class__.__name__})") from None
        self.config = ExpertConfig(**self.manifest["config"])
        self.num_params = int(self.manifest["num_params"])
        missing = [i for i in range(self.config.num_experts) if str(i) not in self.manifest["experts"]]
        if missing:
            raise MedbenchError(f"{self.path}: incomplete expert buffer ({len(missing)} experts missing); "
                                "run build_buffer / medbench experts to finish it")

    @property
    def num_experts(self) -> int:
        return self.config.num_experts

    @property
    def num_epochs(self) -> int:
        """E: each trajectory holds E + 1 snapshots."""
        return self.config.epochs

    @property
    def bytes_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    def _accuracies(self, name: str) -> list[float]:
        return [float("nan") if e.get(name) is None else float(e[name])
                for e in self.manifest["experts"].values()]

    @property
    def test_accuracy(self) -> float:
        """Mean final-epoch test accuracy of the experts (NaN if built without the test split)."""
        values = self._accuracies("test_accuracy")
        return float(np.mean(values)) if values else float("nan")

    @property
    def val_accuracy(self) -> float:
        values = self._accuracies("val_accuracy")
        return float(np.mean(values)) if values else float("nan")

    @property
    def train_seconds(self) -> float:
        """Seconds spent training the experts (all of them, summed): a trajectory method's cost beyond distillation."""
        return float(sum(e.get("train_seconds", 0.0) for e in self.manifest["experts"].values()))

    def _file(self, index: int) -> Path:
        if not 0 <= index < self.num_experts:
            raise IndexError(f"expert {index} out of range 0..{self.num_experts - 1}")
        return self.path / _expert_file(index)

    def trajectory(self, index: int) -> torch.Tensor:
        """All E + 1 snapshots of expert ``index`` as float32 (E + 1, P)."""
        tensors = st_load(self._file(index).read_bytes())
        return tensors["trajectory"].float()

    def snapshots(self, index: int, epochs: Sequence[int]) -> torch.Tensor:
        """Only the requested epochs of one expert (len(epochs), P), read from the mapped file."""
        with safe_open(str(self._file(index)), framework="pt") as fh:
            part = fh.get_slice("trajectory")
            return torch.cat([part[e : e + 1] for e in epochs]).float()

    def zca(self) -> ZCA | None:
        if not self.config.zca:
            return None
        tensors = st_load((self.path / ZCA_FILE).read_bytes())
        return ZCA(tensors["mean"], tensors["matrix"])

    def summary(self) -> dict[str, Any]:
        """Plain facts for the CLI and for results."""
        return {
            "path": str(self.path),
            "key": self.manifest["key"],
            "dataset": self.manifest.get("dataset", ""),
            "num_experts": self.num_experts,
            "epochs": self.num_epochs,
            "num_params": self.num_params,
            "dtype": self.config.dtype,
            "bytes_on_disk": self.bytes_on_disk,
            "val_accuracy": self.val_accuracy,
            "test_accuracy": self.test_accuracy,
            "train_seconds": self.train_seconds,
        }


def _train_expert(data: _Data, config: ExpertConfig, index: int, zca: ZCA | None, augment: Any,
                  on_epoch: Callable[[int], None]) -> tuple[torch.Tensor, nn.Module]:
    """One expert: the (E + 1, P) trajectory on the CPU and the trained network."""
    seed = derived_seed(config.seed, index, seeds.EXPERT)
    model = build_seeded(data.model, data.channels, data.num_classes, data.size, seed, data.device)
    model.train()
    flat = FlatParams(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.0, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    # Each snapshot is a fresh tensor (torch.cat copies), moved to the CPU: the reference kept
    # ``p.detach().cpu()``, which on a CPU run aliases the live parameters, so every stored epoch
    # ended up equal to the last one.
    snapshots = [flat.flatten().cpu()]
    n = len(data.train)
    for epoch in range(config.epochs):
        order = to_device(torch.randperm(n, generator=generator), data.train.images.device)
        for start in range(0, n, config.batch_size):
            batch = order[start : start + config.batch_size]
            x = data.normalize(data.train.images[batch])
            if zca is not None:
                x = zca(x)
            if augment is not None:
                x = augment(x, generator)
            optimizer.zero_grad(set_to_none=True)
            backward_in_blocks(model, x, data.train.labels[batch])  # cache-sized blocks on a CPU
            optimizer.step()
        snapshots.append(flat.flatten().cpu())
        on_epoch(epoch + 1)
    return torch.stack(snapshots), model


# Experts trained together (``batching`` vmap or grouped) per group of at most this many: one
# group's snapshots are held in memory until its files are written (the resume granularity).
EXPERT_GROUP = 10


def _train_together(data: _Data, config: ExpertConfig, indices: Sequence[int], zca: ZCA | None, augment: Any,
                    on_epoch: Callable[[int], None], mode: str) -> list[tuple[torch.Tensor, nn.Module]]:
    """:func:`_train_expert` for several experts as one computation (:mod:`medbench.nn.batched`):
    each keeps its seed's initialisation, data order and augmentation draws; the trajectories equal
    one-at-a-time training up to the batched kernels' rounding (tests/test_mtt_buffer.py)."""
    seeds_ = [derived_seed(config.seed, i, seeds.EXPERT) for i in indices]
    models = [build_seeded(data.model, data.channels, data.num_classes, data.size, s, data.device) for s in seeds_]
    flats = [FlatParams(m) for m in models]
    snapshots = [[f.flatten().cpu()] for f in flats]
    ensemble = build_ensemble(mode, models)

    def epoch_done(e: int) -> None:
        ensemble.unstack(models)
        for flat, trajectory in zip(flats, snapshots, strict=True):
            trajectory.append(flat.flatten().cpu())
        on_epoch(e)

    train_stacked(ensemble, data.train.images, data.train.labels, epochs=config.epochs, lr=config.lr,
                  generators=[torch.Generator().manual_seed(s) for s in seeds_], momentum=0.0, weight_decay=0.0,
                  batch_size=config.batch_size, augment=augment, on_epoch=epoch_done, prepare=_prepare(data, zca),
                  schedule=False)
    return [(torch.stack(t), m) for t, m in zip(snapshots, models, strict=True)]


def _prepare(data: _Data, zca: ZCA | None) -> Callable[[torch.Tensor], torch.Tensor]:
    if zca is None:
        return data.normalize
    return lambda x: zca(data.normalize(x))


def build_buffer(
    data: Any,
    config: ExpertConfig | None = None,
    root: Path | str | None = None,
    *,
    model: ModelSpec | None = None,
    progress: Progress | None = None,
    log: Log | None = _stderr,
    verify: bool = False,
    batching: str = "auto",
) -> ExpertBuffer:
    """Build (or finish, or just open) the expert buffer for ``data`` under ``root``.

    ``data`` is the full :class:`Splits` (records the experts' test accuracy) or a
    ``DistillTask`` (train/val only); ``root`` None: see :func:`resolve_root`. ``model``
    defaults to ``ModelSpec()`` for splits and to the task's model for a task. Idempotent: when
    every expert file checks out the call only reads the manifest. ``verify=True`` re-hashes
    every file even when its size and mtime are unchanged. ``progress(done, total)`` counts
    expert epochs; ``log`` gets one line per event (None: silent). ``batching``: train the experts
    one at a time or up to :data:`EXPERT_GROUP` together (:func:`medbench.nn.batched.choose_batching`;
    ``auto`` follows its measured rule: together only on a GPU at small steps, so at the experts'
    256 images per step one at a time); speed only, not part of the buffer's key.
    """
    config = config or ExpertConfig()
    say = log or (lambda _m: None)
    d = _as_data(data, model)
    root = resolve_root(root)
    fingerprint = data_fingerprint(d.train, d.normalize)
    key, description = buffer_key(d, config, fingerprint)
    path = root / key
    path.mkdir(parents=True, exist_ok=True)
    manifest_path = path / MANIFEST

    probe = build_seeded(d.model, d.channels, d.num_classes, d.size, 0, torch.device("cpu"))
    num_params = FlatParams(probe).size
    shape = [config.epochs + 1, num_params]

    manifest: dict[str, Any] = {}
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("description") != description:
                raise ValueError("description differs")
        except ValueError as exc:
            say(f"expert buffer {path}: manifest unreadable or mismatched ({exc}); rebuilding it")
            manifest = {}
    manifest.update(key=key, description=description, config=dataclasses.asdict(config),
                    num_params=num_params, shape=shape)
    if d.name:
        manifest["dataset"] = d.name
    experts: dict[str, Any] = manifest.setdefault("experts", {})

    def save_manifest() -> None:
        payload = json.dumps(manifest, indent=1, sort_keys=True).encode()
        if not (manifest_path.is_file() and manifest_path.read_bytes() == payload):
            atomic_write_bytes(manifest_path, payload)

    # ZCA first: the experts are trained on whitened images and distillation must use the same one.
    zca: ZCA | None = None
    if config.zca:
        zca_path = path / ZCA_FILE
        recorded = manifest.get("zca_sha256")
        if zca_path.is_file() and recorded and sha256_file(zca_path) == recorded:
            t = st_load(zca_path.read_bytes())
            zca = ZCA(t["mean"], t["matrix"])
        else:
            zca = ZCA.fit(lambda a, b: d.normalize(d.train.images[a:b]), len(d.train), config.zca_eps)
            payload = st_save({"mean": zca.mean.contiguous(), "matrix": zca.matrix.contiguous()})
            atomic_write_bytes(zca_path, payload)
            manifest["zca_sha256"] = hashlib.sha256(payload).hexdigest()
            experts.clear()  # trained against another transform: not trustworthy
            save_manifest()

    def valid(index: int) -> bool:
        file = path / _expert_file(index)
        entry = experts.get(str(index))
        if not file.is_file():
            if entry is not None:
                say(f"expert buffer {path.name}: expert {index} file missing; rebuilding it")
            return False
        stat = file.stat()
        if (entry is not None and not verify and entry.get("bytes") == stat.st_size
                and entry.get("mtime_ns") == stat.st_mtime_ns):
            return True
        problem = None
        if _header_shape(file) != shape:
            problem = "unreadable or wrong shape"
        elif entry is not None and sha256_file(file) != entry.get("sha256"):
            problem = "sha256 mismatch"
        if problem:
            say(f"expert buffer {path.name}: expert {index} {problem}; rebuilding it")
            return False
        if entry is None:  # written atomically by an interrupted run that lost its manifest
            entry = experts[str(index)] = {"file": file.name, "sha256": sha256_file(file)}
        entry.update(bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)
        return True

    status = [valid(i) for i in range(config.num_experts)]
    todo = [i for i, ok in enumerate(status) if not ok]
    for i in todo:
        experts.pop(str(i), None)
    total = config.num_experts * config.epochs
    done = (config.num_experts - len(todo)) * config.epochs
    if progress:
        progress(done, total)
    if todo:
        say(f"expert buffer {path}: training {len(todo)} of {config.num_experts} experts "
            f"({config.epochs} epochs each)")
    augment = make_augment(config.augment, d.channels) if todo else None
    prepare = _prepare(d, zca)

    def _save_expert(i: int, trajectory: torch.Tensor, net: nn.Module, seconds: float) -> None:
        nonlocal done
        done += config.epochs
        payload = st_save({"trajectory": trajectory.to(config.torch_dtype).contiguous()},
                          metadata={"key": key, "index": str(i)})
        file = path / _expert_file(i)
        atomic_write_bytes(file, payload)
        stat = file.stat()
        experts[str(i)] = {
            "file": file.name,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "bytes": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "train_seconds": round(seconds, 3),
            "val_accuracy": accuracy(net, d.val.images, d.val.labels, prepare=prepare),
            "test_accuracy": (accuracy(net, d.test.images, d.test.labels, prepare=prepare)
                              if d.test is not None else None),
        }
        save_manifest()

    mode = choose_batching(batching, device=torch.device(d.device), model=d.model, models=min(len(todo), EXPERT_GROUP),
                           images_per_step=config.batch_size) if todo else "sequential"
    size = 1 if mode == "sequential" else EXPERT_GROUP
    for group in [todo[k : k + size] for k in range(0, len(todo), size)]:
        start = time.perf_counter()

        def on_epoch(e: int, base: int = done, n: int = len(group)) -> None:
            if progress:
                progress(base + n * e, total)

        if mode == "sequential":
            trained = [_train_expert(d, config, group[0], zca, augment, on_epoch)]
        else:
            trained = _train_together(d, config, group, zca, augment, on_epoch, mode)
        seconds = (time.perf_counter() - start) / len(group)  # one computation: an equal share each
        for i, (trajectory, net) in zip(group, trained, strict=True):
            _save_expert(i, trajectory, net, seconds)

    # A buffer first built from a task lacks test accuracies: fill them in from the final epoch.
    if d.test is not None and any(e.get("test_accuracy") is None for e in experts.values()):
        net = build_seeded(d.model, d.channels, d.num_classes, d.size, 0, d.device)
        flat = FlatParams(net)
        buffer = ExpertBuffer.__new__(ExpertBuffer)
        buffer.path, buffer.config, buffer.num_params, buffer.manifest = path, config, num_params, manifest
        for index, entry in experts.items():
            if entry.get("test_accuracy") is None:
                flat.load(buffer.snapshots(int(index), [config.epochs])[0].to(d.device))
                entry["test_accuracy"] = accuracy(net, d.test.images, d.test.labels, prepare=prepare)
        say(f"expert buffer {path.name}: recorded the experts' test accuracy")
    save_manifest()
    return ExpertBuffer(path)
