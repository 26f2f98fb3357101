"""``medbench bench``: how fast evaluation and distillation run on this machine."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import torch

from medbench import bench
from medbench.bench.measure import DEFAULT_OUT, OPT_IN, QUICK, SECTIONS, Settings
from medbench.bench.report import reproject, run_bench
from medbench.core.files import check_writable


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

def _sections(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown section {', '.join(unknown) or text!r}; choose {','.join(SECTIONS)}")
    return names

def register(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="measure evaluation and distillation speed on this machine",
                              description=bench.__doc__.splitlines()[0])
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
                        f"{','.join(OPT_IN)}, which run only when named: options compiles many times, kernels "
                        "times the official "
                        "width one pass and in blocks)")
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
