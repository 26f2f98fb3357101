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


def tuned_table(cells: pd.DataFrame, test: pd.DataFrame, val: pd.DataFrame, protocol_id: str) -> Table | None:
    """``test``/``val``: per-network accuracy rows of :func:`frames.model_scores` (variant names)."""
    test = test[(test.protocol_id == protocol_id) & (test.metric == "accuracy")]
    val = val[(val.protocol_id == protocol_id) & (val.metric == "accuracy")]
    tuned_rows = test[test.method.str.endswith(SUFFIX)]
    if tuned_rows.empty:
        return None
    tuning = {cid: json.loads(c).get("tuning") for cid, c in zip(cells.cell_id, cells.config, strict=True)}
    rows = []
    for (dataset, size, ipc, method), group in tuned_rows.groupby(["dataset", "size", "ipc", "method"], sort=True,
                                                                  dropna=False):
        same = (test.dataset == dataset) & (test.ipc == ipc) & (test["size"].isna() if pd.isna(size)
                                                                 else test["size"] == size)
        default = test[same & (test.method == base_method(method))]
        tuned_seed = group.groupby("seed").value.mean()
        default_seed = default.groupby("seed").value.mean()
        val_rows = val[(val.dataset == dataset) & (val.ipc == ipc) & (val.method == method)
                       & (val["size"].isna() if pd.isna(size) else val["size"] == size)]
        val_seed = val_rows.groupby("seed").value.mean()
        diff = paired(tuned_seed, default_seed)
        info = tuning.get(group.cell_id.iloc[0]) or {}
        budget = info.get("budget") or {}
        gap = (val_seed - tuned_seed).dropna()
        rows.append({
            "dataset": dataset, "IPC": str(ipc_label(ipc)), "method": base_method(method),
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
    table.notes.append("Test accuracy of the configuration `medbench tune` chose on validation data against the "
                       "method's defaults, same protocol and seeds (difference paired per seed, 95 % t-interval). "
                       "search val: the chosen trial's score in the search (the method's checkpoint scoring on val, "
                       "the search seed); fresh-seed val: the same configuration re-distilled with fresh seeds; "
                       "protocol val: the evaluation networks' val accuracy; gap: protocol val − test of the tuned "
                       "rows. The test split is never read during tuning.")
    return table
