"""``medbench bench``: how fast evaluation and distillation run on this machine (issue 7).

Measures, on generated data (8 classes, 28 px RGB, so it runs anywhere without files):

* evaluation throughput (networks × epochs per second) of the K evaluation networks trained one
  at a time and batched (vmap, grouped) for K = 1, 5, 10 at IPC 1 and 10, and what ``auto``
  picks here;
* prediction throughput (images per second) of K = 5 networks, one by one and batched;
* DC (one outer step, one inner epoch, one iteration), DM and MTT iteration times (MTT's peak
  memory in a fresh subprocess: peak RSS is a process-lifetime high-water mark);
* images per second of expert-buffer training (MTT's experts);
* with ``--projection``: the wall-clock of the eight-dataset MedMNIST grid (random, DC, MTT ×
  IPC 1, 10, 50 × 5 eval networks, published split sizes) projected from those numbers.

Timings on a shared CPU are noisy: every mode is measured inside this one process, modes are
interleaved within each repeat, and the median of the repeats is reported, so compare ratios
within one report. Results go to ``reports/bench/<device>-<date>[-quick].md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medbench.augment import AugmentConfig, SiameseAugment
from medbench.data.splits import Split, Splits
from medbench.errors import MedbenchError
from medbench.evaluation.batched import COMPILE_MODES, EvalOptions, choose_batching
from medbench.evaluation.protocol import model_seeds, train_models
from medbench.models import ModelSpec
from medbench.storage.files import check_writable

DEFAULT_OUT = Path("reports/bench")
EIGHT = ("pathmnist", "dermamnist", "octmnist", "bloodmnist", "tissuemnist", "organamnist", "organcmnist",
         "organsmnist")
MODES = ("sequential", "vmap", "grouped")


@dataclass(frozen=True)
class Settings:
    """What one bench run measures; ``--quick`` shrinks it for a CPU smoke run."""

    device: str = "auto"
    width: int = 128
    depth: int = 3
    classes: int = 8
    size: int = 28
    channels: int = 3
    ks: tuple[int, ...] = (1, 5, 10)
    ipcs: tuple[int, ...] = (1, 10)
    epochs: int = 10  # evaluation epochs per measurement
    repeats: int = 3
    batch_real: int = 256  # DC/DM real images per class
    mtt_steps: int = 20  # J, MTT's reference syn_steps
    expert_images: int = 2048  # generated training images for expert-buffer training
    expert_epochs: int = 2
    predict_images: int = 4096
    quick: bool = False
    projection: bool = False
    only: tuple[str, ...] = ()  # sections to run (empty: all)


QUICK = {"width": 32, "ks": (1, 5, 10), "epochs": 3, "repeats": 2, "batch_real": 64, "mtt_steps": 5,
         "expert_images": 512, "expert_epochs": 1, "predict_images": 1024}


def _median_time(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _syncer(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _condensed(s: Settings, ipc: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(ipc)
    images = torch.randn(s.classes * ipc, s.channels, s.size, s.size, generator=g).to(device)
    return images, torch.arange(s.classes, device=device).repeat_interleave(ipc)


def _splits(s: Settings, n_train: int, device: torch.device) -> Splits:
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        labels = torch.arange(n) % s.classes
        return Split(torch.randint(0, 256, (n, s.channels, s.size, s.size), generator=g, dtype=torch.uint8), labels)

    n_val = max(s.classes, n_train // 8)
    return Splits("bench", split(n_train), split(n_val), split(n_val), s.classes, (0.5,) * s.channels,
                  (0.25,) * s.channels).to(device)


def _spec(s: Settings) -> ModelSpec:
    return ModelSpec("convnet", {"width": s.width, "depth": s.depth, "norm": "instance"})


# --- measurements -----------------------------------------------------------------------------


def bench_eval(s: Settings, device: torch.device, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Networks × epochs per second for every (IPC, K, mode); modes interleaved per repeat."""
    rows = []
    sync = _syncer(device)
    for ipc in s.ipcs:
        images, labels = _condensed(s, ipc, device)
        for k in s.ks:
            seeds = model_seeds(0, k)

            def run(mode: str, epochs: int, images: torch.Tensor = images, labels: torch.Tensor = labels,
                    seeds: list[int] = seeds) -> None:
                train_models(images, labels, seeds, spec=_spec(s), channels=s.channels, num_classes=s.classes,
                             size=s.size, epochs=epochs, lr=0.01, batching=mode)

            for mode in MODES:  # warm-up: allocator, kernels, first-call overheads
                run(mode, 1)
            times: dict[str, list[float]] = {m: [] for m in MODES}
            for _ in range(s.repeats):
                for mode in MODES:
                    times[mode].append(_median_time(lambda m=mode: run(m, s.epochs), 1, sync))
            auto = choose_batching("auto", device=device, model=_spec(s), models=k,
                                   images_per_step=min(len(labels), 256))
            base = statistics.median(times["sequential"])
            for mode in MODES:
                t = statistics.median(times[mode])
                rows.append({"ipc": ipc, "k": k, "images_per_step": min(len(labels), 256), "mode": mode,
                             "seconds": t, "net_epochs_per_s": k * s.epochs / t, "vs_sequential": base / t,
                             "auto_picks": auto})
                log(f"eval ipc {ipc:>2} K {k:>2} {mode:<10} {k * s.epochs / t:8.1f} net·epochs/s "
                    f"({base / t:4.2f}× sequential)")
    return rows


