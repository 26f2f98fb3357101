"""The ``kernels`` section of ``medbench bench``: the steps distillation and evaluation spend their time
in, at the official ConvNet width (128, depth 3, instance norm, 8 classes, 28 px RGB), each timed
in one pass over its batch (the code before issue 26) and in cache-sized blocks
(:mod:`medbench.nn.blocking`), interleaved, the median of the repeats.

Beside each time: its FLOPs, counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and
matrix products, forward and backward), the FLOP/s achieved, and the fraction of this machine's
measured peak (a 2048 × 2048 matrix product in the same precision on the same threads), so every
figure says how close it is to the hardware; and the share of the step's CPU time spent in the
vendor's convolution and matrix kernels (``torch.profiler``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from medbench.nn import blocking
from medbench.nn.models import ModelSpec
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


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ModelSpec("convnet", {"width": WIDTH, "depth": 3, "norm": "instance"}).build(CHANNELS, CLASSES, SIZE)


def _images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, CHANNELS, SIZE, SIZE, generator=g), torch.arange(n) % CLASSES


def _train_step(batch: int) -> Callable[[], Any]:
    net, (x, y) = _net(), _images(batch)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        backward_in_blocks(net, x, y)
        optimizer.step()

    return step


def _dm_iteration(ipc: int, batch_real: int = 256) -> Callable[[], Any]:
    from medbench.methods.dm import embedding_gap

    task = _task(ipc, batch_real)
    images = torch.randn(CLASSES * ipc, CHANNELS, SIZE, SIZE, requires_grad=True)
    optimizer = torch.optim.SGD([images], lr=1.0, momentum=0.5)
    net = _net()
    for w in net.parameters():
        w.requires_grad_(False)

    def step() -> None:
        loss = embedding_gap(net, task, images, torch.Generator().manual_seed(1), batch_real=batch_real,
                             augment=None)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def _dc_outer(ipc: int, batch_real: int = 256) -> Callable[[], Any]:
    from medbench.methods.dc import DISTANCES, gradient_loss

    task = _task(ipc, batch_real)
    images = torch.randn(CLASSES * ipc, CHANNELS, SIZE, SIZE, requires_grad=True)
    optimizer = torch.optim.SGD([images], lr=0.1, momentum=0.5)
    net = _net()

    def step() -> None:
        loss = gradient_loss(net, task, images, torch.Generator().manual_seed(1), batch_real=batch_real,
                             distance=DISTANCES["ours"], augment=None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


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


# (name, what it is, its maker): each maker returns a zero-argument step.
STEPS: tuple[tuple[str, str, Callable[[], Callable[[], Any]]], ...] = (
    ("eval step, 10 images", "evaluation training step: forward, backward, SGD (IPC 1 of 10 classes)",
     lambda: _train_step(10)),
    ("eval step, 80 images", "evaluation training step (IPC 10 × 8 classes)", lambda: _train_step(80)),
    ("train step, 256 images", "a full 256-image SGD step (expert training, IPC ≥ 32 evaluation)",
     lambda: _train_step(256)),
    ("DM iteration, IPC 10", "DM: 8 × 256 real images embedded, 80 synthetic, one update (no DSA)",
     lambda: _dm_iteration(10)),
    ("DC outer step, IPC 1", "DC: per-class gradients on 8 × 256 real and 8 synthetic images, one update "
     "(no DSA)", lambda: _dc_outer(1)),
    ("scoring, 2048 images", "no-grad forward and softmax over a split", lambda: _scoring(2048)),
)


def _vendor_share(step: Callable[[], Any]) -> float:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    vendor = sum(e.self_cpu_time_total for e in events if any(op in e.key for op in VENDOR_OPS))
    return vendor / total if total else 0.0


def bench_kernels(s: Any, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """Every step of :data:`STEPS`, one pass and in blocks (CPU only: blocks are CPU-only)."""
    if device.type != "cpu":
        return {"skipped": "cache-sized blocks apply on a CPU only"}
    peak = {"float32": peak_flops(torch.float32), "bfloat16": peak_flops(torch.bfloat16)}
    log(f"kernels: measured peak {peak['float32'] / 1e9:.1f} GFLOP/s fp32, {peak['bfloat16'] / 1e9:.1f} bf16 "
        f"({torch.get_num_threads()} threads)")
    rows = []
    saved = blocking.BLOCK_BYTES
    try:
        for name, what, make in STEPS:
            step = make()
            with FlopCounterMode(display=False) as counter:
                step()
            flops = counter.get_total_flops()
            times: dict[str, list[float]] = {"one pass": [], "blocks": []}
            for _ in range(s.repeats):
                for variant, size in (("one pass", 2**62), ("blocks", saved)):
                    blocking.BLOCK_BYTES = size
                    step()  # warm-up for this variant's shapes
                    start = time.perf_counter()
                    step()
                    times[variant].append(time.perf_counter() - start)
            blocking.BLOCK_BYTES = saved
            vendor = _vendor_share(step)
            before, after = statistics.median(times["one pass"]), statistics.median(times["blocks"])
            row = {"step": name, "what": what, "gflop": flops / 1e9, "one_pass_s": before, "blocks_s": after,
                   "speedup": before / after, "gflops": flops / after / 1e9,
                   "of_peak": flops / after / peak["float32"], "vendor_share": vendor}
            rows.append(row)
            log(f"kernels {name:<24} {before:8.3f} s → {after:8.3f} s ({before / after:4.2f}×), "
                f"{row['gflops']:6.1f} GFLOP/s = {row['of_peak']:.0%} of fp32 peak, {vendor:.0%} in conv/matmul")
    finally:
        blocking.BLOCK_BYTES = saved
    return {"peak_flops": peak, "threads": torch.get_num_threads(), "rows": rows}


def render_kernels(k: dict[str, Any]) -> list[str]:
    if "skipped" in k:
        return ["## Kernels", "", f"Skipped: {k['skipped']}.", ""]
    peak = k["peak_flops"]
    out = ["## Kernels: one pass vs cache-sized blocks, FLOP/s against the measured peak", "",
           f"ConvNet width {WIDTH}, depth 3, instance norm, {CLASSES} classes, {SIZE} px RGB; {k['threads']} "
           f"thread(s). Measured peak: {peak['float32'] / 1e9:.1f} GFLOP/s fp32, {peak['bfloat16'] / 1e9:.1f} "
           "GFLOP/s bf16 (2048² matrix product). FLOPs: FlopCounterMode (convolutions and matrix products, "
           "forward and backward). \"conv/matmul\": the step's CPU time in those kernels (torch.profiler).", "",
           "| step | GFLOP | one pass | blocks | speed-up | GFLOP/s (blocks) | of fp32 peak | conv/matmul |",
           "|---|---|---|---|---|---|---|---|"]
    for r in k["rows"]:
        out.append(f"| {r['step']} | {r['gflop']:.2f} | {r['one_pass_s']:.3f} s | {r['blocks_s']:.3f} s | "
                   f"{r['speedup']:.2f}× | {r['gflops']:.1f} | {r['of_peak']:.0%} | {r['vendor_share']:.0%} |")
    out += ["", *[f"- **{r['step']}**: {r['what']}." for r in k["rows"]], ""]
    return out
