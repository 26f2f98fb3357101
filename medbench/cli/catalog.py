"""``datasets``, ``methods`` and ``protocols``: what is registered, and one dataset's facts."""

from __future__ import annotations

import argparse
from pathlib import Path

from medbench.core.errors import MedbenchError
from medbench.data.catalog import DATASETS, DEFAULT_DATA_ROOT
from medbench.distill.contract import get_method, list_methods
from medbench.evaluation.named import DEFAULT_PROTOCOL, PROTOCOLS


def add_datasets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="list registered datasets and whether they are present")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                   help="MedMNIST root folder (default: %(default)s, as medmnist)")
    p.add_argument("--size", type=int, default=28, help="image size to check for (default: %(default)s)")
    p.add_argument("--check", metavar="NAME|PATH",
                   help="print one dataset's facts instead: split sizes, class balance, the majority-class rate, "
                        "exact duplicates within and across splits")
    p.add_argument("--near", action="store_true",
                   help="with --check: also count near-duplicates across splits (equal perceptual hashes)")
    p.set_defaults(func=cmd_datasets)


def add_methods(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help="list registered distillation methods")
    p.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'd*'")
    p.set_defaults(func=cmd_methods)


def add_protocols(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("protocols", help="list the named evaluation protocols with their settings and sources")
    p.set_defaults(func=cmd_protocols)


def cmd_datasets(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    if args.check:
        return _check_dataset(args.check, args.size, args.data_root.expanduser(), args.near)
    if args.near:
        raise MedbenchError("--near goes with --check NAME|PATH")
    rows = []
    for name in DATASETS.names():
        src = DATASETS.get(name)
        rows.append({
            "dataset": name, "classes": src.num_classes, "channels": src.channels,
            "sizes": ",".join(map(str, src.sizes)) or "any",
            f"present ({args.size} px)": "yes" if src.is_present(args.size, args.data_root.expanduser()) else "no",
            "license": src.license, "notes": f"unsupported: {src.unsupported}" if src.unsupported else "",
        })
    print(tabulate(rows, headers="keys", tablefmt="github"))
    print(f"\ndata root: {args.data_root.expanduser()}  ·  any MedMNIST-layout .npz path also works")
    return 0


def _check_dataset(ref: str, size: int, root: Path, with_near: bool = False) -> int:
    """``medbench datasets --check``: one dataset's facts, the duplicates between its splits first."""
    from tabulate import tabulate

    from medbench.data.catalog import load_dataset
    from medbench.data.duplicates import found, near

    splits = load_dataset(ref, size=size if ref in DATASETS else None, root=root)
    dup = found(splits)
    rows = []
    for name in ("train", "val", "test"):
        counts = getattr(splits, name).class_counts(splits.num_classes)
        rows.append({"split": name, "images": sum(counts), "per class": " ".join(map(str, counts)),
                     "majority class": f"{100 * max(counts) / max(sum(counts), 1):.1f} %",
                     "duplicates within": dup.within[name],
                     "also in train": {"train": "", "val": dup.val_in_train, "test": dup.test_in_train}[name],
                     "also in val": dup.test_in_val if name == "test" else ""})
    print(f"{splits.name}: {splits.num_classes} classes, {splits.channels} channel(s), {splits.size} px, "
          f"source {splits.source}")
    print(tabulate(rows, headers="keys", tablefmt="github"))
    print(f"\nExact duplicates (identical pixels): {dup.val_in_train} val and {dup.test_in_train} test images are "
          f"also training images, {dup.test_in_val} test images also val images. Scores count them as unseen; "
          "`medbench run --drop-duplicates` removes them from val and test (another dataset, never pooled).")
    if with_near:
        close = near(splits)
        print(f"Near-duplicates (equal perceptual hash, exact copies included): {close['val_in_train']} val and "
              f"{close['test_in_train']} test images look like a training image, {close['test_in_val']} test images "
              "like a val image. Check them by eye before dropping: distinct images can share a hash.")
    return 0


def cmd_protocols(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    shown = ("epochs", "augment", "lr", "batch_size", "width", "eval_models")
    rows = []
    for name in PROTOCOLS.names():
        preset = PROTOCOLS.get(name)
        settings = preset.build()
        rows.append({"protocol": name + (" (default)" if name == DEFAULT_PROTOCOL else ""),
                     **{k: getattr(settings, k) for k in shown}, "source": preset.source})
    print(tabulate(rows, headers="keys", tablefmt="github"))
    print("\nEvery protocol trains the ConvNet with SGD (momentum 0.9, weight decay 5e-4), the lr divided by 10 "
          "halfway, and a method's learned lr where it has one. Options of `medbench run` override single fields.")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    rows = [{"method": n, "description": get_method(n).description} for n in list_methods(args.pattern)]
    print(tabulate(rows, headers="keys", tablefmt="github") if rows else f"no method matches {args.pattern!r}")
    return 0
