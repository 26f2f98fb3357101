"""Cache-sized blocks are speed only: the same cells with blocks on and off, paired by cell id.

    OMP_NUM_THREADS=1 medbench run reports/bf16/grid.yaml --no-progress              # blocks on (default)
    MEDBENCH_CPU_BLOCK_BYTES=0 OMP_NUM_THREADS=1 medbench run reports/bf16/grid.yaml --no-progress \\
        --db results/noblocks.sqlite                                                  # blocks off
    python reports/blocks/compare.py results/bf16.sqlite results/noblocks.sqlite > reports/blocks/table.md

A speed-only path keeps the cell's identity, so both databases hold the same cell ids. Per cell: are
the condensed sets bit-identical, and how far apart are the test balanced accuracies (mean of the
cell's networks)? Per group: the mean paired difference with its 95 % t interval over seeds
(scipy.stats) and the largest per-seed difference; and the evaluation seconds both ways.
"""

from __future__ import annotations

import json
import sys

import pandas as pd
from scipy import stats
from tabulate import tabulate

from medbench.analysis.frames import model_scores
from medbench.storage.store import Store


def cells(db: str) -> pd.DataFrame:
    with Store(db, readonly=True) as store:
        frame, scores = store.cells(), model_scores(store)
    frame = frame[frame.status == "done"].copy()
    configs = [json.loads(c) for c in frame.config]
    frame["precision"] = [c["protocol"].get("precision", "fp32") for c in configs]
    frame["sha256"] = [c.get("condensed_sha256") for c in configs]
    frame["blocks"] = [json.loads(e).get("cpu_block_bytes") for e in frame.environment]
    test = scores[(scores.split == "test") & (scores.metric == "balanced_accuracy")]
    per_cell = test.groupby("cell_id").agg(score=("value", "mean"), seconds=("train_seconds", "sum"))
    return frame[frame.precision == "fp32"].join(per_cell, on="cell_id").set_index("cell_id")


def table(on: pd.DataFrame, off: pd.DataFrame) -> str:
    both = on.merge(off[["score", "seconds", "sha256", "blocks"]], left_index=True, right_index=True,
                    suffixes=("", "_off"))
    rows = []
    groups = [*both.groupby(["dataset", "ipc", "method"]), (("all", "", ""), both)]
    for (dataset, ipc, method), g in groups:
        diff = 100 * (g.score - g.score_off)
        n = len(diff)
        spread = stats.sem(diff) if n > 1 and diff.std() > 0 else 0.0
        low, high = (stats.t.interval(0.95, n - 1, loc=diff.mean(), scale=spread) if spread else (diff.mean(),) * 2)
        rows.append([dataset, ipc, method, n, f"{(g.sha256 == g.sha256_off).sum()} of {n}",
                     f"{diff.mean():+.2f} [{low:+.2f}, {high:+.2f}]", f"{diff.abs().max():.2f}",
                     f"{g.seconds_off.mean():.1f}", f"{g.seconds.mean():.1f}"])
    headers = ["dataset", "IPC", "method", "seeds", "same set", "on − off, pp [95 % CI]", "largest |Δ|, pp",
               "eval s, off", "eval s, on"]
    blocks = f"blocks on: {sorted(set(both.blocks))} bytes; off: {sorted(set(both.blocks_off))}"
    return tabulate(rows, headers, tablefmt="github") + f"\n\n{blocks}; {len(both)} paired cells."


if __name__ == "__main__":
    print(table(cells(sys.argv[1]), cells(sys.argv[2])))
