"""The measurements of ``medbench bench``: evaluation, scoring, DC, DM, MTT and expert training
on generated data, each timed as the median of interleaved repeats."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medbench.data.splits import Split, Splits
from medbench.evaluation.protocol import model_seeds, train_models
from medbench.nn.augment import dsa
from medbench.nn.batched import COMPILE_MODES, EvalOptions, choose_batching
from medbench.nn.models import ModelSpec

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
    from medbench.methods import synthetic as syn
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
    from medbench.distill.contract import DistillTask

    return DistillTask(train=splits.train, val=splits.val, num_classes=s.classes, ipc=ipc, seed=0,
                       device=splits.device, normalize=splits.normalize, model=_spec(s))

def bench_dm(s: Settings, device: torch.device, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """DM: one iteration (fresh network, real and synthetic embeddings under DSA, image update)."""
    from medbench.methods import synthetic as syn
    from medbench.methods.dm import matching_loss

    rows = []
    splits = _splits(s, s.classes * s.batch_real, device)
    aug = dsa(s.channels)
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
    aug = dsa(s.channels)
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
        code = ("import json, sys; from medbench.bench.measure import mtt_child; "
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

@contextlib.contextmanager
def _seeded() -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield

SECTIONS = ("eval", "options", "predict", "dc", "dm", "mtt", "experts", "kernels")

# Run only when named in --only: many compilations on a CPU take long; the kernels section times the
# official width one pass and in blocks (minutes on a CPU).
OPT_IN = ("options", "kernels")

PROJECTION_NEEDS = ("eval", "predict", "dc", "mtt", "experts")
