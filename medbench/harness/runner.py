"""Run a grid: distil and evaluate every pending cell, store each one as it finishes.

This is the only place that knows about grids, resume, executors and progress. Cells run
in-process (default), in a local process pool (``workers``) or as Ray tasks; whichever runs a
cell returns its record and condensed set, and the driver alone writes files and the database,
so SQLite is never written concurrently. A cell is stored in one transaction once evaluated:
an interrupted run loses at most the cells in progress, and the next run skips stored cells.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from functools import lru_cache
from itertools import groupby
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from medbench.core.devices import default_memory_budget, resolve_device
from medbench.core.errors import CellFailed, GridUnfinished, MedbenchError
from medbench.core.files import check_writable
from medbench.core.signals import check as check_signals
from medbench.data import duplicates
from medbench.data.catalog import load_dataset
from medbench.data.splits import Splits
from medbench.distill.contract import CondensedSet, DistillTask, get_method
from medbench.evaluation import ModelScore, evaluate
from medbench.harness.claims import Claims
from medbench.harness.grid import Cell, GridSpec, added_baselines, expand
from medbench.nn.batched import compile_options
from medbench.storage.condensed_io import save_condensed
from medbench.storage.provenance import environment
from medbench.storage.store import CellRecord, ModelRow, Store
from medbench.storage.summary import summarize

Outcome = tuple[CellRecord, CondensedSet | None]


class _Bar:
    """One progress bar per cell, re-labelled for each phase; silent when progress is off."""

    def __init__(self, enabled: bool, position: int = 1) -> None:
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


def check_ipc(cells: Iterable[Cell], splits: Splits) -> None:
    smallest = min(splits.train.class_counts(splits.num_classes))
    too_big = sorted({c.ipc for c in cells if c.ipc is not None and c.ipc > smallest})
    if too_big:
        raise MedbenchError(
            f"{splits.name}: IPC {', '.join(map(str, too_big))} exceeds the smallest class "
            f"({smallest} training images)"
        )


def _validate_output(condensed: CondensedSet, splits: Splits, method: str) -> None:
    expected = (splits.channels, splits.size, splits.size)
    if condensed.images.ndim != 4 or tuple(condensed.images.shape[1:]) != expected:
        raise MedbenchError(f"method {method} returned images of shape {tuple(condensed.images.shape)}, "
                            f"expected N×{'×'.join(map(str, expected))}")
    if not torch.isfinite(condensed.images).all():
        raise CellFailed(f"method {method} returned non-finite images")


def _base_record(cell: Cell, splits: Splits, **fields) -> CellRecord:
    return CellRecord(
        cell_id=cell.cell_id, method=cell.method, dataset=splits.name, size=splits.size, ipc=cell.ipc,
        seed=cell.seed, protocol_id=cell.protocol_id,
        config={"method": cell.method, "params": cell.params, "protocol": cell.protocol.record(),
                "dataset_ref": cell.dataset, "dataset": splits.describe(),
                **({"tuning": cell.tuning} if cell.tuning else {}),
                **({"selection_metric": cell.selection} if cell.selects else {}),
                **({cell.budget.key: cell.budget.amount} if cell.budget is not None else {}),
                **fields.pop("config", {})},
        environment=environment(splits.device), **fields,
    )


def fingerprint(condensed: CondensedSet) -> str:
    """sha256 of a condensed set's images, labels and extras: equal digests, the same training set
    (herding and k-center at IPC 1, a budgeted run that is its full run), shown once in reports."""
    digest = hashlib.sha256()
    for tensor in (condensed.images, condensed.labels, *(condensed.extras[k] for k in sorted(condensed.extras))):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_rows(scores: Iterable[ModelScore]) -> list[ModelRow]:
    """The store's rows for the evaluation networks of one cell."""
    return [ModelRow(s.index, s.seed, s.lr, s.epochs, s.train_seconds, {"val": s.val, "test": s.test},
                     s.test_predicted) for s in scores]


