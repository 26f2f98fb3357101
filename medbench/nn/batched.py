"""K networks trained together, as one computation: a cell's K evaluation networks (issue 7) and
MTT's expert buffer (issue 26).

Evaluating a condensed set trains K small networks on a few dozen images each; one such
network is launch-bound on a GPU (≈ 290 SGD steps/s on an H100 whatever the batch), so the K
networks are trained side by side instead:

* ``vmap``: the K models' parameters stacked (``torch.func.stack_module_state``) and one
  ``functional_call`` vmapped over them. Works for any model.
* ``grouped``: K ConvNets fused into one network whose convolutions have ``groups = K``
  (model ``k`` owns channel block ``k``), per-channel norms (instance/batch norm are
  per-channel, so K·W channels normalise exactly as K separate nets) and a per-model linear
  layer as one ``einsum``. ConvNet only.

Either way every model keeps what makes it *its own run*: its initialisation (built from its
seed exactly as the sequential path builds it), its data order (its own ``torch.Generator``
permutation), its augmentation draws (from that generator, in the same order) and SGD with
momentum and weight decay on its own parameters. The loss is the *sum* of the per-model mean
losses, so each model's gradient is exactly its own loss's gradient (the parameter sets are
disjoint), and ``torch.optim.SGD``'s update is element-wise, so one optimizer over the stacked
tensors performs the K separate updates. Results equal K sequential runs up to floating-point
rounding of the batched kernels (see ``tests/test_batched_eval.py``).

Which one runs is an execution choice, never a result: see :func:`choose_batching`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from medbench.core.devices import to_device
from medbench.core.errors import MedbenchError
from medbench.nn.augment import Params, SiameseAugment
from medbench.nn.models import ModelSpec
from medbench.nn.models.convnet import ConvNet
from medbench.nn.training import Augment, TrainingDiverged, apply_schedule, divergence_check_due

BATCHINGS = ("auto", "sequential", "vmap", "grouped")

# The auto rule's threshold, from H100 measurements given to this project (one ConvNet-128
# network ≈ 290 steps/s, launch-bound). Speed-up over sequential at 8 / 80 / 256 images per
# step: vmap 5.4× / 2.5× / 0.8×, grouped 7.8× / 3.3× / 1.1×. Grouped wins clearly up to ~100
# images per step and is a wash at 256, where the GPU is no longer idle between launches.
# An H200 here agreed at 8 and 80 images per step (reports/bench); 256 was not re-measured.
SMALL_STEP_IMAGES = 128


def choose_batching(requested: str, *, device: torch.device, model: ModelSpec, models: int,
                    images_per_step: int) -> str:
    """The trainer to use for ``requested`` (auto|sequential|vmap|grouped).

    ``auto``:
      * CPU → ``sequential``. On a 2-core CPU vmap ran at 0.3–0.4× and grouped at 0.6× of one
        network at a time: a CPU is not launch-bound and batched convolutions only add work.
      * CUDA, K ≥ 2, a ConvNet and ≤ ``SMALL_STEP_IMAGES`` images per SGD step → ``grouped``
        (K = 10 on an H200, ``reports/bench``: 5.1–6.5× at 8 images per step, 3.1–4.0× at 80;
        2.4–3.3× at K = 5; 0.8× at K = 1, hence K ≥ 2).
      * otherwise → ``sequential`` (≥ 256 images per step, e.g. the full training set, is
        compute-bound: 0.8–1.1×; other architectures are not measured).
    """
    if requested not in BATCHINGS:
        raise MedbenchError(f"unknown eval batching {requested!r}; choose {', '.join(BATCHINGS)}")
    if requested == "grouped" and model.name != "convnet":
        raise MedbenchError(f"eval batching 'grouped' needs the convnet model, not {model.name!r}; use vmap")
    if requested != "auto":
        return requested
    if device.type == "cuda" and models >= 2 and model.name == "convnet" and images_per_step <= SMALL_STEP_IMAGES:
        return "grouped"
    return "sequential"


@dataclass(frozen=True)
class EvalOptions:
    """GPU speed options for evaluation training. All off by default, as measured on an H200
    (``reports/bench/gpu-2026-11-23.md``, ConvNet width 128, K = 10): bf16 autocast, channels-last
    and cuDNN benchmark never paid (0.6–1.07×); torch.compile and CUDA graphs (compile's
    reduce-overhead mode) paid 1.6–1.7× on the grouped trainer at 80 images per step, but only
    after a 3–8 s compilation per process and shape, which one grid cell's evaluation (1–7 s on
    that GPU) does not earn back. They run on the CPU too, which is how the tests exercise them."""

    amp: bool = False  # bf16 autocast in forward passes (the loss stays float32)
    channels_last: bool = False  # NHWC memory format for models and inputs
    compile: str | None = None  # a torch.compile backend ("inductor"), or None
    compile_mode: str | None = None  # torch.compile mode; "reduce-overhead" also records and replays CUDA graphs
    cudnn_benchmark: bool = False  # let cuDNN pick convolution algorithms per shape

    def compiled(self, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """``fn`` through torch.compile when ``compile`` names a backend, else unchanged."""
        if not self.compile:
            return fn
        return torch.compile(fn, backend=self.compile, mode=self.compile_mode)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    @contextlib.contextmanager
    def backend_flags(self) -> Iterator[None]:
        """cuDNN benchmark for the duration only (a process-wide flag: restored afterwards)."""
        previous = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = self.cudnn_benchmark or previous
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = previous

    def memory_format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x


DEFAULT_OPTIONS = EvalOptions()

# ``medbench run --eval-compile``: the launch-overhead cuts a user may turn on for a grid. Off by
# default: each pays a 3–8 s compilation per process and shape before it saves anything.
COMPILE_MODES = {
    "off": DEFAULT_OPTIONS,
    "inductor": EvalOptions(compile="inductor"),
    "cuda-graphs": EvalOptions(compile="inductor", compile_mode="reduce-overhead"),
}


def compile_options(name: str) -> EvalOptions:
    """The :class:`EvalOptions` of a ``--eval-compile`` value."""
    if name not in COMPILE_MODES:
        raise MedbenchError(f"unknown eval compile mode {name!r}; choose {', '.join(COMPILE_MODES)}")
    return COMPILE_MODES[name]


# --- stacked models ---------------------------------------------------------------------------


class Ensemble:
    """K models behind one call: ``forward`` maps (K, B, ...) inputs to (K, B, classes)."""

    k: int

    def parameters(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """The same (B, ...) inputs through all K models: (K, B, classes)."""
        return self.forward(x.unsqueeze(0).expand(self.k, *x.shape))

    def train(self, mode: bool = True) -> None:
        raise NotImplementedError

    def unstack(self, models: Sequence[nn.Module]) -> None:
        """Copy the trained state back into K modules shaped like the originals."""
        raise NotImplementedError


class VmapEnsemble(Ensemble):
    """``stack_module_state`` + ``vmap(functional_call)``: any architecture."""

    def __init__(self, models: Sequence[nn.Module], options: EvalOptions = DEFAULT_OPTIONS) -> None:
        self.k = len(models)
        params, buffers = stack_module_state(list(models))
        self.params = {n: options.memory_format(p.detach()).requires_grad_(True) for n, p in params.items()}
        self.buffers = buffers
        self.base = copy.deepcopy(models[0]).to("meta")  # structure only: weights come from params

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (x,))

        # randomness="different": dropout (AlexNet) draws its own mask for every model, as K
        # separate networks would; without it vmap refuses random ops.
        self._call = options.compiled(vmap(one, randomness="different"))
        self._shared = options.compiled(vmap(one, in_dims=(0, 0, None), randomness="different"))

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(self.params, self.buffers, x)

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        return self._shared(self.params, self.buffers, x)

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)

    @torch.no_grad()
    def unstack(self, models: Sequence[nn.Module]) -> None:
        for k, model in enumerate(models):
            for name, t in [*model.named_parameters(), *model.named_buffers()]:
                source = self.params.get(name, self.buffers.get(name))
                if source is not None:
                    t.copy_(source[k])


class GroupedConvNet(nn.Module, Ensemble):
    """K ConvNets as one network with grouped convolutions (groups = K); see the module doc.

    Model ``k`` owns channels ``k·W … (k+1)·W − 1`` of every layer, so the fused parameters are
    the per-model ones concatenated along the output-channel dimension.
    """

    def __init__(self, models: Sequence[ConvNet], options: EvalOptions = DEFAULT_OPTIONS) -> None:
        nn.Module.__init__(self)
        self.k = k = len(models)
        layers: list[nn.Module] = []
        for parts in zip(*(m.features for m in models), strict=True):
            first = parts[0]
            if isinstance(first, nn.Conv2d):
                conv = nn.Conv2d(k * first.in_channels, k * first.out_channels, first.kernel_size,
                                 stride=first.stride, padding=first.padding, dilation=first.dilation,
                                 groups=k * first.groups, bias=first.bias is not None,
                                 padding_mode=first.padding_mode)
                layers.append(_cat_into(conv, parts, ("weight", "bias")))
            elif isinstance(first, nn.GroupNorm):
                norm = nn.GroupNorm(k * first.num_groups, k * first.num_channels, first.eps, first.affine)
                layers.append(_cat_into(norm, parts, ("weight", "bias")))
            elif isinstance(first, nn.BatchNorm2d):
                bn = nn.BatchNorm2d(k * first.num_features, first.eps, first.momentum, first.affine,
                                    first.track_running_stats)
                layers.append(_cat_into(bn, parts, ("weight", "bias", "running_mean", "running_var")))
                if first.num_batches_tracked is not None and bn.num_batches_tracked is not None:
                    bn.num_batches_tracked.copy_(first.num_batches_tracked)
            elif isinstance(first, nn.AvgPool2d) and MeanPool2x2.replaces(first):
                layers.append(MeanPool2x2())
            elif isinstance(first, nn.ReLU | nn.AvgPool2d | nn.MaxPool2d | nn.Identity):
                layers.append(copy.deepcopy(first))
            elif isinstance(first, nn.Flatten):
                continue  # the per-model flatten happens in forward
            else:
                raise MedbenchError(f"grouped evaluation cannot fuse a {type(first).__name__} layer")
        self.features = nn.Sequential(*layers)
        ref = models[0].classifier
        self.weight = nn.Parameter(torch.stack([m.classifier.weight.detach() for m in models]))
        self.bias = nn.Parameter(torch.stack([m.classifier.bias.detach() for m in models])) \
            if ref.bias is not None else None
        self.to(device=ref.weight.device)
        if options.channels_last:
            self.to(memory_format=torch.channels_last)
        self.options = options
        self._features = options.compiled(self.features)

    def parameters(self, recurse: bool = True) -> list[torch.Tensor]:  # type: ignore[override]
        return list(nn.Module.parameters(self, recurse))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, b = x.shape[:2]
        fused = x.transpose(0, 1).reshape(b, k * x.shape[2], *x.shape[3:])  # (B, K·C, H, W)
        features = self._features(self.options.memory_format(fused)).reshape(b, k, -1)
        logits = torch.einsum("bkd,kcd->kbc", features, self.weight)
        return logits + self.bias.unsqueeze(1) if self.bias is not None else logits

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x.unsqueeze(0).expand(self.k, *x.shape))

    def train(self, mode: bool = True) -> GroupedConvNet:  # type: ignore[override]
        return nn.Module.train(self, mode)

    @torch.no_grad()
    def unstack(self, models: Sequence[nn.Module]) -> None:
        fused = [m for m in self.features if _has_state(m)]
        for k, model in enumerate(models):
            assert isinstance(model, ConvNet)
            own = [m for m in model.features if _has_state(m)]
            for src, dst in zip(fused, own, strict=True):
                for name, t in [*dst.named_parameters(recurse=False), *dst.named_buffers(recurse=False)]:
                    whole = getattr(src, name)
                    t.copy_(whole if name == "num_batches_tracked" else whole.chunk(self.k)[k])
            model.classifier.weight.copy_(self.weight[k])
            if self.bias is not None:
                model.classifier.bias.copy_(self.bias[k])


class MeanPool2x2(nn.Module):
    """``nn.AvgPool2d(2)`` as a reshape and a mean. The same numbers (up to summation order), but
    its backward is a broadcast: on an H200 the CUDA backward of avg_pool2d on the fused
    (B, K·W, H, W) activations took as long as all the convolution backward passes together."""

    @staticmethod
    def replaces(pool: nn.AvgPool2d) -> bool:
        two = (2, (2, 2))
        return (pool.kernel_size in two and pool.stride in two and pool.padding in (0, (0, 0))
                and not pool.ceil_mode and pool.divisor_override is None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x[..., : h - h % 2, : w - w % 2]  # AvgPool2d(2) floors odd sides
        return x.reshape(b, c, h // 2, 2, w // 2, 2).mean((3, 5))


def _has_state(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d | nn.GroupNorm | nn.BatchNorm2d)


@torch.no_grad()
def _cat_into(target: nn.Module, parts: Sequence[nn.Module], names: Sequence[str]) -> nn.Module:
    for name in names:
        t = getattr(target, name)
        if t is not None:
            t.copy_(torch.cat([getattr(p, name) for p in parts]))
    return target


def build_ensemble(kind: str, models: Sequence[nn.Module], options: EvalOptions = DEFAULT_OPTIONS) -> Ensemble:
    """``vmap`` or ``grouped`` over ``models`` (already initialised, on their device)."""
    if kind == "vmap":
        return VmapEnsemble(models, options)
    if kind == "grouped":
        if not all(isinstance(m, ConvNet) for m in models):
            raise MedbenchError("eval batching 'grouped' needs ConvNet models; use vmap")
        return GroupedConvNet([m for m in models if isinstance(m, ConvNet)], options)
    raise MedbenchError(f"not a batched trainer: {kind!r}")


# --- training ---------------------------------------------------------------------------------


def per_model_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(K,) mean cross-entropy of each model, as ``training.loss_fn`` computes it for one."""
    k, b = logits.shape[:2]
    target = labels.flatten(0, 1) if labels.is_floating_point() else labels.flatten().long()
    return F.cross_entropy(logits.flatten(0, 1), target, reduction="none").view(k, b).mean(1)


