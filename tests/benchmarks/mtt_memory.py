"""Peak memory and time of one MTT distillation iteration as the unroll length J grows.

    python tests/benchmarks/mtt_memory.py                       # BloodMNIST-sized, CPU
    python tests/benchmarks/mtt_memory.py --device cuda --steps 10 20 40 80 160

Every (implementation, J) runs in a fresh subprocess, because peak RSS is a process-lifetime
high-water mark (and tracemalloc does not see torch's allocator). CPU: ``delta`` is the peak
RSS (``getrusage``) minus the RSS just before the iteration, i.e. what the iteration itself
needed; CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before it. Settings whose
linear extrapolation from the previous J exceeds ``--max-gb`` are skipped rather than risking
the machine's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

DEFAULT_STEPS = (10, 20, 40, 80)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(implementation: str, steps: int, *, classes: int = 8, ipc: int = 10, channels: int = 3,
            size: int = 28, width: int = 128, augment: bool = True, device: str = "cpu",
            threads: int | None = None) -> dict[str, Any]:
    """One iteration (forward unroll + gradient) in *this* process; call it in a fresh one."""
    import torch

    from medbench.methods.trajectory import IMPLEMENTATIONS, FlatParams, build_seeded, plan_unroll
    from medbench.nn.augment import AugmentConfig, SiameseAugment
    from medbench.nn.models import ModelSpec

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    net = FlatParams(build_seeded(ModelSpec("convnet", {"width": width}), channels, classes, size, 0, dev))
    g = torch.Generator().manual_seed(0)
    start = net.flatten().to(dev)
    target = (start + 0.01 * torch.randn(net.size, generator=g).to(dev)).contiguous()
    images = torch.randn(classes * ipc, channels, size, size, generator=g).to(dev)
    labels = torch.arange(classes, device=dev).repeat_interleave(ipc)
    lr = torch.tensor(0.01, device=dev)
    aug = SiameseAugment(AugmentConfig(), channels) if augment else None
    plan = plan_unroll(len(labels), len(labels), steps, g, aug, images)
    match = IMPLEMENTATIONS[implementation]

    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_bytes()
    t0 = time.perf_counter()
    out = match(net, images, labels, lr, start, target, plan, aug)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    seconds = time.perf_counter() - t0
    return {"implementation": implementation, "steps": steps, "peak_mb": peak / 2**20,
            "delta_mb": (peak - before) / 2**20, "seconds": seconds, "loss": float(out.loss), "params": net.size}


def probe(implementation: str, steps: int, **settings: Any) -> dict[str, Any]:
    """:func:`measure` in a fresh subprocess."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", implementation, str(steps),
           "--settings", json.dumps(settings)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'implementation':<15}{'J':>5}{'peak MB':>10}{'delta MB':>10}{'s/iter':>9}{'delta/J=first':>15}"]
    first: dict[str, float] = {}
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['implementation']:<15}{r['steps']:>5}   skipped: {r['skipped']}")
            continue
        base = first.setdefault(r["implementation"], r["delta_mb"])
        lines.append(f"{r['implementation']:<15}{r['steps']:>5}{r['peak_mb']:>10.0f}{r['delta_mb']:>10.0f}"
                     f"{r['seconds']:>9.2f}{r['delta_mb'] / base:>14.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "J"), help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, nargs="+", default=list(DEFAULT_STEPS))
    parser.add_argument("--implementations", nargs="+", default=["tesla", "unrolled"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--max-gb", type=float, default=12.0, help="skip settings extrapolated beyond this")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args(argv)
    if args.child:
        result = measure(args.child[0], int(args.child[1]), **json.loads(args.settings))
        print(json.dumps(result))
        return
    settings = {"classes": args.classes, "ipc": args.ipc, "channels": args.channels, "size": args.size,
                "width": args.width, "augment": not args.no_augment, "device": args.device,
                "threads": args.threads}
    rows: list[dict[str, Any]] = []
    for impl in args.implementations:
        previous: dict[str, Any] | None = None
        for steps in sorted(args.steps):
            if previous is not None:
                estimate = previous["peak_mb"] + previous["delta_mb"] * (steps / previous["steps"] - 1)
                if estimate > args.max_gb * 1024:
                    rows.append({"implementation": impl, "steps": steps,
                                 "skipped": f"estimated {estimate / 1024:.1f} GB > --max-gb {args.max_gb}"})
                    continue
            previous = probe(impl, steps, **settings)
            rows.append(previous)
            print(table(rows).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
