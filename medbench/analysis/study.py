"""A results database analysed under one report metric: the input of every leaderboard.

Reads the done cells once, names their rows (:func:`frames.method_variants`), merges rows whose
sets are identical (:func:`pairing.identical_rows`), finds each row's matched baseline
(:func:`pairing.matched_baselines`), bootstraps the test images where predictions are stored
(:mod:`testset`) and gives every table its verdict (:func:`verdicts.analyse_table`) and every
(protocol, IPC) its ranking across datasets (:func:`ranking.rank_methods`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medbench.analysis.frames import POOLED, is_baseline, method_variants
from medbench.analysis.pairing import identical_rows, matched_baselines
from medbench.analysis.ranking import Ranking, rank_methods
from medbench.analysis.seeds import seed_means
from medbench.analysis.testset import BOOTSTRAP_METRICS, N_BOOT, cell_bootstrap, chance_level, resample_weights
from medbench.analysis.verdicts import FULL, TableVerdict, analyse_table
from medbench.core.errors import MedbenchError
from medbench.evaluation.metrics import METRICS
from medbench.storage.store import Store

METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1",
                "auc": "AUC (one-vs-rest)"}
DEFAULT_METRIC = "balanced_accuracy"


def table_key(row: pd.Series | tuple) -> tuple:
    """(protocol_id, dataset, size, IPC) with sizes and IPCs as ints or None."""
    pid, dataset, size, ipc = (row[c] for c in POOLED) if isinstance(row, pd.Series) else row
    return (pid, dataset, None if pd.isna(size) else int(size), None if pd.isna(ipc) else int(ipc))


@dataclass
class Study:
    """Everything a report shows, computed once."""

    metric: str
    cells: pd.DataFrame  # done cells, ``method`` = the row's display name (merged rows once)
    values: pd.DataFrame  # per evaluation network and metric (test), display names
    per_seed: pd.DataFrame  # seeds.seed_means of ``values``
    baselines: dict[tuple, str]  # (protocol, dataset, size, IPC, row) -> its matched baseline's row
    merged: dict[tuple, str]  # (protocol, dataset, size, IPC, variant) -> merged row name
    facts: dict[tuple, dict]  # (dataset, size) -> dataset facts
    tables: dict[tuple, TableVerdict] = field(default_factory=dict)
    rankings: list[Ranking] = field(default_factory=list)
    bootstrapped: int = 0  # cells whose test predictions were bootstrapped

    def verdict(self, protocol_id: str, dataset: str, size: object, ipc: object) -> TableVerdict | None:
        return self.tables.get(table_key((protocol_id, dataset, size, ipc)))


def dataset_facts(cells: pd.DataFrame) -> dict[tuple, dict]:
    """(dataset, size) -> the dataset facts stored with its cells, merged over cells (older cells
    lack facts that later versions store, such as class counts)."""
    out: dict[tuple, dict] = {}
    for _, c in cells.iterrows():
        key = (c.dataset, None if pd.isna(c["size"]) else int(c["size"]))
        out.setdefault(key, {}).update(json.loads(c.config).get("dataset") or {})
    return out


def test_counts(facts: dict) -> list[int]:
    return list((facts.get("class_counts") or {}).get("test") or [])


def analyse(store: Store, *, metric: str = DEFAULT_METRIC, db: Path | None = None, n_boot: int = N_BOOT,
            seed: int = 0) -> Study:
    """The :class:`Study` of every done cell of ``store`` in ``metric`` (test split)."""
    if metric not in METRICS:
        raise MedbenchError(f"unknown metric {metric!r}; choose {', '.join(METRICS)}")
    cells = store.cells()
    cells = cells[cells.status == "done"].copy()
    cells["method"] = cells.cell_id.map(method_variants(cells))
    baselines = matched_baselines(cells)
    merged = identical_rows(cells, db)
    # A merged row keeps the cells of its first member; the others' cells are the same sets.
    first = {name: name.split(" = ")[0] for name in merged.values()}
    keys = [(*table_key(r), r.method) for _, r in cells.iterrows()]
    keep = [k not in merged or first[merged[k]] == k[-1] for k in keys]
    cells = cells[keep].copy()
    cells["method"] = [merged.get((*table_key(r), r.method), r.method) for _, r in cells.iterrows()]
    baselines = {(*key[:4], merged.get(key, key[4])): merged.get((*key[:4], base), base)
                 for key, base in baselines.items()}
    scores = store.scores(list(cells.cell_id))
    scores = scores[scores.split == "test"].dropna(subset=["value"])
    keep_cols = ["cell_id", "method", "dataset", "size", "ipc", "seed", "protocol_id", "compression_ratio",
                 "condensed_images"]
    values = scores.merge(cells[keep_cols], on="cell_id")
    values["size"] = values["size"].astype("Int64")
    values["ipc"] = values["ipc"].astype("Int64")
    facts = dataset_facts(cells)
    study = Study(metric, cells, values, seed_means(values), baselines, merged, facts)
    boot = _bootstrap(store, cells, metric, facts, n_boot, seed)
    study.bootstrapped = len(boot)
    _verdicts(study, boot)
    _rankings(study)
    return study


def _bootstrap(store: Store, cells: pd.DataFrame, metric: str, facts: dict, n_boot: int,
               seed: int) -> dict[str, np.ndarray]:
    """cell_id -> (n_boot,) values of ``metric`` on resampled test images (same resamples per dataset)."""
    if metric not in BOOTSTRAP_METRICS:
        return {}
    predictions = store.predictions(list(cells.cell_id))
    weights: dict[int, np.ndarray] = {}
    out = {}
    for _, cell in cells.iterrows():
        found = predictions.get(cell.cell_id)
        if found is None:
            continue
        n = found.shape[1]
        if n not in weights:
            weights[n] = resample_weights(n, n_boot, seed)
        classes = int(facts.get((cell.dataset, None if pd.isna(cell["size"]) else int(cell["size"])), {})
                      .get("num_classes", found.max() + 1))
        out[cell.cell_id] = cell_bootstrap(metric, found, weights[n], classes)
    return out


def _verdicts(study: Study, boot: dict[str, np.ndarray]) -> None:
    per_seed = study.per_seed[study.per_seed.metric == study.metric]
    seeds_of = study.cells.set_index("cell_id")
    for key, group in per_seed.groupby(POOLED, dropna=False):
        key = table_key(key)
        if key[3] is None:  # the full-data row belongs to every IPC of its dataset
            continue
        full = per_seed[(per_seed.protocol_id == key[0]) & (per_seed.dataset == key[1])
                        & (per_seed.ipc.isna()) & (per_seed.method == FULL)
                        & (per_seed["size"].isna() if key[2] is None else per_seed["size"] == key[2])]
        values = {m: g.set_index("seed").value for m, g in pd.concat([group, full]).groupby("method")}
        cells = seeds_of[(seeds_of.protocol_id == key[0]) & (seeds_of.dataset == key[1])
                         & ((seeds_of.ipc == key[3]) | seeds_of.ipc.isna())
                         & (seeds_of["size"].isna() if key[2] is None else seeds_of["size"] == key[2])]
        cell_boot: dict[str, dict[int, np.ndarray]] = {}
        for cid, c in cells.iterrows():
            if cid in boot and c.method in values:
                cell_boot.setdefault(c.method, {})[int(c.seed)] = boot[cid]
        baseline_of = {m: study.baselines[(*key, m)] for m in values if (*key, m) in study.baselines}
        roles = {m for m in values if is_baseline(m)} | (set(baseline_of.values()) & set(values))
        counts = test_counts(study.facts.get((key[1], key[2]), {}))
        chance = chance_level(study.metric, counts) if counts else math.nan
        study.tables[key] = analyse_table(key, values, cell_boot, baseline_of, roles, metric=study.metric,
                                          chance=chance)


def _rankings(study: Study) -> None:
    for (pid, ipc), group in _by_protocol_ipc(study.tables):
        frame = {}
        for key, verdict in group:
            rows = verdict.rows[verdict.rows.role != "full"]
            label = key[1] + ("" if key[2] is None else f" ({key[2]} px)")
            frame[label] = rows.set_index("method")["mean"]
        if len(frame) < 2:  # one dataset: nothing to rank across
            continue
        values = pd.DataFrame(frame).T
        study.rankings.append(rank_methods(values, protocol_id=pid, ipc=ipc, metric=study.metric))


def _by_protocol_ipc(tables: dict[tuple, TableVerdict]) -> list[tuple[tuple, list]]:
    out: dict[tuple, list] = {}
    for key, verdict in sorted(tables.items(), key=lambda kv: str(kv[0])):
        out.setdefault((key[0], key[3]), []).append((key, verdict))
    return list(out.items())