def run_cell(cell: Cell, splits: Splits, workdir: Path, bar: _Bar | None = None, batching: str = "auto",
             compile_mode: str = "off", memory_budget: int | None = None) -> Outcome:
    """Distil and evaluate one cell; a method that cannot finish gives a failed record."""
    bar = bar or _Bar(False)
    method = get_method(cell.method)
    params = method.make_params(cell.params)
    task = DistillTask(
        train=splits.train, val=splits.val, num_classes=splits.num_classes, ipc=cell.ipc or 0,
        seed=cell.seed, device=splits.device, normalize=splits.normalize, model=cell.protocol.model_spec(),
        checkpoint_dir=workdir / "checkpoints" / cell.cell_id, progress=bar.update, budget=cell.budget,
        selection_metric=cell.selection, memory_budget=memory_budget,
    )
    torch.manual_seed(cell.seed)  # for methods that draw from the global generator
    try:
        bar.phase(f"distil {cell.label}")
        start = time.perf_counter()
        condensed = method.run(task, params).detach()
        distill_seconds = time.perf_counter() - start
        _validate_output(condensed, splits, cell.method)
    except CellFailed as exc:
        return _base_record(cell, splits, status="failed", message=str(exc)), None
    finally:
        bar.close()

    bar.phase(f"eval   {cell.label}")
    start = time.perf_counter()
    try:
        scores = evaluate(condensed, splits, cell.protocol, seed=cell.seed, full=not method.uses_ipc,
                          on_epoch=bar.update, batching=batching, options=compile_options(compile_mode))
    except CellFailed as exc:  # the distilled set is kept (saved beside the db): only its evaluation failed
        record = _base_record(cell, splits, config={"condensed_info": condensed.info}, status="failed",
                              message=str(exc), distill_seconds=distill_seconds)
        return record, condensed if method.uses_ipc else None
    finally:
        bar.close()
    n_images = len(condensed)
    record = _base_record(
        cell, splits, config={"condensed_info": condensed.info, "condensed_sha256": fingerprint(condensed)},
        distill_seconds=distill_seconds, eval_seconds=time.perf_counter() - start, condensed_images=n_images,
        condensed_bytes=condensed.images.numel() * 4,  # float32, as stored
        compression_ratio=n_images / len(splits.train),
        models=model_rows(scores), test_labels=splits.test.labels.cpu().numpy().astype(np.int16),
    )
    # The full training set is not copied again next to the database.
    return record, condensed if method.uses_ipc else None


# --- executors ------------------------------------------------------------------------------


@lru_cache(maxsize=2)
def _load(ref: str, size: int | None, root: str, download: bool, device: str, drop: bool = False) -> Splits:
    # Each process keeps its last datasets on the device, so cells of a dataset do not reload it.
    return load_dataset(ref, size=size, root=Path(root), download=download, drop_duplicates=drop).to(device)


def _prepare(cells: list[Cell], spec: GridSpec, device: torch.device, progress: bool) -> None:
    """Run each method's once-per-dataset work (e.g. MTT's expert buffer) before its cells."""
    bar = _Bar(progress)
    for (ref, size, drop), group in groupby(cells, key=lambda c: (c.dataset, c.size, c.drop_duplicates)):
        jobs = {}
        for cell in group:
            method = get_method(cell.method)
            if method.prepare is not None:
                jobs.setdefault((cell.method, repr(sorted(cell.params.items()))), (method, cell))
        for method, cell in jobs.values():
            splits = _load(ref, size, str(spec.data_root), spec.download, str(device), drop)
            bar.phase(f"prepare {cell.method} · {Path(ref).stem}")
            try:
                method.prepare(splits, method.make_params(cell.params), cell.protocol.model_spec(), bar.update)
            finally:
                bar.close()


def _run_local(cells: Iterable[Cell], spec: GridSpec, device: torch.device, progress: bool) -> Iterator[Outcome]:
    """In-process, one cell at a time (each taken only when it starts); a dataset is loaded once and
    kept on the device for its cells (``_load`` caches it; :func:`validate` checked them)."""
    bar = _Bar(progress)
    for cell in cells:
        splits = _load(cell.dataset, cell.size, str(spec.data_root), spec.download, str(device), cell.drop_duplicates)
        yield run_cell(cell, splits, spec.db.parent, bar, batching=spec.eval_batching,
                       compile_mode=spec.eval_compile, memory_budget=_memory_budget(spec.memory_budget, device, 1))


def _memory_budget(gib: float | None, device: torch.device | str, processes: int) -> int:
    """``--memory-budget`` in bytes, or the default of this machine shared by ``processes`` workers."""
    return int(gib * 2**30) if gib is not None else default_memory_budget(device, processes)