@dataclass(frozen=True)
class OptionVariant:
    label: str
    options: EvalOptions
    cuda_only: bool = False


# Each GPU speed option alone, so its own effect shows; "cuda_graphs" is torch.compile's
# reduce-overhead mode, which records the compiled step as CUDA graphs and replays it.
OPTION_VARIANTS = {
    "baseline": OptionVariant("baseline", EvalOptions()),
    "bf16": OptionVariant("bf16 autocast", EvalOptions(amp=True)),
    "channels_last": OptionVariant("channels-last", EvalOptions(channels_last=True)),
    "cudnn_benchmark": OptionVariant("cuDNN benchmark", EvalOptions(cudnn_benchmark=True), cuda_only=True),
    "compile": OptionVariant("torch.compile", COMPILE_MODES["inductor"]),
    "cuda_graphs": OptionVariant("CUDA graphs", COMPILE_MODES["cuda-graphs"], cuda_only=True),
}
OPTION_TRAINERS = ("sequential", "grouped")


def bench_options(s: Settings, device: torch.device, log: Callable[[str], None],
                  variants: tuple[str, ...] = tuple(OPTION_VARIANTS)) -> list[dict[str, Any]]:
    """Each speed option on its own against the baseline: K = max(ks) networks, sequential and
    grouped trainers, every IPC. ``first_call_s`` is the variant's first (1-epoch) call, which pays
    compilation; later calls with the same shapes reuse it, also with fresh networks (measured:
    their throughput shows no recompilation). The throughput is the median of later calls."""
    rows = []
    sync = _syncer(device)
    k = max(s.ks)
    seeds = model_seeds(0, k)
    for ipc in s.ipcs:
        images, labels = _condensed(s, ipc, device)
        for trainer in OPTION_TRAINERS:

            def run(epochs: int, options: EvalOptions, images: torch.Tensor = images, labels: torch.Tensor = labels,
                    trainer: str = trainer) -> None:
                train_models(images, labels, seeds, spec=_spec(s), channels=s.channels, num_classes=s.classes,
                             size=s.size, epochs=epochs, lr=0.01, batching=trainer, options=options)

            run(1, EvalOptions())  # untimed: the process's first call pays one-off start-up costs
            base = None
            for name in variants:
                variant = OPTION_VARIANTS[name]
                row = {"ipc": ipc, "k": k, "trainer": trainer, "variant": name}
                if variant.cuda_only and device.type != "cuda":
                    rows.append({**row, "skipped": "CUDA only"})
                    continue
                first = _median_time(lambda o=variant.options: run(1, o), 1, sync)
                t = _median_time(lambda o=variant.options: run(s.epochs, o), s.repeats, sync)
                base = t if name == "baseline" else base
                rows.append({**row, "seconds": t, "first_call_s": first, "net_epochs_per_s": k * s.epochs / t,
                             "vs_baseline": base / t if base else None})
                log(f"options ipc {ipc:>2} K {k} {trainer:<10} {variant.label:<16} {k * s.epochs / t:8.1f} "
                    f"net·epochs/s (first call {first:.2f} s)")
    return rows


