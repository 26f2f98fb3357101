"""DD-Ranking's scores beside accuracy (Li et al., "DD-Ranking", NUS-HPC-AI-Lab, 2025).

* **HLR**, hard-label recovery: accuracy of the full real training set minus that of the synthetic
  set, both trained with hard labels (for a soft-label set: its images with each image's class,
  the protocol's second evaluation, ``hard_labels_accuracy``). Lower is better; it says how much of
  the full data's accuracy the *images* recover without the help of soft labels.
* **IOR**, improvement over random: synthetic minus random under the same evaluation. A soft-label
  set is compared with ``random_soft`` (random's subset with soft labels from the same teacher,
  trained with the same soft-label loss), a hard-label set with ``random``; paired over seeds like
  every gain in medbench.

The full-data reference is the ``full`` method's cells under the same protocol: its mean over seeds,
and HLR's 95 % interval is Welch's over the seeds of the full set and of the distilled set (it needs
at least 2 seeds of each; 3 or more for an interval worth reading). A dataset without full cells
has no HLR.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from medbench.analysis.seeds import GROUP, paired
from medbench.evaluation.protocol import HARD_LABELS

SOFT_BASELINE = "random_soft"
HARD_BASELINE = "random"
COLUMNS = [*GROUP, "method", "soft", "hlr", "hlr_low", "hlr_high", "full", "full_seeds", "ior", "ior_low",
           "ior_high", "ior_p", "ior_baseline"]


def soft_methods(per_seed: pd.DataFrame) -> set[tuple]:
    """(protocol_id, dataset, size, ipc, method) of the cells evaluated with soft labels."""
    soft = per_seed[per_seed.metric == HARD_LABELS + "accuracy"]
    return {tuple(r) for r in soft[[*GROUP, "method"]].drop_duplicates().itertuples(index=False)}


def scores(per_seed: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """HLR and IOR per (protocol, dataset, size, IPC, method) from :func:`seeds.seed_means` rows."""
    soft = soft_methods(per_seed)
    hard_metric = HARD_LABELS + metric
    main = per_seed[per_seed.metric == metric]
    hard = per_seed[per_seed.metric == hard_metric]
    full = {tuple(k): g.set_index("seed").value
            for k, g in main[main.method == "full"].groupby(GROUP[:3], dropna=False)}
    rows = []
    for key, group in main[main.method != "full"].groupby(GROUP, dropna=False):
        by_method = {m: g.set_index("seed").value for m, g in group.groupby("method")}
        reference = full.get(tuple(key[:3]), pd.Series(dtype=float))
        for method, values in by_method.items():
            is_soft = (*key, method) in soft
            if is_soft:
                mask = (hard.method == method)
                for col, value in zip(GROUP, key, strict=True):
                    mask &= hard[col].isna() if pd.isna(value) else hard[col] == value
                recovered_seeds = hard[mask].set_index("seed").value
            else:
                recovered_seeds = values
            recovered = recovered_seeds.mean()
            low = high = math.nan
            if len(reference) >= 2 and len(recovered_seeds) >= 2 and (reference.std() > 0 or recovered_seeds.std() > 0):
                welch = stats.ttest_ind(reference.to_numpy(float), recovered_seeds.to_numpy(float), equal_var=False)
                low, high = welch.confidence_interval(0.95)
            baseline = SOFT_BASELINE if is_soft else HARD_BASELINE
            ior = paired(values, by_method[baseline]) if baseline in by_method and method != baseline else None
            rows.append(dict(zip(GROUP, key, strict=True)) | {
                "method": method, "soft": is_soft, "hlr": reference.mean() - recovered, "hlr_low": low,
                "hlr_high": high, "full": reference.mean(), "full_seeds": len(reference),
                "ior": ior.diff if ior else math.nan, "ior_low": ior.low if ior else math.nan,
                "ior_high": ior.high if ior else math.nan, "ior_p": ior.p if ior else math.nan,
                "ior_baseline": baseline if ior else ""})
    return pd.DataFrame(rows, columns=COLUMNS)