def execute_cell(cell: Cell, root: str, download: bool, device: str, workdir: str, batching: str,
                 compile_mode: str, memory_gib: float | None, threads: int) -> Outcome:
    """Run one cell in a worker process (pool or Ray): load (cached), check, distil, evaluate. The
    default memory budget is this machine's, shared by as many workers as its cores hold."""
    torch.set_num_threads(threads)
    splits = _load(cell.dataset, cell.size, root, download, device, cell.drop_duplicates)
    check_ipc([cell], splits)
    budget = _memory_budget(memory_gib, device, max(1, (os.cpu_count() or 1) // threads))
    return run_cell(cell, splits, Path(workdir), batching=batching, compile_mode=compile_mode, memory_budget=budget)


def _worker_args(spec: GridSpec, device: torch.device) -> tuple:
    threads = max(1, (os.cpu_count() or 1) // spec.workers)
    return (str(spec.data_root), spec.download, str(device), str(spec.db.parent.resolve()), spec.eval_batching,
            spec.eval_compile, spec.memory_budget, threads)


def _ignore_interrupts() -> None:
    """Pool workers leave Ctrl-C to the driver, which stops them (no traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_pool(cells: Iterable[Cell], spec: GridSpec, device: torch.device) -> Iterator[Outcome]:
    """At most ``workers`` cells in flight: the next cell is taken (claimed) only when a worker is
    free, so another process on the same database can take the ones after it."""
    args = _worker_args(spec, device)
    todo = iter(cells)
    # spawn, not fork: forking a process that already holds torch threads (or CUDA) is unsafe.
    pool = ProcessPoolExecutor(spec.workers, mp_context=get_context("spawn"), initializer=_ignore_interrupts)
    pending: set = set()
    finished = False
    try:
        while True:
            while len(pending) < spec.workers and (cell := next(todo, None)) is not None:
                pending.add(pool.submit(execute_cell, cell, *args))
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
        finished = True
    finally:
        if not finished:
            # Interrupted (Ctrl-C, SIGTERM) or failed: start nothing new and stop the cells in
            # progress now rather than wait for them; what is stored stays stored.
            for process in list(getattr(pool, "_processes", {}).values()):  # no public API for this
                process.terminate()
        pool.shutdown(wait=finished, cancel_futures=True)


def _run_ray(cells: Iterable[Cell], spec: GridSpec, device: torch.device) -> Iterator[Outcome]:
    try:
        import ray
    except ImportError:
        raise MedbenchError("--executor ray needs Ray: pip install 'ray>=2.9'") from None
    if not ray.is_initialized():
        ray.init(address=spec.ray_address, include_dashboard=False, log_to_driver=False)
    args = _worker_args(spec, device)
    task = ray.remote(num_cpus=args[-1], num_gpus=1 if device.type == "cuda" else 0)(execute_cell)
    # As many cells in flight as the cluster runs at once; the rest are taken (claimed) as they free up.
    window = max(spec.workers, int(ray.cluster_resources().get("CPU", 1)) // args[-1])
    todo = iter(cells)
    pending: list = []
    try:
        while True:
            while len(pending) < window and (cell := next(todo, None)) is not None:
                pending.append(task.remote(cell, *args))
            if not pending:
                break
            done, pending = ray.wait(pending, num_returns=1)
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                cause = exc.as_instanceof_cause()
                raise (cause if isinstance(cause, MedbenchError) else exc) from None
    finally:
        for ref in pending:
            ray.cancel(ref)


def _outcomes(cells: Iterable[Cell], spec: GridSpec, device: torch.device, progress: bool) -> Iterator[Outcome]:
    if spec.executor == "ray":
        return _run_ray(cells, spec, device)
    if spec.executor == "process" or spec.workers > 1:
        return _run_pool(cells, spec, device)
    return _run_local(cells, spec, device, progress)


def validate(cells: list[Cell], spec: GridSpec) -> list[Splits]:
    """Load every dataset of the cells still to run (on the CPU) and check every cell against it
    (IPC within the smallest class, a network that builds, the method's own pre-flight check such
    as a share package's checksum and shape) before anything is written: a bad file or IPC in the
    last dataset must not leave a database, the first dataset's cells, or a class-folder cache made
    for this grid behind. Returns the datasets it loaded."""
    loaded: list[Splits] = []
    try:
        for (ref, size, drop), group in groupby(cells, key=lambda c: (c.dataset, c.size, c.drop_duplicates)):
            group = list(group)
            splits = _load(ref, size, str(spec.data_root), spec.download, "cpu", drop)
            loaded.append(splits)
            check_ipc(group, splits)
            for protocol in {c.protocol for c in group}:  # an unknown model or an impossible depth fails here
                protocol.model_spec().build(splits.channels, splits.num_classes, splits.size)
            for cell in group:
                method = get_method(cell.method)
                if method.preflight is not None:
                    method.preflight(method.make_params(cell.params), splits, cell.ipc)
    except MedbenchError:
        for splits in loaded:  # caches made by these loads (class-folder conversions, image hashes)
            for file in splits.meta.get("created_files", []):
                Path(file).unlink(missing_ok=True)
            for folder in sorted(splits.meta.get("created_dirs", []), key=len, reverse=True):
                with contextlib.suppress(OSError):  # only if empty: another grid's cache stays
                    Path(folder).rmdir()
        _load.cache_clear()
        raise
    return loaded


def _has_content(path: Path) -> bool:
    """An existing, non-empty file (an empty one, e.g. left by an old version, is a new database)."""
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:  # e.g. a name too long: Store explains it in one line
        return False


def run_grid(spec: GridSpec, *, progress: bool = True) -> pd.DataFrame:
    """Run every pending cell of ``spec`` and return the summary of all its cells."""
    cells = expand(spec)
    device = resolve_device(spec.device)
    db = Path(spec.db)
    check_writable(db, folder=False, what="--db")
    spec = dataclasses.replace(spec, db=db)
    skip = {"done"} if spec.retry_failed else {"done", "failed"}
    if _has_content(db):  # read-only: a foreign file is refused here, and nothing is created yet
        with Store(db, readonly=True) as existing:
            loaded = validate([c for c in cells if existing.status(c.cell_id) not in skip], spec)
    else:
        loaded = validate(cells, spec)
    for splits in loaded:  # the grid is good: now say what a reader of its scores must know
        line = duplicates.found(splits).line(splits.name) if "duplicates" in splits.meta else ""
        if line:
            print(line, file=sys.stderr)
    with Store(db) as store, Claims(db) as claims:
        pending = [c for c in cells if store.status(c.cell_id) not in skip]
        claimed = _claimed(pending, store, claims, skip, wait=spec.wait)
        overall = tqdm(total=len(cells), initial=len(cells) - len(pending), desc="cells", position=0,
                       file=sys.stderr, dynamic_ncols=True, disable=not progress)
        try:
            _prepare(pending, spec, device, progress)
            check_signals()  # one that arrived while imports ran is raised here, before any work
            for record, condensed in _outcomes(claimed, spec, device, progress):
                written = None
                try:
                    if condensed is not None:
                        path = db.parent / "condensed" / f"{record.cell_id}.npz"
                        stats = record.config["dataset"]
                        save_condensed(path, condensed, stats["mean"], stats["std"])
                        written = path
                        record = dataclasses.replace(record, condensed_path=str(path.resolve()))
                    store.write(record)
                except (OSError, sqlite3.Error) as exc:
                    if written is not None:  # no condensed file without its cell (its checkpoints stay)
                        written.unlink(missing_ok=True)
                    raise MedbenchError(f"cannot store the result of {record.method} · {record.dataset} · ipc "
                                        f"{record.ipc} · seed {record.seed} ({exc}): is the disk full or the "
                                        f"folder not writable? Cells stored before are kept") from None
                if record.status == "failed":
                    tqdm.write(f"medbench: {record.method} · {record.dataset} · ipc {record.ipc} failed: "
                               f"{record.message}", file=sys.stderr)
                shutil.rmtree(db.parent / "checkpoints" / record.cell_id, ignore_errors=True)
                overall.update(1)
                check_signals()
        finally:
            overall.close()
        if added_baselines(cells):  # said at the end: an error earlier stays one line
            print(added_baselines(cells), file=sys.stderr)
        left = sum(not _finished(c, store, claims, skip) for c in pending)
        if left:  # only with --no-wait: the others are computing them
            raise GridUnfinished(left, db)
        return summarize(store, [c.cell_id for c in cells])


POLL_SECONDS = 2.0


def _finished(cell: Cell, store: Store, claims: Claims, skip: set[str]) -> bool:
    """Stored with a status the run skips, or stored by any process (this one too) since it began:
    a retried cell that failed again is finished, not pending."""
    stored = store.stored_at(cell.cell_id)
    return stored is not None and (store.status(cell.cell_id) in skip or stored >= claims.started)


def _claimed(pending: list[Cell], store: Store, claims: Claims, skip: set[str], *, wait: bool) -> Iterator[Cell]:
    """The cells this process computes, taken one at a time as they start (another process on the
    database takes the others). Then, with ``wait``, the cells other processes hold: polled until
    each is stored, or taken over once its claim is dead (at once on this machine, after the
    heartbeat expiry elsewhere), so a run returns only when its whole grid is stored."""
    mine: set[str] = set()  # taken by this process: being computed or stored (never taken twice)
    for cell in pending:
        if claims.take(cell.cell_id, skip):
            mine.add(cell.cell_id)
            yield cell
    while wait:
        left = [c for c in pending if c.cell_id not in mine and not _finished(c, store, claims, skip)]
        if not left:
            return
        taken = [c for c in left if claims.take(c.cell_id, skip)]
        for cell in taken:
            mine.add(cell.cell_id)
            yield cell
        if not taken:
            time.sleep(POLL_SECONDS)
            check_signals()
