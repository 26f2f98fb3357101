"""Do the GPU speed options change what evaluation networks learn? (issue 7)

Trains the same K networks (same seeds) on one real random subset under each trainer × speed
option of ``medbench bench --only options`` and prints test accuracy and balanced accuracy
(mean ± std over the networks) with the wall-clock of ``evaluate`` (training + scoring; the
first call of a compiled variant includes its compilation).

    python reports/bench/options_accuracy.py --data-root DIR [--dataset bloodmnist --ipc 10 --models 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from tabulate import tabulate

from medbench.bench.measure import OPTION_VARIANTS
from medbench.core.devices import resolve_device
from medbench.data.catalog import load_dataset
from medbench.distill.contract import DistillTask, get_method
from medbench.evaluation.protocol import Protocol, evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--dataset", default="bloodmnist")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--models", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", default="baseline,bf16,cuda_graphs")
    args = p.parse_args()
    device = resolve_device(args.device)
    splits = load_dataset(args.dataset, root=args.data_root).to(device)
    task = DistillTask(train=splits.train, val=splits.val, num_classes=splits.num_classes, ipc=args.ipc, seed=0,
                       device=device, normalize=splits.normalize)
    condensed = get_method("random").run(task, get_method("random").make_params())
    protocol = Protocol(eval_models=args.models)
    rows = []
    for trainer in ("sequential", "grouped"):
        for name in args.variants.split(","):
            variant = OPTION_VARIANTS[name]
            if variant.cuda_only and device.type != "cuda":
                continue
            start = time.perf_counter()
            scores = evaluate(condensed, splits, protocol, seed=0, batching=trainer, options=variant.options)
            seconds = time.perf_counter() - start
            acc = np.array([s.test["accuracy"] for s in scores]) * 100
            bal = np.array([s.test["balanced_accuracy"] for s in scores]) * 100
            rows.append([trainer, variant.label, f"{acc.mean():.2f} ± {acc.std(ddof=1):.2f}",
                         f"{bal.mean():.2f} ± {bal.std(ddof=1):.2f}", f"{seconds:.1f}"])
            print(rows[-1], flush=True)
    print(f"\n{args.dataset}, random subset (seed 0) at IPC {args.ipc}, {args.models} networks, "
          f"{protocol.epochs} epochs, torch {torch.__version__}, {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "") + "\n")
    print(tabulate(rows, headers=["trainer", "option", "test acc %", "balanced acc %", "seconds"],
                   tablefmt="github"))


if __name__ == "__main__":
    main()
