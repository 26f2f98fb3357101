"""The grid, protocol and data options ``run`` and ``tune`` share, and how they become a GridSpec:
built-in defaults, then the grid file or preset, then options given on the command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medbench.cli.types import int_list, positive, str_list
from medbench.core import hparams
from medbench.core.errors import MedbenchError
from medbench.core.files import read_yaml
from medbench.data.registry import DEFAULT_DATA_ROOT
from medbench.distill.budget import KINDS, Budget
from medbench.distill.contract import SELECTION_METRICS
from medbench.evaluation import Protocol
from medbench.evaluation.named import DEFAULT_PROTOCOL, PROTOCOLS, named_protocol
from medbench.evaluation.protocol import PRECISIONS
from medbench.harness.grid import GridSpec
from medbench.harness.gridfile import preset_path, read_grid_file
from medbench.storage.store import DEFAULT_DB

DEFAULTS = Protocol()


def parse_method_args(items: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``dc:lr_img=0.1,init=noise``, a YAML file ``{dc: {lr_img: 0.1}}``, or ``key=value`` when
    the grid has exactly one method."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if item.endswith((".yaml", ".yml")):
            loaded = read_yaml(item, "method arguments") or {}
            if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
                raise MedbenchError(f"{item}: expected a mapping of method name to its settings")
            for name, values in loaded.items():
                out.setdefault(str(name), {}).update(values)
            continue
        name, sep, rest = item.partition(":")
        if not sep or "=" in name:
            if len(methods) != 1:
                raise MedbenchError(f"--method-args {item!r}: say which method, e.g. dc:{item}")
            name, rest = methods[0], item
        out.setdefault(name, {}).update(hparams.parse_key_values(rest))
    return out


def add_grid_arguments(p: argparse.ArgumentParser) -> None:
    """The grid, protocol and data options ``run`` and ``tune`` share."""
    p.add_argument("grid", nargs="?", type=Path, help="a grid YAML file (see examples/)")
    p.add_argument("--preset", help="a named grid shipped with medbench, e.g. covid19-mtt")
    g = p.add_argument_group("grid")
    g.add_argument("--methods", type=str_list, help="comma-separated method names (default: random)")
    g.add_argument("--datasets", type=str_list,
                   help="comma-separated dataset names, MedMNIST-layout .npz paths or class folders "
                        "(default: bloodmnist)")
    g.add_argument("--ipc", type=int_list, help="images per class, comma-separated (default: 1,10,50)")
    g.add_argument("--seeds", type=int_list,
                   help="seeds, comma-separated: each is one random subset or one distillation run, the unit "
                        "of replication (default: 0,1,2)")
    g.add_argument("--size", type=int,
                   help="image size for MedMNIST sets (28, 64, 128, 224); default 28, or an npz file's own")
    g.add_argument("--method-args", action="append", default=[], metavar="SPEC",
                   help="method hyper-parameters: NAME:key=value,... or a YAML file {NAME: {key: value}}; "
                        "repeatable")
    g.add_argument("--drop-duplicates", action="store_true", default=None,
                   help="remove from val the images that are exact copies of training images, and from test those "
                        "that are copies of train or val images (another dataset: such cells never pool with others)")
    g.add_argument("--selection-metric", choices=SELECTION_METRICS,
                   help="the val score by which a method keeps its checkpoint, random:candidates=N its subset, "
                        "and a tuning trial is scored (default: balanced_accuracy; accuracy rewards predicting "
                        "the majority class of an imbalanced val split)")
    e = p.add_argument_group("evaluation protocol (one for every method; options below override the named one)")
    e.add_argument("--protocol",
                   help=f"named evaluation protocol: {', '.join(PROTOCOLS.names())} (default: {DEFAULT_PROTOCOL}; "
                        "`medbench protocols` lists their settings and sources)")
    e.add_argument("--eval-models", type=positive(int),
                   help=f"networks trained per cell (default: {DEFAULTS.eval_models})")
    e.add_argument("--epochs", type=positive(int),
                   help="training epochs per network (default: the protocol's; dsa: 1000, dc: 300)")
    e.add_argument("--full-epochs", type=positive(int),
                   help=f"epochs when training on the full training set (default: {DEFAULTS.full_epochs})")
    e.add_argument("--lr", type=positive(float),
                   help=f"SGD learning rate; a method's learned lr replaces it (default: {DEFAULTS.lr})")
    e.add_argument("--batch-size", type=positive(int), help=f"training batch size (default: {DEFAULTS.batch_size})")
    e.add_argument("--model", help=f"evaluation network (default: {DEFAULTS.model})")
    e.add_argument("--width", type=positive(int), help=f"ConvNet width (default: {DEFAULTS.width})")
    e.add_argument("--depth", type=positive(int), help="ConvNet depth (default: 3 for 28 px, 4 for 64, 5 for 128)")
    e.add_argument("--norm", choices=["instance", "batch", "none"], help=f"ConvNet norm (default: {DEFAULTS.norm})")
    e.add_argument("--eval-augment", dest="augment",
                   help="train-time augmentation of eval networks: none or dsa "
                        "(default: the protocol's; dsa: dsa, dc: none)")
    e.add_argument("--eval-precision", dest="precision", choices=PRECISIONS,
                   help="arithmetic of the eval networks' forward passes: fp32 or bf16 autocast; part of the "
                        "protocol (default: fp32; reports/bf16 compares them)")
    r = p.add_argument_group("data and storage")
    r.add_argument("--data-root", type=Path, help=f"MedMNIST root folder (default: {DEFAULT_DATA_ROOT})")
    r.add_argument("--download", action="store_true", default=None,
                   help="fetch missing MedMNIST files with medmnist's download (MD5-checked)")
    r.add_argument("--db", type=Path, help=f"SQLite results database (default: {DEFAULT_DB})")
    r.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: auto)")


PROTOCOL_OPTIONS = ("eval_models", "epochs", "full_epochs", "lr", "batch_size", "model", "width", "depth", "norm",
                    "augment", "precision")
GRID_OPTIONS = {"methods": "methods", "datasets": "datasets", "ipc": "ipcs", "seeds": "seeds", "size": "size",
                "data_root": "data_root", "download": "download", "db": "db", "device": "device",
                "retry_failed": "retry_failed", "workers": "workers", "executor": "executor",
                "ray_address": "ray_address", "eval_batching": "eval_batching",
                "eval_compile": "eval_compile", "tuned": "tuned",
                "selection_metric": "selection_metric", "matched_baselines": "matched_baselines", "wait": "wait",
                "drop_duplicates": "drop_duplicates", "memory_budget": "memory_budget"}


def grid_spec_from_args(args: argparse.Namespace) -> GridSpec:
    """Built-in defaults, then the grid file or preset, then options given on the command line."""
    if args.grid and args.preset:
        raise MedbenchError("give a grid file or --preset, not both")
    source = preset_path(args.preset) if args.preset else args.grid
    fields = read_grid_file(source) if source else {}
    protocol = dict(fields.pop("eval", {}))
    protocol.update({k: getattr(args, k) for k in PROTOCOL_OPTIONS if getattr(args, k) is not None})
    protocol_name = fields.pop("protocol_name", DEFAULT_PROTOCOL)
    protocol_name = args.protocol or protocol_name
    fields.update({field: getattr(args, opt) for opt, field in GRID_OPTIONS.items()
                   if getattr(args, opt, None) is not None})
    budgets = [Budget(kind, amount) for kind in KINDS for amount in getattr(args, f"budget_{kind}", None) or ()]
    if budgets:  # given on the command line: they replace the file's
        fields["budgets"] = tuple(budgets)
    methods = fields.get("methods", GridSpec.methods)
    method_args = fields.pop("method_args", {})
    for name, values in parse_method_args(args.method_args, methods).items():
        method_args.setdefault(name, {}).update(values)
    if "data_root" in fields:
        # Absolute: workers elsewhere (a process pool, Ray trials, a cluster) do not share this cwd.
        fields["data_root"] = Path(fields["data_root"]).expanduser().resolve()
    if "name" in protocol:
        raise MedbenchError("choose the protocol by name with --protocol (or `protocol:` in a grid file), "
                            "not as an eval setting")
    return GridSpec(**fields, method_args=method_args, protocol=named_protocol(protocol_name, protocol))
