"""Compare two results databases made by the same fixed-seed grid (before and after a change that
must not change behaviour): cell ids, condensed-set fingerprints, and every stored score.

    python reports/layout_check/compare.py BEFORE.sqlite AFTER.sqlite

Prints what differs and exits 1 if anything other than timing does.
"""

from __future__ import annotations

import json
import sys

import pandas as pd

from medbench.reports import tidy_results
from medbench.storage.store import Store

TIMING = ["train_seconds"]


def load(path: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    with Store(path, readonly=True) as store:
        cells = store.cells()
        results = tidy_results(store)
    cells["fingerprint"] = [json.loads(c).get("condensed_sha256") for c in cells.config]
    return cells.set_index("cell_id").sort_index(), results.drop(columns=TIMING)


def main(before: str, after: str) -> int:
    (cells_a, results_a), (cells_b, results_b) = load(before), load(after)
    problems = []
    if list(cells_a.index) != list(cells_b.index):
        problems.append(f"cell ids differ: {sorted(set(cells_a.index) ^ set(cells_b.index))}")
    else:
        changed = cells_a.index[cells_a.fingerprint != cells_b.fingerprint]
        if len(changed):
            problems.append(f"condensed sets differ in {len(changed)} cells: {list(changed)}")
        status = cells_a.index[cells_a.status != cells_b.status]
        if len(status):
            problems.append(f"status differs in {list(status)}")
    if not results_a.reset_index(drop=True).equals(results_b.reset_index(drop=True)):
        merged = results_a.merge(results_b, on=[c for c in results_a.columns if c != "value"], how="outer",
                                 suffixes=("_before", "_after"), indicator=True)
        different = merged[(merged._merge != "both") | (merged.value_before != merged.value_after)]
        problems.append(f"{len(different)} score rows differ, e.g.\n{different.head().to_string()}")
    print(f"{len(cells_a)} cells, {cells_a.fingerprint.notna().sum()} condensed-set fingerprints, "
          f"{len(results_a)} score rows compared")
    for p in problems:
        print("DIFFERS:", p)
    print("identical (timing columns aside)" if not problems else "")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