def bench_predict(s: Settings, device: torch.device, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Scoring throughput: K = 5 networks over a generated split, one by one and batched."""
    k = 5
    images, labels = _condensed(s, 1, device)
    split = torch.randint(0, 256, (s.predict_images, s.channels, s.size, s.size), dtype=torch.uint8).to(device)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return x.float() / 127.5 - 1

    rows = []
    trained = {m: train_models(images, labels, model_seeds(0, k), spec=_spec(s), channels=s.channels,
                               num_classes=s.classes, size=s.size, epochs=1, lr=0.01, batching=m) for m in MODES}
    for mode, t in trained.items():
        t.predict_proba(split[:64], prepare)  # warm-up
        seconds = _median_time(lambda t=t: t.predict_proba(split, prepare), s.repeats, _syncer(device))
        rows.append({"k": k, "mode": mode, "images": s.predict_images, "seconds": seconds,
                     "model_images_per_s": k * s.predict_images / seconds})
        log(f"predict K {k} {mode:<10} {k * s.predict_images / seconds:10.0f} model·images/s")
    return rows


def bench_dc(s: Settings, device: torch.device, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """DC: one outer step (per-class real and synthetic gradients, distance, image update), one
    inner epoch on the synthetic set, and the iteration (measured at IPC 1, composed beyond)."""
    from medbench.methods import _synthetic as syn
    from medbench.methods.dc import DISTANCES, DCParams, gradient_loss, loop_schedule, make_step, train_inner

    rows = []
    sync = _syncer(device)
    splits = _splits(s, s.classes * s.batch_real, device)
    for ipc in s.ipcs:
        task = _task(splits, s, ipc)
        images = syn.initial_set(task, "real")[0].requires_grad_(True)
        optimizer = torch.optim.SGD([images], lr=0.1, momentum=0.5)
        net = syn.fresh_model(task, torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(1)
        labels = torch.arange(s.classes, device=device).repeat_interleave(ipc)

        def outer(net: torch.nn.Module = net, task: Any = task, images: torch.Tensor = images,
                  optimizer: torch.optim.Optimizer = optimizer, g: torch.Generator = g) -> None:
            loss = gradient_loss(net, task, images, g, batch_real=s.batch_real, distance=DISTANCES["ours"],
                                 augment=None)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        inner_opt = torch.optim.SGD(net.parameters(), lr=0.01)

        def inner(net: torch.nn.Module = net, images: torch.Tensor = images, labels: torch.Tensor = labels,
                  inner_opt: torch.optim.Optimizer = inner_opt, g: torch.Generator = g) -> None:
            train_inner(net, inner_opt, images.detach(), labels, epochs=1, batch_size=256, generator=g, augment=None)

        outer()
        inner()
        t_outer = _median_time(outer, s.repeats, sync)
        t_inner = _median_time(inner, s.repeats, sync)
        n_outer, n_inner = loop_schedule(ipc)
        composed = n_outer * t_outer + (n_outer - 1) * n_inner * t_inner
        row = {"ipc": ipc, "outer_step_s": t_outer, "inner_epoch_s": t_inner, "outer_loop": n_outer,
               "inner_loop": n_inner, "iteration_s_composed": composed, "batch_real": s.batch_real}
        if n_outer == 1:  # a whole iteration is cheap enough to measure directly
            step = make_step(task, DCParams(batch_real=s.batch_real), None)
            row["iteration_s_measured"] = _median_time(
                lambda step=step, images=images, optimizer=optimizer: step(
                    images, optimizer, torch.Generator().manual_seed(2)), s.repeats, sync)
        rows.append(row)
        log(f"dc  ipc {ipc:>2}: outer step {t_outer:.3f} s, inner epoch {t_inner:.4f} s, iteration "
            f"({n_outer} outer, {n_inner} inner) ≈ {composed:.2f} s")
    return rows


def _task(splits: Splits, s: Settings, ipc: int) -> Any:
    from medbench.method import DistillTask

    return DistillTask(train=splits.train, val=splits.val, num_classes=s.classes, ipc=ipc, seed=0,
                       device=splits.device, normalize=splits.normalize, model=_spec(s))


def bench_dm(s: Settings, device: torch.device, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """DM: one iteration (fresh network, real and synthetic embeddings under DSA, image update)."""
    from medbench.methods import _synthetic as syn
    from medbench.methods.dm import matching_loss

    rows = []
    splits = _splits(s, s.classes * s.batch_real, device)
    aug = SiameseAugment(AugmentConfig(), s.channels)
    for ipc in s.ipcs:
        task = _task(splits, s, ipc)
        images = syn.initial_set(task, "real")[0].requires_grad_(True)
        optimizer = torch.optim.SGD([images], lr=1.0, momentum=0.5)
        g = torch.Generator().manual_seed(1)

        def iteration(task: Any = task, images: torch.Tensor = images, optimizer: torch.optim.Optimizer = optimizer,
                      g: torch.Generator = g) -> None:
            loss = matching_loss(task, images, g, batch_real=s.batch_real, augment=aug)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        iteration()
        t = _median_time(iteration, s.repeats, _syncer(device))
        rows.append({"ipc": ipc, "iteration_s": t, "batch_real": s.batch_real})
        log(f"dm  ipc {ipc:>2}: iteration {t:.3f} s")
    return rows


def mtt_child(settings: dict[str, Any]) -> dict[str, Any]:
    """One MTT matching iteration (exact recompute gradient, DSA) in *this* process: time of the
    second of two iterations, and peak memory above what was allocated before the first."""
    from medbench.methods.trajectory import IMPLEMENTATIONS, FlatParams, build_seeded, plan_unroll

    s = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings["settings"].items()})
    device = torch.device(settings["device"])
    ipc = int(settings["ipc"])
    torch.set_num_threads(int(settings["threads"]))
    net = FlatParams(build_seeded(_spec(s), s.channels, s.classes, s.size, 0, device))
    g = torch.Generator().manual_seed(0)
    start = net.flatten().to(device)
    target = start + 0.01 * torch.randn(net.size, generator=g).to(device)
    images, labels = _condensed(s, ipc, device)
    aug = SiameseAugment(AugmentConfig(), s.channels)
    lr = torch.tensor(0.01, device=device)
    match = IMPLEMENTATIONS["tesla"]
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else _rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for _ in range(2):
        plan = plan_unroll(len(labels), len(labels), s.mtt_steps, g, aug, images)
        _syncer(device)()
        t0 = time.perf_counter()
        match(net, images, labels, lr, start, target, plan, aug)
        _syncer(device)()
        seconds.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"ipc": ipc, "syn_steps": s.mtt_steps, "iteration_s": seconds[-1], "peak_mb": peak / 2**20,
            "delta_mb": max(0, peak - before) / 2**20, "params": net.size}


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_mtt(s: Settings, device: torch.device, log: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    for ipc in s.ipcs:
        payload = json.dumps({"settings": dataclasses.asdict(s), "device": str(device), "ipc": ipc,
                              "threads": torch.get_num_threads()})
        code = ("import json, sys; from medbench.bench import mtt_child; "
                "print(json.dumps(mtt_child(json.loads(sys.argv[1]))))")
        done = subprocess.run([sys.executable, "-c", code, payload], capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        log(f"mtt ipc {ipc:>2}: iteration (J={s.mtt_steps}) {row['iteration_s']:.3f} s, "
            f"peak +{row['delta_mb']:.0f} MB")
    return rows


def bench_experts(s: Settings, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """Expert-buffer training: one expert on generated data, its recorded training seconds."""
    from medbench.methods.trajectory import ExpertConfig, build_buffer

    splits = _splits(s, s.expert_images, device)
    config = ExpertConfig(num_experts=1, epochs=s.expert_epochs)
    with tempfile.TemporaryDirectory() as root:
        buffer = build_buffer(splits, config, root, model=_spec(s), log=None)
        seconds = buffer.summary()["train_seconds"]
    ips = s.expert_images * s.expert_epochs / seconds
    log(f"experts: {ips:.0f} images/s ({s.expert_images} images × {s.expert_epochs} epochs, DSA)")
    return {"images": s.expert_images, "epochs": s.expert_epochs, "seconds": seconds, "images_per_s": ips}


# --- projection -------------------------------------------------------------------------------


def _linear(points: list[tuple[float, float]]) -> Callable[[float], float]:
    """Cost through the first and last (x, y) points, extrapolated linearly, never below 0.

    More images never cost less: when noise makes the measured slope negative, the larger of the
    two times is used as a constant (a conservative projection rather than one that reaches 0).
    """
    points = sorted(points)
    (x0, y0), (x1, y1) = points[0], points[-1]
    if x1 == x0 or y1 <= y0:
        top = max(y for _, y in points)
        return lambda _x: top
    slope = (y1 - y0) / (x1 - x0)
    return lambda x: max(0.0, y0 + slope * (x - x0))


def project(results: dict[str, Any], k: int = 5, ipcs: tuple[int, ...] = (1, 10, 50)) -> dict[str, Any]:
    """Projected seconds per (dataset, method, IPC) of the eight-dataset grid from measured times.

    Model (all at the measured width and 28 px; channels only change the first layer and are
    ignored): one evaluation network's SGD step costs ``a + b·images`` (fitted per network from
    the auto trainer at K = 5, IPC 1 and 10); a DC outer step scales with classes and linearly
    in IPC; an MTT iteration linearly in the synthetic images; scoring at the measured images/s.
    Method settings are the official defaults (DC 1000 iterations, checkpoint every 100; MTT
    5000 iterations, checkpoint every 500, buffer 100 experts × 50 epochs; eval 300 epochs, i.e. the
    `dc` protocol: the default `dsa` protocol trains 1000 epochs, about 3.3× the evaluation time).
    """
    import medmnist

    from medbench.methods.dc import loop_schedule

    s = results["settings"]
    classes8, batch = s["classes"], 256
    evals = [r for r in results["eval"] if r["k"] == (k if k in s["ks"] else max(s["ks"]))
             and r["mode"] == r["auto_picks"]]
    step = _linear([(r["images_per_step"], r["seconds"] / (r["k"] * s["epochs"])) for r in evals])
    pred = {r["mode"]: r["model_images_per_s"] for r in results["predict"]}
    auto_mode = evals[0]["auto_picks"] if evals else "sequential"
    predict_ips = pred.get(auto_mode, pred.get("sequential", 1.0))
    dc_outer = _linear([(r["ipc"], r["outer_step_s"]) for r in results["dc"]])
    mtt_iter = _linear([(r["ipc"] * classes8, r["iteration_s"]) for r in results["mtt"]])
    expert_ips = results["experts"]["images_per_s"]

    def epoch(n: int) -> float:  # one network, one epoch over n images
        full, rest = divmod(n, batch)
        return full * step(batch) + (step(rest) if rest else 0.0)

    def evaluation(n: int, n_score: int, networks: int = k) -> float:
        return networks * (300 * epoch(n) + n_score / predict_ips)

    rows, total = [], 0.0
    for name in EIGHT:
        info = medmnist.INFO[name]
        c = len(info["label"])
        n_train, n_val, n_test = (info["n_samples"][p] for p in ("train", "val", "test"))
        buffer = 100 * 50 * n_train / expert_ips
        for ipc in ipcs:
            n = c * ipc
            eval_s = evaluation(n, n_val + n_test)
            checkpoint = evaluation(n, n_val, networks=1)
            outer, inner = loop_schedule(ipc)
            dc_iter = outer * dc_outer(ipc) * c / classes8 + (outer - 1) * inner * epoch(n)
            cells = {
                "random": eval_s,
                "dc": 1000 * dc_iter + 11 * checkpoint + eval_s,
                "mtt": 5000 * mtt_iter(n) + 11 * checkpoint + eval_s + (buffer if ipc == ipcs[0] else 0.0),
            }
            for method, seconds in cells.items():
                rows.append({"dataset": name, "classes": c, "n_train": n_train, "method": method, "ipc": ipc,
                             "seconds": seconds})
                total += seconds
    return {"rows": rows, "total_seconds": total, "eval_models": k, "auto_mode": auto_mode,
            "note": "MTT's expert buffer (100 experts × 50 epochs) is charged once per dataset, to its first IPC."}


# --- report -----------------------------------------------------------------------------------


def machine(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": str(device), "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _slug(device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda-" + "".join(ch if ch.isalnum() else "-" for ch in torch.cuda.get_device_name(device).lower())
    return "cpu"


def _fmt_hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h"


def busy_warning(load: Sequence[float] | None, cores: int | None) -> str:
    """A loud line when other work already kept the machine's cores busy at the start: small networks
    then slow down 10–50× (threads spin-wait for a core), which distorts times and their ratios."""
    if not load or not cores or load[0] < cores:
        return ""
    return (f"**Busy machine: load average {load[0]:.1f} on {cores} cores at the start.** Other processes competed "
            "for the CPU during these measurements; treat the times and ratios below as unreliable and rerun on an "
            "idle machine.")


def render(results: dict[str, Any]) -> str:
    """The Markdown report."""
    m, s = results["machine"], results["settings"]
    out = [f"# medbench bench — {results['device_slug']} — {results['date']}", ""]
    if m["device"].startswith("cpu"):
        out += ["**CPU run.** GPU-only options (bf16 autocast, channels-last, torch.compile, cuDNN benchmark; "
                "`EvalOptions`) are **not measured** in this report and stay off by default.", ""]
    busy = busy_warning(results.get("load_start"), m.get("cpu_count"))
    if busy:
        out += [busy, ""]
    out += ["## Machine", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in m.items()]
    out += ["", f"Command: `{results['command']}`", "",
            f"Settings: {', '.join(f'{k}={v}' for k, v in s.items())}", "",
            f"Load average at start {results['load_start']}, at end {m['load_average']} "
            "(a shared machine: compare ratios within this report; medians of "
            f"{s['repeats']} interleaved repeats).", ""]
    if results.get("eval"):
        out += ["## Evaluation training: networks × epochs per second",
                f"(ConvNet width {s['width']} depth {s['depth']}, {s['classes']} classes, {s['size']} px, "
                f"{s['epochs']} epochs per measurement; × = speed relative to sequential)", "",
                "| IPC | images/step | K | sequential | vmap | grouped | auto picks | auto vs sequential |",
                "|---|---|---|---|---|---|---|---|"]
        for ipc in s["ipcs"]:
            for k in s["ks"]:
                row = {r["mode"]: r for r in results["eval"] if r["ipc"] == ipc and r["k"] == k}
                seq, auto = row["sequential"], row["sequential"]["auto_picks"]
                cells = [f"{row[mo]['net_epochs_per_s']:.1f} ({row[mo]['vs_sequential']:.2f}×)" for mo in MODES]
                out.append(f"| {ipc} | {seq['images_per_step']} | {k} | {' | '.join(cells)} | {auto} | "
                           f"{row[auto]['vs_sequential']:.2f}× |")
        out.append("")
    if results.get("options"):
        out += _render_options(results["options"], s)
    if results.get("predict"):
        out += ["## Scoring: model·images per second (K = 5)", "", "| mode | model·images/s |", "|---|---|"]
        out += [f"| {r['mode']} | {r['model_images_per_s']:,.0f} |" for r in results["predict"]]
        out.append("")
    if results.get("dc"):
        out += ["## DC", f"(real batch {s['batch_real']} per class)", "",
                "| IPC | outer step | inner epoch | (outer, inner) | iteration (composed) | iteration (measured) |",
                "|---|---|---|---|---|---|"]
        for r in results["dc"]:
            measured = f"{r['iteration_s_measured']:.3f} s" if "iteration_s_measured" in r else "—"
            out.append(f"| {r['ipc']} | {r['outer_step_s']:.3f} s | {r['inner_epoch_s']:.4f} s | "
                       f"({r['outer_loop']}, {r['inner_loop']}) | {r['iteration_s_composed']:.3f} s | {measured} |")
        out.append("")
    if results.get("dm"):
        out += ["## DM", "", "| IPC | iteration |", "|---|---|"]
        out += [f"| {r['ipc']} | {r['iteration_s']:.3f} s |" for r in results["dm"]]
        out.append("")
    if results.get("mtt"):
        out += ["## MTT (exact recompute gradient, DSA, one iteration in a fresh process)", "",
                "| IPC | J | iteration | peak memory above start |", "|---|---|---|---|"]
        out += [f"| {r['ipc']} | {r['syn_steps']} | {r['iteration_s']:.3f} s | {r['delta_mb']:.0f} MB |"
                for r in results["mtt"]]
        out.append("")
    if results.get("experts"):
        e = results["experts"]
        out += ["## Expert-buffer training", "",
                f"{e['images_per_s']:,.0f} images/s ({e['images']} images × {e['epochs']} epochs, DSA, plain SGD).",
                ""]
    if results.get("projection"):
        p = results["projection"]
        where = "this CPU" if m["device"].startswith("cpu") else m.get("gpu", m["device"])
        out += ["## Projection: the eight-dataset grid", "",
                f"Random, DC, MTT × IPC 1, 10, 50 × {p['eval_models']} evaluation networks on "
                f"{', '.join(EIGHT)} (published MedMNIST split sizes), projected from the numbers above for "
                f"**{where}** at width {s['width']} (eval trainer: {p['auto_mode']}). A model, not a measurement: "
                "see `medbench.bench.project`. " + p["note"], "",
                "| dataset | classes | train | random (1/10/50) | DC (1/10/50) | MTT (1/10/50) |",
                "|---|---|---|---|---|---|"]
        for name in EIGHT:
            rows = [r for r in p["rows"] if r["dataset"] == name]
            by = {meth: " / ".join(_fmt_hours(r["seconds"]) for r in rows if r["method"] == meth)
                  for meth in ("random", "dc", "mtt")}
            out.append(f"| {name} | {rows[0]['classes']} | {rows[0]['n_train']:,} | {by['random']} | {by['dc']} | "
                       f"{by['mtt']} |")
        out += ["", f"**Total: {_fmt_hours(p['total_seconds'])}** "
                f"({p['total_seconds'] / 86400:,.1f} days) on one such device, cells run one after another.", ""]
    return "\n".join(out)


def _render_options(rows: list[dict[str, Any]], s: dict[str, Any]) -> list[str]:
    names = list(dict.fromkeys(r["variant"] for r in rows))
    labels = [OPTION_VARIANTS[n].label for n in names]
    out = ["## Speed options, each alone: networks × epochs per second",
           f"(K = {rows[0]['k']} networks, ConvNet width {s['width']}, {s['epochs']} epochs per call; × = relative to "
           "the baseline of the same trainer; in brackets the seconds of the variant's first, 1-epoch call, which pays "
           "compilation once per process and shape. Speed only: bf16 must also be checked for accuracy on real data "
           "before it is turned on.)", "",
           "| IPC | trainer | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for (ipc, trainer), group in _group(rows, ("ipc", "trainer")).items():
        by = {r["variant"]: r for r in group}
        cells = []
        for n in names:
            r = by.get(n)
            if r is None or "skipped" in r:
                cells.append(f"n/a ({r['skipped']})" if r else "—")
            else:
                ratio = f"{r['vs_baseline']:.2f}×" if r.get("vs_baseline") else "—"
                cells.append(f"{r['net_epochs_per_s']:.1f} ({ratio}) [{r['first_call_s']:.2f} s]")
        out.append(f"| {ipc} | {trainer} | " + " | ".join(cells) + " |")
    return [*out, ""]


def _group(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


def run_bench(s: Settings, out_dir: Path, command: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure everything, write ``<out_dir>/<device>-<date>[-quick].md`` and ``.json``."""
    from medbench.devices import resolve_device

    device = resolve_device(s.device)
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results: dict[str, Any] = {"date": dt.date.today().isoformat(), "device_slug": _slug(device),
                               "command": command, "settings": dataclasses.asdict(s), "load_start": load_start}
    sections = {"eval": bench_eval, "options": bench_options, "predict": bench_predict, "dc": bench_dc,
                "dm": bench_dm, "mtt": bench_mtt, "experts": bench_experts}
    only = set(s.only or set(sections) - set(OPT_IN))
    if s.projection and not set(PROJECTION_NEEDS) <= only:
        raise MedbenchError(f"--projection needs the sections {','.join(PROJECTION_NEEDS)}")
    with _seeded():
        for name, fn in sections.items():
            if name in only:
                results[name] = fn(s, device, log)
    if s.projection:
        results["projection"] = project(results)
        log(f"projection: {_fmt_hours(results['projection']['total_seconds'])} for the eight-dataset grid")
    results["machine"] = machine(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ("-quick" if s.quick else "") + (f"-{'-'.join(s.only)}" if s.only else "")
    stem = out_dir / f"{results['device_slug']}-{results['date']}{suffix}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(render(results) + "\n")
    results["paths"] = [str(stem.with_suffix(".md")), str(stem.with_suffix(".json"))]
    log(f"wrote {results['paths'][0]} and .json")
    return results


@contextlib.contextmanager
def _seeded() -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


# --- command line -----------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _pos(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


SECTIONS = ("eval", "options", "predict", "dc", "dm", "mtt", "experts")
OPT_IN = ("options",)  # run only when named in --only: many compilations on a CPU take long
PROJECTION_NEEDS = ("eval", "predict", "dc", "mtt", "experts")


def _sections(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown section {', '.join(unknown) or text!r}; choose {','.join(SECTIONS)}")
    return names


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="measure evaluation and distillation speed on this machine",
                              description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="a reduced run for a CPU (width 32, fewer epochs/repeats)")
    p.add_argument("--projection", action="store_true", help="also project the eight-dataset grid's wall-clock")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder (default: %(default)s)")
    p.add_argument("--width", type=_pos, help="ConvNet width (default 128; 32 with --quick)")
    p.add_argument("--depth", type=_pos, help="ConvNet depth (default 3)")
    p.add_argument("--ks", type=_ints, help="numbers of evaluation networks (default 1,5,10)")
    p.add_argument("--ipcs", type=_ints, help="IPCs (default 1,10)")
    p.add_argument("--classes", type=_pos, help="classes of the generated data (default 8)")
    p.add_argument("--size", type=_pos, help="image side in px (default 28)")
    p.add_argument("--epochs", type=_pos, help="evaluation epochs per measurement")
    p.add_argument("--repeats", type=_pos, help="repeats per measurement (median reported)")
    p.add_argument("--batch-real", type=_pos, help="DC/DM real images per class")
    p.add_argument("--mtt-steps", type=_pos, help="MTT unroll length J")
    p.add_argument("--expert-images", type=_pos, help="generated images for expert training")
    p.add_argument("--predict-images", type=_pos, help="generated images for the scoring measurement")
    p.add_argument("--threads", type=_pos, help="torch CPU threads (default: torch's)")
    p.add_argument("--reproject", type=Path, metavar="JSON",
                   help="only recompute the projection of a saved report (no measurements)")
    p.add_argument("--only", type=_sections,
                   help=f"comma-separated sections of {','.join(SECTIONS)} (default: all but "
                        f"{','.join(OPT_IN)}, which compiles many times and runs only when named)")
    p.set_defaults(func=cmd_bench)


def settings_from_args(args: argparse.Namespace) -> Settings:
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    for name in ("width", "depth", "ks", "ipcs", "classes", "size", "epochs", "repeats", "batch_real", "mtt_steps",
                 "expert_images", "predict_images", "only"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return Settings(device=args.device, quick=args.quick, projection=args.projection, **values)


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def reproject(path: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Recompute the projection of a saved ``.json`` report and rewrite it and its ``.md``."""
    try:
        results = json.loads(Path(path).read_text())
    except OSError as exc:
        raise MedbenchError(f"{path}: cannot read the bench report ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MedbenchError(f"{path}: not a bench report (invalid JSON: {exc})") from None
    needed = ("settings", "eval", "predict", "dc", "mtt", "experts")
    if not isinstance(results, dict) or any(k not in results for k in needed):
        raise MedbenchError(f"{path}: not a `medbench bench` JSON report with every section (needs "
                            f"{', '.join(needed)}); nothing was rewritten")
    try:
        results["projection"] = project(results)
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
        raise MedbenchError(f"{path}: cannot project from this report ({type(exc).__name__}: {exc}); "
                            "nothing was rewritten") from None
    results["settings"]["projection"] = True
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    path.with_suffix(".md").write_text(render(results) + "\n")
    log(f"projection: {_fmt_hours(results['projection']['total_seconds'])}; rewrote {path} and .md")
    return results


def cmd_bench(args: argparse.Namespace) -> int:
    if args.reproject:
        reproject(args.reproject)
        return 0
    check_writable(args.out, folder=True, what="--out")
    if args.threads:
        torch.set_num_threads(args.threads)
    flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f" {shlex.quote(_text(v))}")
             for k, v in vars(args).items() if k not in ("func", "command", "reproject") and v not in (None, False)
             and not (k == "device" and v == "auto") and not (k == "out" and v == DEFAULT_OUT)]
    command = " ".join(["medbench bench", *flags])
    run_bench(settings_from_args(args), args.out, command)
    return 0

