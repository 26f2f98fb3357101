"""The ``kernels`` section of ``medbench bench``: the steps distillation and evaluation spend their time
in, at the official ConvNet width (128, depth 3, instance norm, 8 classes, 28 px RGB; evaluation also
at width 32), each timed *before* issue 26 (one pass over the batch, ``avg_pool2d``, MTT's recompute
gradient) and *after* it (cache-sized blocks, :mod:`medbench.nn.blocking`; the depthwise pool,
:class:`~medbench.nn.models.convnet.AvgPool2x2`; MTT's ``implementation=auto``), the
two interleaved, the median of the repeats; evaluation steps also under bf16 autocast.

Beside each time: its FLOPs, counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and
matrix products, forward and backward), the FLOP/s achieved, and the fraction of this machine's
measured peak (a 2048 × 2048 matrix product in the same precision on the same threads), so every
figure says how close it is to the hardware; and the share of the step's CPU time spent in the
vendor's convolution and matrix kernels (``torch.profiler``).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from medbench.core.devices import default_memory_budget
from medbench.distill.budget import flop_counter
from medbench.nn import blocking
from medbench.nn.augment import dsa
from medbench.nn.models import ModelSpec
from medbench.nn.models.convnet import AvgPool2x2
from medbench.nn.training import backward_in_blocks, predict_proba

WIDTH, CLASSES, SIZE, CHANNELS = 128, 8, 28, 3
VENDOR_OPS = ("convolution", "addmm", "aten::mm", "bmm", "matmul")  # oneDNN / MKL kernels behind these


def peak_flops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` n × n matrix products in ``dtype`` on this process's threads."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


def _net(seed: int = 0, width: int | None = None) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ModelSpec("convnet", {"width": width or WIDTH, "depth": 3, "norm": "instance"}).build(CHANNELS, CLASSES,
                                                                                                  SIZE)


def _images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, CHANNELS, SIZE, SIZE, generator=g), torch.arange(n) % CLASSES


def _train_step(batch: int, width: int | None = None, augment: bool = False,
                precision: str = "fp32") -> Callable[[], Any]:
    net, (x, y) = _net(width=width), _images(batch)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    aug = dsa(CHANNELS, augment)
    forward = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext())

    def step() -> None:
        xb = aug(x, torch.Generator().manual_seed(1)) if aug is not None else x
        optimizer.zero_grad(set_to_none=True)
        backward_in_blocks(net, xb, y, forward)
        optimizer.step()

    return step


def _image_update(ipc: int, batch_real: int, lr: float, frozen: bool,
                  loss_of: Callable[[torch.nn.Module, Any, torch.Tensor], torch.Tensor]) -> Callable[[], Any]:
    """One update of 8 × ``ipc`` synthetic images on ``loss_of(net, task, images)`` (DM, DC)."""
    task = _task(ipc, batch_real)
    images = torch.randn(CLASSES * ipc, CHANNELS, SIZE, SIZE, requires_grad=True)
    optimizer = torch.optim.SGD([images], lr=lr, momentum=0.5)
    net = _net()
    net.requires_grad_(not frozen)

    def step() -> None:
        loss = loss_of(net, task, images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def _dm_iteration(ipc: int, batch_real: int = 256) -> Callable[[], Any]:
    from medbench.methods.dm import embedding_gap

    return _image_update(ipc, batch_real, 1.0, True, lambda net, task, images: embedding_gap(
        net, task, images, torch.Generator().manual_seed(1), batch_real=batch_real, augment=None)[0])


def _dc_outer(ipc: int, batch_real: int = 256) -> Callable[[], Any]:
    from medbench.methods.dc import DISTANCES, gradient_loss

    return _image_update(ipc, batch_real, 0.1, False, lambda net, task, images: gradient_loss(
        net, task, images, torch.Generator().manual_seed(1), batch_real=batch_real, distance=DISTANCES["ours"],
        augment=None))


def _scoring(n: int) -> Callable[[], Any]:
    net, (x, _) = _net(), _images(n)
    return lambda: predict_proba(net, x)


def _task(ipc: int, batch_real: int) -> Any:
    from medbench.data.splits import Split
    from medbench.distill.contract import DistillTask

    g = torch.Generator().manual_seed(0)
    n = CLASSES * batch_real
    train = Split(torch.randint(0, 256, (n, CHANNELS, SIZE, SIZE), generator=g, dtype=torch.uint8),
                  torch.arange(n) % CLASSES)
    return DistillTask(train=train, val=train, num_classes=CLASSES, ipc=ipc, seed=0, device=torch.device("cpu"),
                       normalize=lambda u: u.float() / 127.5 - 1,
                       model=ModelSpec("convnet", {"width": WIDTH, "depth": 3, "norm": "instance"}))


def _idm_iteration(ipc: int) -> Callable[[], Any]:
    from medbench.methods.idm import IDMParams, ModelQueue, iteration

    params = IDMParams()  # the official CIFAR-10 IPC-10 settings: 2 queued networks × 10 steps of 256
    task = _task(ipc, params.batch_real)
    queue = ModelQueue(task, params)
    images = torch.randn(CLASSES * ipc, CHANNELS, SIZE, SIZE, requires_grad=True)
    labels = torch.arange(CLASSES).repeat_interleave(ipc)
    optimizer = torch.optim.SGD([images], lr=params.lr_img, momentum=params.momentum_img)
    aug = dsa(CHANNELS)
    count = iter(range(1, 10**9))  # never a queue push (iteration 0): every call does the same work

    def step() -> None:
        iteration(task, params, queue, images, labels, optimizer, torch.Generator().manual_seed(1), next(count), aug)

    return step


def _matching_iteration(ipc: int, syn_steps: int, soft_labels: bool, implementation: str) -> Callable[[], Any]:
    """One trajectory-matching unroll and its gradient (MTT; DATM with learnable label logits), DSA on,
    every synthetic image in every step (batch_syn None, the official default)."""
    from medbench.methods.trajectory import FlatParams, build_seeded, plan_unroll
    from medbench.methods.trajectory.unroll import IMPLEMENTATIONS, choose_implementation, unrolled_bytes

    spec = ModelSpec("convnet", {"width": WIDTH, "depth": 3, "norm": "instance"})
    net = FlatParams(build_seeded(spec, CHANNELS, CLASSES, SIZE, 0, torch.device("cpu")))
    images, hard = _images(CLASSES * ipc)
    labels = torch.nn.functional.one_hot(hard, CLASSES).float() * 3 if soft_labels else hard
    start = net.flatten()
    target = start + 0.01 * torch.randn(start.shape, generator=torch.Generator().manual_seed(2))
    augment = dsa(CHANNELS)
    plan = plan_unroll(len(images), len(images), syn_steps, torch.Generator().manual_seed(1), augment, images)
    lr = torch.tensor(0.01)
    chosen, need = choose_implementation(
        implementation, default_memory_budget("cpu"),
        lambda: unrolled_bytes(net, images, labels, lr, start, plan, augment))
    match = IMPLEMENTATIONS[chosen]

    def step() -> None:
        match(net, images, labels, lr, start, target, plan, augment, learn_labels=soft_labels)

    step.implementation = chosen  # type: ignore[attr-defined]
    step.unrolled_bytes = need  # type: ignore[attr-defined]
    return step


@dataclass(frozen=True)
class Step:
    """A measured step: ``make(variant)`` builds it as the code ran before issue 26 ("before") and
    after it ("after", "bf16"); ``repeats`` caps the timed repeats of a long one (no warm-up then)."""

    name: str
    what: str
    make: Callable[[str], Callable[[], Any]]
    repeats: int | None = None
    bf16: bool = False  # also timed under bf16 autocast (after)


def _eval(batch: int, width: int) -> Callable[[str], Callable[[], Any]]:
    return lambda variant: _train_step(batch, width, augment=True, precision="bf16" if variant == "bf16" else "fp32")


def _same(make: Callable[[], Callable[[], Any]]) -> Callable[[str], Callable[[], Any]]:
    return lambda variant: make()  # the same code: blocks are switched on and off around it


def _trajectory(ipc: int, syn_steps: int, soft: bool) -> Callable[[str], Callable[[], Any]]:
    return lambda variant: _matching_iteration(ipc, syn_steps, soft, "tesla" if variant == "before" else "auto")


STEPS: tuple[Step, ...] = (
    *(Step(f"eval step, width {w}, IPC {ipc}", f"evaluation training step with DSA: forward, backward, SGD on "
           f"{CLASSES * ipc} images (IPC {ipc} × {CLASSES} classes)", _eval(CLASSES * ipc, w), bf16=True)
      for w in (32, 128) for ipc in (1, 10)),
    Step("train step, 256 images", "a full 256-image SGD step, no augmentation", _same(lambda: _train_step(256)),
         bf16=True),
    Step("expert step, 256 images", "an expert-training step (MTT's buffer): 256 real images with DSA",
         _same(lambda: _train_step(256, augment=True))),
    Step("DM iteration, IPC 10", "DM: 8 × 256 real images embedded, 80 synthetic, one update (no DSA)",
         _same(lambda: _dm_iteration(10))),
    Step("DC outer step, IPC 1", "DC: per-class gradients on 8 × 256 real and 8 synthetic images, one update "
         "(no DSA)", _same(lambda: _dc_outer(1))),
    Step("IDM iteration, IPC 10", "IDM (official defaults): 80 stored images expanded to 320, embedded with 8 × 256 "
         "real under a queued network, the class-aware term, then 2 queued networks × 10 SGD steps of 256",
         _same(lambda: _idm_iteration(10)), repeats=1),
    Step("MTT iteration, IPC 10", "MTT: a 20-step unroll on 80 images with DSA and its gradient to images and lr "
         "(before: recompute; after: auto)", _trajectory(10, 20, False), repeats=1),
    Step("DATM iteration, IPC 1", "DATM: an 80-step unroll on 8 images with DSA, soft labels learned (before: "
         "recompute; after: auto)", _trajectory(1, 80, True), repeats=1),
    Step("scoring, 2048 images", "no-grad forward and softmax over a split", _same(lambda: _scoring(2048))),
)


def _vendor_share(step: Callable[[], Any]) -> float:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    vendor = sum(e.self_cpu_time_total for e in events if any(op in e.key for op in VENDOR_OPS))
    return vendor / total if total else 0.0


def _count_flops(step: Callable[[], Any]) -> float:
    with flop_counter() as counter:
        step()
    return float(counter.get_total_flops())


def bench_kernels(s: Any, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """Every step of :data:`STEPS`, before and after (CPU only: blocks are CPU-only)."""
    if device.type != "cpu":
        return {"skipped": "cache-sized blocks apply on a CPU only"}
    peak = {"float32": peak_flops(torch.float32), "bfloat16": peak_flops(torch.bfloat16)}
    log(f"kernels: measured peak {peak['float32'] / 1e9:.1f} GFLOP/s fp32, {peak['bfloat16'] / 1e9:.1f} bf16 "
        f"({torch.get_num_threads()} threads)")
    rows = []
    saved = blocking.BLOCK_BYTES
    blocks = {"before": 2**62, "after": saved, "bf16": saved}

    def switch(variant: str) -> None:  # the code paths before issue 26: one pass, avg_pool2d
        blocking.BLOCK_BYTES = blocks[variant]
        AvgPool2x2.depthwise = variant != "before"

    try:
        for spec in STEPS:
            variants = ("before", "after", "bf16") if spec.bf16 else ("before", "after")
            steps, flops = {}, {}
            for variant in variants:
                switch(variant)
                steps[variant] = spec.make(variant)
                flops[variant] = _count_flops(steps[variant])  # also the warm-up of a long step
            times: dict[str, list[float]] = {v: [] for v in variants}
            repeats = min(s.repeats, spec.repeats or s.repeats)
            for _ in range(repeats):
                for variant in variants:
                    switch(variant)
                    if spec.repeats is None:
                        steps[variant]()  # warm-up for this variant's shapes
                    start = time.perf_counter()
                    steps[variant]()
                    times[variant].append(time.perf_counter() - start)
            switch("after")
            vendor = _vendor_share(steps["after"])
            median = {v: statistics.median(t) for v, t in times.items()}
            before, after = median["before"], median["after"]
            row = {"step": spec.name, "what": spec.what, "gflop": flops["after"] / 1e9,
                   "gflop_before": flops["before"] / 1e9, "before_s": before, "after_s": after,
                   "speedup": before / after, "gflops": flops["after"] / after / 1e9,
                   "of_peak": flops["after"] / after / peak["float32"], "vendor_share": vendor,
                   **({"bf16_s": median["bf16"], "bf16_speedup": after / median["bf16"],
                       "bf16_of_peak": flops["bf16"] / median["bf16"] / peak["bfloat16"]} if spec.bf16 else {}),
                   **({"implementation": steps["after"].implementation, "unrolled_gib":
                       (steps["after"].unrolled_bytes or 0) / 2**30} if hasattr(steps["after"], "implementation")
                      else {})}
            rows.append(row)
            log(f"kernels {spec.name:<28} {before:8.3f} s → {after:8.3f} s ({before / after:4.2f}×), "
                f"{row['gflops']:6.1f} GFLOP/s = {row['of_peak']:.0%} of fp32 peak, {vendor:.0%} in conv/matmul"
                + (f"; bf16 {median['bf16']:.3f} s" if spec.bf16 else ""))
    finally:
        switch("after")
    return {"peak_flops": peak, "threads": torch.get_num_threads(), "rows": rows}


def render_kernels(k: dict[str, Any]) -> list[str]:
    if "skipped" in k:
        return ["## Kernels", "", f"Skipped: {k['skipped']}.", ""]
    peak = k["peak_flops"]
    out = ["## Kernels: before and after issue 26, FLOP/s against the measured peak", "",
           f"ConvNet depth 3, instance norm, {CLASSES} classes, {SIZE} px RGB, width {WIDTH} unless named; "
           f"{k['threads']} thread(s). Before: one pass over each batch, `avg_pool2d`, MTT/DATM's recompute "
           "gradient; after: cache-sized blocks, the depthwise 2×2 pool, `implementation=auto`. Measured peak: "
           f"{peak['float32'] / 1e9:.1f} GFLOP/s fp32, {peak['bfloat16'] / 1e9:.1f} GFLOP/s bf16 (2048² matrix "
           "product). FLOPs: FlopCounterMode (convolutions and matrix products, forward and backward; of the after "
           "path). \"conv/matmul\": the after step's CPU time in those kernels (torch.profiler). bf16: the after "
           "path under bf16 autocast, against the bf16 peak.", "",
           "| step | GFLOP | before | after | speed-up | GFLOP/s (after) | of fp32 peak | conv/matmul | bf16 |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in k["rows"]:
        bf16 = (f"{r['bf16_s']:.3f} s ({r['bf16_speedup']:.2f}×, {r['bf16_of_peak']:.0%} of bf16 peak)"
                if "bf16_s" in r else "")
        out.append(f"| {r['step']} | {r['gflop']:.2f} | {r['before_s']:.3f} s | {r['after_s']:.3f} s | "
                   f"{r['speedup']:.2f}× | {r['gflops']:.1f} | {r['of_peak']:.0%} | {r['vendor_share']:.0%} | {bf16} |")
    out.append("")
    for r in k["rows"]:
        chosen = (f" Auto chose `{r['implementation']}` (unrolled graph counted at {r['unrolled_gib']:.1f} GiB; "
                  f"before {r['gflop_before']:.1f} GFLOP)." if "implementation" in r else "")
        out.append(f"- **{r['step']}**: {r['what']}.{chosen}")
    return [*out, ""]
