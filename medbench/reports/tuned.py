"""Tuned against default: what a search on validation data bought on test, and how far its
validation scores over-promised.

For every method run both with its default parameters and with a configuration ``medbench tune``
chose (``run --tuned``), under the same protocol, dataset, IPC and seeds: the test accuracy of
both, the paired per-seed difference, the scores the search saw (its best trial, and the same
configuration re-scored with fresh seeds), the protocol's validation accuracy, and the val-to-test
gap (protocol val − test accuracy of the tuned rows) with the tuning budget.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from medbench.analysis.frames import base_method, ipc_label
from medbench.analysis.seeds import paired
from medbench.reports.tables import Table, pm

SUFFIX = " (tuned)"


def _per_seed(frame: pd.DataFrame, method: str, dataset: str, size, ipc, metric: str) -> pd.Series:
    """Per seed, the mean over its networks of ``metric`` for one method, dataset, size and IPC."""
    same_size = frame["size"].isna() if pd.isna(size) else frame["size"] == size
    rows = frame[(frame.dataset == dataset) & (frame.ipc == ipc) & same_size & (frame.method == method)
                 & (frame.metric == metric)]
    return rows.groupby("seed").value.mean()


def tuned_table(cells: pd.DataFrame, test: pd.DataFrame, val: pd.DataFrame, protocol_id: str) -> Table | None:
    """``test``/``val``: per-network accuracy rows of :func:`frames.model_scores` (variant names)."""
    test, val = test[test.protocol_id == protocol_id], val[val.protocol_id == protocol_id]
    tuned_rows = test[test.method.str.endswith(SUFFIX) & (test.metric == "accuracy")]
    if tuned_rows.empty:
        return None
    tuning = {cid: json.loads(c).get("tuning") for cid, c in zip(cells.cell_id, cells.config, strict=True)}
    rows = []
    for (dataset, size, ipc, method), group in tuned_rows.groupby(["dataset", "size", "ipc", "method"], sort=True,
                                                                  dropna=False):
        info = tuning.get(group.cell_id.iloc[0]) or {}
        budget = info.get("budget") or {}
        metric = info.get("objective") or "accuracy"  # the score the search maximised, on test and val alike
        key = (dataset, size, ipc, metric)
        tuned_seed, default_seed = _per_seed(test, method, *key), _per_seed(test, base_method(method), *key)
        val_seed = _per_seed(val, method, *key)
        diff = paired(tuned_seed, default_seed)
        gap = (val_seed - tuned_seed).dropna()
        rows.append({
            "dataset": dataset, "IPC": str(ipc_label(ipc)), "method": base_method(method),
            "metric": metric.replace("_", " "),
            "default test %": pm(default_seed.mean(), default_seed.std(ddof=1)) if len(default_seed) else "—",
            "tuned test %": pm(tuned_seed.mean(), tuned_seed.std(ddof=1)),
            "tuned − default (pp)": "" if not np.isfinite(diff.diff) else
            f"{100 * diff.diff:+.1f}" + (f" [{100 * diff.low:+.1f}, {100 * diff.high:+.1f}]"
                                         if np.isfinite(diff.low) else ""),
            "search val %": f"{100 * info['value']:.1f}" if info.get("value") is not None else "",
            "fresh-seed val %": f"{100 * info['rescored']:.1f}" if info.get("rescored") is not None else "",
            "protocol val %": pm(val_seed.mean(), val_seed.std(ddof=1)) if len(val_seed) else "—",
            "val − test gap (pp)": f"{100 * gap.mean():+.1f}" if len(gap) else "",
            "budget": f"{budget.get('trials', '?')} trials, {budget.get('seconds', 0):.0f} s",
            "chosen": json.dumps(info.get("config", {}), sort_keys=True)})
    table = Table("Tuned against default parameters", list(rows[0]), rows)
    table.notes.append("Test score (the metric the search maximised on val) of the configuration `medbench tune` "
                       "chose on validation data against the method's defaults, same protocol and seeds "
                       "(difference paired per seed, 95 % t-interval). "
                       "search val: the chosen trial's score in the search (the method's checkpoint scoring on val, "
                       "the search seed); fresh-seed val: the same configuration re-distilled with fresh seeds; "
                       "protocol val: the evaluation networks' val score; gap: protocol val − test of the tuned "
                       "rows. The test split is never read during tuning.")
    return table
