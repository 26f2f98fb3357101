"""fp32 vs bf16 evaluation, paired by cell: the markdown table of reports/bf16/table.md.

    python reports/bf16/compare.py results/bf16.sqlite > reports/bf16/table.md

Cells are paired on (method, dataset, IPC, seed): the same condensed set (its sha256 is checked) and
the same network seeds, evaluated with the protocol's forward passes in fp32 and under bf16
autocast. Per cell: test balanced accuracy (mean of its networks) and the networks' training
seconds. Per group: the mean paired difference with its 95 % t interval over seeds (scipy.stats)
and the largest per-seed difference; the time ratio is fp32 seconds / bf16 seconds. Below the
table: over all pairs, TOST (statsmodels ``ttost_paired``) for equivalence within ± 1 pp.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.weightstats import ttost_paired
from tabulate import tabulate

from medbench.analysis.frames import model_scores
from medbench.storage.store import Store

KEYS = ["dataset", "ipc", "method", "seed"]


def paired(db: str) -> pd.DataFrame:
    with Store(db, readonly=True) as store:
        cells = store.cells()
        scores = model_scores(store)
    cells = cells[cells.status == "done"].copy()
    configs = [json.loads(c) for c in cells.config]
    cells["precision"] = [c["protocol"].get("precision", "fp32") for c in configs]
    cells["sha256"] = [c.get("condensed_sha256") for c in configs]
    test = scores[(scores.split == "test") & (scores.metric == "balanced_accuracy")]
    per_cell = test.groupby("cell_id").agg(score=("value", "mean"), seconds=("train_seconds", "sum"))
    cells = cells.join(per_cell, on="cell_id")
    wide = cells.pivot_table(index=KEYS, columns="precision", values=["score", "seconds"], aggfunc="first")
    sets = cells.pivot_table(index=KEYS, columns="precision", values="sha256", aggfunc="first")
    both = wide.dropna()
    if not (sets.loc[both.index, "fp32"] == sets.loc[both.index, "bf16"]).all():
        raise SystemExit("a pair's condensed sets differ: not the same cells")
    return both


def table(both: pd.DataFrame) -> str:
    rows = []
    groups = [*both.groupby(level=["dataset", "ipc", "method"]), (("all", "", ""), both)]
    for (dataset, ipc, method), g in groups:
        diff = 100 * (g["score", "bf16"] - g["score", "fp32"])
        n = len(diff)
        low, high = stats.t.interval(0.95, n - 1, loc=diff.mean(), scale=stats.sem(diff)) if n > 1 else (np.nan,) * 2
        rows.append([dataset, ipc, method, n, f"{100 * g['score', 'fp32'].mean():.1f}",
                     f"{100 * g['score', 'bf16'].mean():.1f}", f"{diff.mean():+.2f} [{low:+.2f}, {high:+.2f}]",
                     f"{diff.abs().max():.2f}", f"{g['seconds', 'fp32'].mean():.1f}",
                     f"{g['seconds', 'bf16'].mean():.1f}",
                     f"{g['seconds', 'fp32'].sum() / g['seconds', 'bf16'].sum():.2f}×"])
    headers = ["dataset", "IPC", "method", "seeds", "fp32 bal. acc. %", "bf16 bal. acc. %",
               "bf16 − fp32, pp [95 % CI]", "largest |Δ| per seed, pp", "fp32 s", "bf16 s", "fp32 s / bf16 s"]
    diff = 100 * (both["score", "bf16"] - both["score", "fp32"])
    p = ttost_paired(100 * both["score", "bf16"].to_numpy(), 100 * both["score", "fp32"].to_numpy(), -1.0, 1.0)[0]
    return (tabulate(rows, headers, tablefmt="github")
            + f"\n\nAll {len(diff)} pairs: bf16 − fp32 = {diff.mean():+.2f} pp; equivalent within ± 1 pp by TOST: "
            f"p = {p:.3g}.")


if __name__ == "__main__":
    print(table(paired(sys.argv[1] if len(sys.argv) > 1 else "results/bf16.sqlite")))
