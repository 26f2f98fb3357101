"""Cross-architecture evaluation: does a set distilled with the ConvNet also train other networks?

For each stored done cell with a condensed set, the set is evaluated again by the standard
:func:`medbench.evaluation.evaluate` under a protocol identical to the cell's except ``model``.
Each result is stored as a new cell (same method, dataset, IPC and seed; ``config.crossarch``
names the source cell). The new cell's ``protocol_id`` is the one ``medbench run --model ARCH``
would give, so it is compared with cells evaluated by that network; its ``cell_id`` also hashes
the source cell, so it never collides with a set that was *distilled* with that network.
Stored cells are skipped (resume).
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from medbench.core.devices import resolve_device
from medbench.core.errors import CellFailed, MedbenchError
from medbench.data.registry import DEFAULT_DATA_ROOT
from medbench.evaluation import Protocol, evaluate
from medbench.harness.grid import Cell, digest
from medbench.harness.runner import model_rows
from medbench.nn.models import MODELS
from medbench.storage.condensed_io import load_condensed
from medbench.storage.provenance import environment
from medbench.storage.store import CellRecord, Store
from medbench.storage.stored import StoredCell, load_cell_splits, open_store, stored_cell
from medbench.storage.summary import summarize

DEFAULT_ARCHS = ("convnet", "resnet18", "vgg11", "alexnet")


def _int_or_none(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def source_cells(store: Store, *, cells: str | None = None, methods: Sequence[str] = ()) -> list[StoredCell]:
    """Done cells with a condensed set that are not themselves cross-architecture results."""
    table = store.cells()
    table = table[(table.status == "done") & table.condensed_path.notna()]
    if cells:
        table = table[[fnmatch.fnmatchcase(c, cells) or c.startswith(cells) for c in table.cell_id]]
    if methods:
        table = table[table.method.isin(methods)]
    out = [stored_cell(store, row) for _, row in table.iterrows()]
    return [c for c in out if "crossarch" not in c.config]


def target(cell: StoredCell, arch: str) -> tuple[str, str, Protocol]:
    """(cell_id, protocol_id, protocol) of ``cell`` evaluated by ``arch``."""
    protocol = Protocol.from_record({**cell.config["protocol"], "model": arch})
    row = cell.row
    protocol_id = Cell(str(row.method), str(cell.config.get("dataset_ref", row.dataset)), _int_or_none(row["size"]),
                       _int_or_none(row.ipc), int(row.seed), dict(cell.config.get("params", {})),
                       protocol).protocol_id
    return digest(["crossarch", cell.cell_id, protocol.identity()]), protocol_id, protocol


def _record(cell: StoredCell, arch: str, cell_id: str, protocol_id: str, protocol: Protocol, scores: list,
            eval_seconds: float, device: Any) -> CellRecord:
    row = cell.row
    config = {**cell.config, "protocol": protocol.record(),
              "crossarch": {"source_cell": cell.cell_id, "source_protocol_id": str(row.protocol_id),
                            "source_model": cell.config["protocol"].get("model"), "model": arch}}
    return CellRecord(
        cell_id=cell_id, method=str(row.method), dataset=str(row.dataset), size=_int_or_none(row["size"]),
        ipc=_int_or_none(row.ipc), seed=int(row.seed), protocol_id=protocol_id, config=config,
        environment=environment(device), distill_seconds=None, eval_seconds=eval_seconds,
        condensed_images=_int_or_none(row.condensed_images), condensed_bytes=_int_or_none(row.condensed_bytes),
        compression_ratio=None if pd.isna(row.compression_ratio) else float(row.compression_ratio),
        condensed_path=str(cell.condensed_path),
        models=model_rows(scores),
    )


def run_crossarch(db: Path, archs: Sequence[str], *, cells: str | None = None, methods: Sequence[str] = (),
                  data_root: Path = DEFAULT_DATA_ROOT, device: str = "auto", retry_failed: bool = False,
                  log: Any = None) -> list[str]:
    """Evaluate every selected cell with every architecture; returns the ids of all target cells
    (new and already stored). Stored results are kept; failed ones are tried again only with
    ``retry_failed``, as in ``medbench run``."""
    unknown = [a for a in archs if a not in MODELS]
    if unknown:
        raise MedbenchError(f"unknown model {', '.join(unknown)}; available: {', '.join(MODELS.names())}")
    if not archs:
        raise MedbenchError("give at least one architecture with --archs")
    dev = resolve_device(device)
    targets: list[str] = []
    splits_cache: dict[tuple, Any] = {}
    with open_store(db, readonly=False) as store:  # adds the cross-architecture cells
        sources = source_cells(store, cells=cells, methods=methods)
        if not sources:
            raise MedbenchError(f"{db}: no done cell with a condensed set matches the selection")
        for cell in sources:
            for arch in archs:
                if arch == cell.config["protocol"].get("model"):
                    continue  # the source cell is this architecture's result
                cell_id, protocol_id, protocol = target(cell, arch)
                targets.append(cell_id)
                status = store.status(cell_id)
                if status == "done" or (status == "failed" and not retry_failed):
                    continue
                key = (cell.config.get("dataset_ref"), cell.row["size"])
                if key not in splits_cache:
                    splits_cache.clear()  # one dataset in memory at a time
                    splits_cache[key] = load_cell_splits(cell, data_root, dev)
                splits = splits_cache[key]
                condensed = load_condensed(cell.require_condensed())
                start = time.perf_counter()
                try:
                    scores = evaluate(condensed, splits, protocol, seed=int(cell.row.seed))
                except CellFailed as exc:
                    record = CellRecord(cell_id, str(cell.row.method), str(cell.row.dataset),
                                        _int_or_none(cell.row["size"]), _int_or_none(cell.row.ipc),
                                        int(cell.row.seed), protocol_id, {**cell.config, "protocol": protocol.record(),
                                        "crossarch": {"source_cell": cell.cell_id, "model": arch}},
                                        environment(dev), status="failed", message=str(exc))
                else:
                    record = _record(cell, arch, cell_id, protocol_id, protocol, scores,
                                     time.perf_counter() - start, dev)
                store.write(record)
                if log is not None:
                    print(f"crossarch: {cell.row.method} · {cell.row.dataset} · ipc {cell.row.ipc} · "
                          f"seed {cell.row.seed} · {arch}: {record.status}", file=log)
    return targets


def crossarch_table(store: Store, archs: Sequence[str] | None = None,
                    sources: Sequence[str] | None = None) -> pd.DataFrame:
    """Test accuracy and balanced accuracy of each source cell's network and every other
    architecture, and the drops (source − arch, percentage points; ``drop_pp`` for accuracy,
    ``bal_drop_pp`` for balanced accuracy), averaged over seeds per dataset, method and IPC.
    ``archs`` / ``sources`` restrict it to those architectures / source cell ids."""
    summary = summarize(store)
    if summary.empty:
        return pd.DataFrame()
    cells = store.cells()
    config = {r.cell_id: json.loads(r.config) for r in cells.itertuples()}
    acc = dict(zip(summary.cell_id, summary.test_accuracy, strict=True))
    bal = dict(zip(summary.cell_id, summary.test_balanced_accuracy, strict=True))
    failed = set(summary.cell_id[summary.status == "failed"])
    rows = []
    for cid, cfg in config.items():
        link = cfg.get("crossarch")
        if not link or link.get("source_cell") not in acc:
            continue
        if (archs is not None and link["model"] not in archs) or (sources is not None and
                                                                   link["source_cell"] not in sources):
            continue
        src = summary[summary.cell_id == link["source_cell"]].iloc[0]
        rows.append({"dataset": src.dataset, "method": src.method, "ipc": src.ipc, "seed": src.seed,
                     "source_model": link.get("source_model", "convnet"), "arch": link["model"],
                     "source_acc": acc[link["source_cell"]], "arch_acc": acc.get(cid, np.nan),
                     "source_bal": bal[link["source_cell"]], "arch_bal": bal.get(cid, np.nan),
                     "failed": cid in failed})
    if not rows:
        return pd.DataFrame()
    long = pd.DataFrame(rows)
    keys = ["dataset", "method", "ipc", "source_model"]
    long["ipc"] = long["ipc"].astype(str)
    per_arch = long.groupby([*keys, "arch"], as_index=False).agg(
        source_acc=("source_acc", "mean"), arch_acc=("arch_acc", "mean"), source_bal=("source_bal", "mean"),
        arch_bal=("arch_bal", "mean"), seeds=("seed", "nunique"), failed=("failed", "sum"))
    per_arch["drop_pp"] = 100 * (per_arch.source_acc - per_arch.arch_acc)
    per_arch["bal_drop_pp"] = 100 * (per_arch.source_bal - per_arch.arch_bal)
    return per_arch.sort_values([*keys, "arch"]).reset_index(drop=True)


METRIC_COLUMNS = {"accuracy": ("source_acc", "arch_acc", "drop_pp", "acc"),
                  "balanced_accuracy": ("source_bal", "arch_bal", "bal_drop_pp", "bal acc")}


def format_crossarch(table: pd.DataFrame, metric: str = "accuracy") -> str:
    """One row per dataset · method · IPC: the source network's ``metric`` (accuracy or
    balanced_accuracy), then each architecture's with the drop from the source in percentage points."""
    if table.empty:
        return "no cross-architecture results"
    source, arch, drop, short = METRIC_COLUMNS[metric]
    keys = ["dataset", "method", "ipc", "source_model"]
    rows = []
    for key, group in table.groupby(keys, sort=False):
        row: dict[str, Any] = dict(zip(keys, key, strict=True))
        row[f"source {short} %"] = f"{100 * getattr(group, source).iloc[0]:.1f}"
        for r in group.itertuples():
            value, change = getattr(r, arch), getattr(r, drop)
            shown = "failed" if r.failed and pd.isna(value) else "—"  # failed: `medbench results` has the reason
            row[f"{r.arch} % (drop pp)"] = shown if pd.isna(value) else f"{100 * value:.1f} ({change:+.1f})"
        row["seeds"] = int(group.seeds.max())
        rows.append(row)
    return tabulate(rows, headers="keys", tablefmt="github")


# --- command line -----------------------------------------------------------------------------






