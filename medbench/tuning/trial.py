"""One tuning trial: distil one cell with sampled hyper-parameters, scoring its checkpoints on val.

This is what Ray Tune runs in its workers. It loads the dataset, keeps only the training and
validation splits (the test split is dropped before anything else happens: tuning never reads it),
and reports every val-scored checkpoint of the method (``DistillTask.on_checkpoint``) so the
scheduler can stop poor trials early. The method chooses its checkpoint by the objective (the
task's selection metric), so the best checkpoint score so far is the score of the set it would
keep, and the final score is the ``val_score`` of the set it returns.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medbench.core.devices import resolve_device
from medbench.core.errors import CellFailed, MedbenchError
from medbench.data.catalog import load_dataset
from medbench.data.splits import Splits
from medbench.distill.contract import SELECTION_METRICS, DistillTask, get_method
from medbench.nn.models import ModelSpec

OBJECTIVES = SELECTION_METRICS


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides the sampled values: plain data, so Ray can ship it."""

    method: str
    dataset: str
    size: int | None
    ipc: int
    seed: int
    params: dict[str, Any]  # the method's other settings (fixed during the search)
    model: ModelSpec
    objective: str  # the selection metric: the method chooses its checkpoint by it, the trial is scored by it
    data_root: str
    device: str = "cpu"
    checkpoint_dir: str | None = None  # per-trial resumable state (None: none)


def load_splits(context: TrialContext) -> Splits:
    """The dataset on the trial's device, with the test split removed."""
    splits = load_dataset(context.dataset, size=context.size, root=Path(context.data_root))
    device = resolve_device(context.device)
    return dataclasses.replace(splits, train=splits.train.to(device), val=splits.val.to(device), test=None)


def run_trial(config: dict[str, Any], context: TrialContext,
              report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Distil with ``params`` updated by ``config``; ``report`` receives, per checkpoint, the best
    objective so far, the checkpoint's iteration and cumulative distillation seconds. Returns the
    final result (``status`` done, or failed with its one-line ``message`` and objective 0)."""
    method = get_method(context.method)
    splits = load_splits(context)
    best = {"value": -math.inf, "checkpoints": 0, "seconds": 0.0}

    def on_checkpoint(iteration: int, seconds: float, scores: dict[str, float]) -> None:
        best["value"] = max(best["value"], scores[context.objective])
        best["checkpoints"] += 1
        best["seconds"] = seconds
        report({"objective": best["value"], "iteration": iteration, "distill_seconds": seconds})

    start = time.perf_counter()
    try:
        params = method.make_params({**context.params, **config})
        task = DistillTask(
            train=splits.train, val=splits.val, num_classes=splits.num_classes, ipc=context.ipc, seed=context.seed,
            device=splits.device, normalize=splits.normalize, model=context.model,
            checkpoint_dir=Path(context.checkpoint_dir) if context.checkpoint_dir else None,
            on_checkpoint=on_checkpoint, selection_metric=context.objective)
        torch.manual_seed(context.seed)
        condensed = method.run(task, params)
    except (CellFailed, MedbenchError) as exc:  # a diverged or impossible configuration scores nothing
        report({"objective": 0.0, "iteration": -1, "distill_seconds": time.perf_counter() - start})
        return {"objective": 0.0, "status": "failed", "message": str(exc), "checkpoints": best["checkpoints"],
                "seconds": time.perf_counter() - start}
    # The score of the set the method returns (its own record of it where it keeps one).
    value = float(condensed.info.get("val_score", best["value"]))
    return {"objective": value, "status": "done", "message": "", "checkpoints": best["checkpoints"],
            "seconds": time.perf_counter() - start}