def _cat_params(draws: Sequence[Params], device: torch.device, dtype: torch.dtype) -> Params:
    """The K draws as one set for K·B images, moved once (``apply``'s own move is then a no-op)."""
    values = {f.name: torch.cat([getattr(d, f.name) for d in draws]) for f in fields(Params) if f.name != "active"}
    return Params(**values, active=draws[0].active).to(device, dtype)


def augment_stacked(augment: Augment, x: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Model ``k``'s batch ``x[k]`` augmented with draws from ``generators[k]``, exactly the draws
    ``augment(x[k], generators[k])`` makes on the sequential path.

    For :class:`SiameseAugment` the K draws are made separately and applied in one call when they
    activate the same ops (per-image transforms, so this is the same computation); otherwise,
    and for other augmentations, model by model.
    """
    if isinstance(augment, SiameseAugment):
        draws = [augment.sample(x[k], g, n=x.shape[1]) for k, g in enumerate(generators)]
        if all(d.active == draws[0].active for d in draws):
            return augment.apply(x.flatten(0, 1), _cat_params(draws, x.device, x.dtype)).view_as(x)
        return torch.stack([augment.apply(x[k], d) for k, d in enumerate(draws)])
    return torch.stack([augment(x[k], g) for k, g in enumerate(generators)])


def train_stacked(
    ensemble: Ensemble,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    generators: Sequence[torch.Generator],
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 256,
    augment: Augment | None = None,
    on_epoch: Callable[[int], None] | None = None,
    options: EvalOptions = DEFAULT_OPTIONS,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    schedule: bool = True,
) -> Ensemble:
    """``training.train_network`` for K models at once: model ``k`` draws its data order and
    augmentation from ``generators[k]`` exactly as a sequential run with that generator would.
    ``prepare``: what a gathered batch of raw images becomes before augmentation (e.g. normalised);
    ``schedule=False``: a constant lr (MTT's experts) instead of the ÷10 at half the epochs."""
    if len(generators) != ensemble.k:
        raise ValueError(f"{len(generators)} generators for {ensemble.k} models")
    ensemble.train()
    optimizer = torch.optim.SGD(ensemble.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = images.shape[0]
    autocast = options.autocast(images.device)
    for epoch in range(epochs):
        if schedule:
            apply_schedule(optimizer, lr, epoch, epochs)
        orders = to_device(torch.stack([torch.randperm(n, generator=g) for g in generators]), images.device)
        for start in range(0, n, batch_size):
            batch = orders[:, start : start + batch_size]  # (K, B)
            x = images[batch]  # (K, B, C, H, W)
            if prepare is not None:
                x = prepare(x.flatten(0, 1)).view(*batch.shape, *x.shape[2:])
            if augment is not None:
                x = augment_stacked(augment, x, generators)
            with autocast:
                logits = ensemble.forward(x)
            losses = per_model_loss(logits.float(), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
        if divergence_check_due(epoch, epochs):
            bad = ~torch.isfinite(losses.detach())
            if bool(bad.any()):
                raise TrainingDiverged(epoch + 1, model=int(bad.nonzero()[0, 0]))
        if on_epoch is not None:
            on_epoch(epoch + 1)
    return ensemble


@torch.no_grad()
def predict_proba_stacked(
    ensemble: Ensemble,
    images: torch.Tensor,
    *,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 1024,
    options: EvalOptions = DEFAULT_OPTIONS,
) -> torch.Tensor:
    """(K, N, classes) softmax probabilities of all K models; each raw batch is prepared once and
    ``batch_size`` bounds K × images per forward pass (the activation memory of one network at
    ``batch_size``)."""
    ensemble.train(False)
    step = max(1, batch_size // ensemble.k)
    out = []
    autocast = options.autocast(images.device)
    for start in range(0, images.shape[0], step):
        x = images[start : start + step]
        x = prepare(x) if prepare else x
        with autocast:
            logits = ensemble.forward_shared(x)
        out.append(torch.softmax(logits.float(), dim=-1))
    ensemble.train(True)
    return torch.cat(out, dim=1).cpu()
