"""Run a grid: load each dataset once, distil and evaluate every pending cell, store each one.

This is the only place that knows about grids, resume and progress. A cell is stored in one
transaction after it has been evaluated, so an interrupted run loses at most the cell in
progress, and the next run skips every stored cell.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from itertools import groupby
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from medbench.data.catalog import load_dataset
from medbench.data.splits import Splits
from medbench.errors import CellFailed, MedbenchError
from medbench.evaluation import evaluate
from medbench.harness.grid import Cell, GridSpec, expand, resolve_device
from medbench.method import CondensedSet, DistillTask, get_method
from medbench.storage.condensed_io import save_condensed
from medbench.storage.provenance import environment
from medbench.storage.store import CellRecord, ModelRow, Store
from medbench.summary import summarize


class _Bar:
    """One progress bar per cell, re-labelled for each phase; silent when progress is off."""

    def __init__(self, enabled: bool, position: int) -> None:
        self.enabled = enabled
        self.position = position
        self.bar: tqdm | None = None

    def phase(self, label: str) -> None:
        self.close()
        if self.enabled:
            self.bar = tqdm(total=1, desc=label, position=self.position, leave=False, file=sys.stderr,
                            dynamic_ncols=True)

    def update(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.update(done - self.bar.n)  # update() honours tqdm's refresh interval

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _check_ipc(cells: list[Cell], splits: Splits) -> None:
    smallest = min(splits.train.class_counts(splits.num_classes))
    too_big = sorted({c.ipc for c in cells if c.ipc is not None and c.ipc > smallest})
    if too_big:
        raise MedbenchError(
            f"{splits.name}: IPC {', '.join(map(str, too_big))} exceeds the smallest class "
            f"({smallest} training images)"
        )


def _condensed_path(db: Path, cell: Cell) -> Path:
    return db.parent / "condensed" / f"{cell.cell_id}.npz"


def _validate_output(condensed: CondensedSet, splits: Splits, method: str) -> None:
    expected = (splits.channels, splits.size, splits.size)
    if condensed.images.ndim != 4 or tuple(condensed.images.shape[1:]) != expected:
        raise MedbenchError(f"method {method} returned images of shape {tuple(condensed.images.shape)}, "
                            f"expected N×{'×'.join(map(str, expected))}")
    if not torch.isfinite(condensed.images).all():
        raise CellFailed(f"method {method} returned non-finite images")


def run_cell(cell: Cell, splits: Splits, db: Path, bar: _Bar) -> CellRecord:
    """Distil and evaluate one cell. Raises CellFailed when the method cannot finish."""
    method = get_method(cell.method)
    params = method.make_params(cell.params)
    device = splits.device
    checkpoint_dir = db.parent / "checkpoints" / cell.cell_id
    task = DistillTask(
        train=splits.train, val=splits.val, num_classes=splits.num_classes, ipc=cell.ipc or 0,
        seed=cell.seed, device=device, normalize=splits.normalize, model=cell.protocol.model_spec(),
        checkpoint_dir=checkpoint_dir, progress=bar.update,
    )
    torch.manual_seed(cell.seed)  # for methods that draw from the global generator
    bar.phase(f"distil {cell.label}")
    start = time.perf_counter()
    condensed = method.run(task, params).detach()
    distill_seconds = time.perf_counter() - start
    _validate_output(condensed, splits, cell.method)

    bar.phase(f"eval   {cell.label}")
    start = time.perf_counter()
    scores = evaluate(condensed, splits, cell.protocol, seed=cell.seed, full=not method.uses_ipc,
                      on_epoch=bar.update)
    eval_seconds = time.perf_counter() - start

    path = None
    if method.uses_ipc:  # the full training set is not copied again next to the database
        path = _condensed_path(db, cell)
        save_condensed(path, condensed, splits)
    n_images = len(condensed)
    return CellRecord(
        cell_id=cell.cell_id, method=cell.method, dataset=splits.name, size=splits.size, ipc=cell.ipc,
        seed=cell.seed, protocol_id=cell.protocol_id,
        config={"method": cell.method, "params": cell.params, "protocol": asdict(cell.protocol),
                "dataset_ref": cell.dataset, "dataset": splits.describe(), "condensed_info": condensed.info},
        environment=environment(device),
        distill_seconds=distill_seconds, eval_seconds=eval_seconds, condensed_images=n_images,
        condensed_bytes=condensed.images.numel() * 4,  # float32, as stored
        compression_ratio=n_images / len(splits.train),
        condensed_path=str(path) if path else None,
        models=[ModelRow(s.index, s.seed, s.lr, s.epochs, s.train_seconds, {"val": s.val, "test": s.test})
                for s in scores],
    )


def _failed_record(cell: Cell, splits: Splits, message: str) -> CellRecord:
    return CellRecord(
        cell_id=cell.cell_id, method=cell.method, dataset=splits.name, size=splits.size, ipc=cell.ipc,
        seed=cell.seed, protocol_id=cell.protocol_id, status="failed", message=message,
        config={"method": cell.method, "params": cell.params, "protocol": asdict(cell.protocol),
                "dataset_ref": cell.dataset, "dataset": splits.describe()},
        environment=environment(splits.device),
    )


@contextmanager
def _overall_bar(total: int, initial: int, enabled: bool) -> Iterator[tqdm | None]:
    if not enabled:
        yield None
        return
    bar = tqdm(total=total, initial=initial, desc="cells", position=0, file=sys.stderr, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def run_grid(spec: GridSpec, *, progress: bool = True) -> pd.DataFrame:
    """Run every pending cell of ``spec`` and return the summary of all its cells."""
    cells = expand(spec)
    device = resolve_device(spec.device)
    db = Path(spec.db)
    with Store(db) as store:
        skip = {"done", "failed"} if not spec.retry_failed else {"done"}
        pending = [c for c in cells if store.status(c.cell_id) not in skip]
        bar = _Bar(progress, position=1)
        with _overall_bar(len(cells), len(cells) - len(pending), progress) as overall:
            for dataset, group in groupby(pending, key=lambda c: c.dataset):
                group = list(group)
                splits = load_dataset(dataset, size=spec.size, root=spec.data_root,
                                      download=spec.download).to(device)
                _check_ipc(group, splits)
                for cell in group:
                    try:
                        record = run_cell(cell, splits, db, bar)
                    except CellFailed as exc:
                        record = _failed_record(cell, splits, str(exc))
                        tqdm.write(f"medbench: {cell.label} failed: {exc}", file=sys.stderr)
                    finally:
                        bar.close()
                    store.write(record)
                    shutil.rmtree(db.parent / "checkpoints" / cell.cell_id, ignore_errors=True)
                    if overall is not None:
                        overall.update(1)
        return summarize(store, [c.cell_id for c in cells])
