"""Seeds are the unit of replication.

A seed is one random subset or one distillation run; the K evaluation networks trained on it are
one measurement of that set, and their mean is the seed's value. Everything reported across
seeds starts from those per-seed means:

* spread: the sample std of the per-seed means (the network spread within a seed stays available
  as ``within_std``); with a single seed only the network spread exists, and tables say so;
* gains over a baseline: paired per-seed differences (a method that starts from real images starts
  from the subset ``random`` draws with the same seed), with the t-interval over seeds and the
  paired t-test (``scipy.stats.ttest_rel``, two-sided);
* ranks: a method's rank is 1 + the number of methods that beat it significantly (paired t-test
  over common seeds, p < ``ALPHA``), so methods whose differences are not significant tie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
TEST_NAME = "paired t-test over seeds (two-sided, α = 0.05)"
GROUP = ["protocol_id", "dataset", "size", "ipc"]  # the cells a table compares
KEY = [*GROUP[:3], "method", "ipc"]


def seed_means(values: pd.DataFrame) -> pd.DataFrame:
    """One row per (protocol, dataset, size, method, IPC, metric, seed): the mean over that seed's
    evaluation networks (``value``), their std (``network_std``) and count (``networks``)."""
    keys = [*KEY, "metric", "seed"]
    if values.empty:
        return pd.DataFrame(columns=[*keys, "value", "network_std", "networks"])
    grouped = values.groupby(keys, dropna=False).value
    return grouped.agg(value="mean", network_std="std", networks="count").reset_index()


def across_seeds(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std across seeds of the per-seed means, per (protocol, dataset, size, method, IPC,
    metric). ``std`` is across seeds when there are ≥ 2 seeds, else the network std of the one
    seed (``spread`` says which); ``within_std`` is the mean network std within a seed."""
    keys = [*KEY, "metric"]
    columns = [*keys, "mean", "std", "spread", "seeds", "networks", "within_std"]
    if per_seed.empty:
        return pd.DataFrame(columns=columns)
    grouped = per_seed.groupby(keys, dropna=False)
    out = grouped.agg(mean=("value", "mean"), seed_std=("value", "std"), seeds=("seed", "nunique"),
                      networks=("networks", "sum"), within_std=("network_std", "mean")).reset_index()
    one = out.seeds < 2
    out["std"] = np.where(one, out.within_std, out.seed_std)
    out["spread"] = np.where(one, "networks", "seeds")
    return out[columns]


@dataclass(frozen=True)
class Paired:
    """A paired comparison over common seeds: mean difference, its t-interval and the test.
    ``zero_spread``: every seed's difference is the same (two identical sets, say), so there is no
    spread to test against: p is NaN and the comparison is never significant."""

    n: int
    diff: float
    se: float  # standard error of the mean difference
    low: float
    high: float
    p: float
    zero_spread: bool = False

    @property
    def significant(self) -> bool:
        return bool(np.isfinite(self.p) and self.p < ALPHA)


def paired(a: pd.Series, b: pd.Series, level: float = 0.95) -> Paired:
    """``a − b`` over the seeds both have (Series indexed by seed)."""
    common = a.index.intersection(b.index)
    d = (a.loc[common] - b.loc[common]).to_numpy(dtype=float)
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n < 2:
        return Paired(n, mean, math.nan, math.nan, math.nan, math.nan)
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0:  # identical differences on every seed: no spread to test against, so no test
        return Paired(n, mean, 0.0, mean, mean, math.nan, zero_spread=True)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    p = float(stats.ttest_rel(a.loc[common].to_numpy(float), b.loc[common].to_numpy(float)).pvalue)
    return Paired(n, mean, se, mean - half, mean + half, p)


def gains(per_seed: pd.DataFrame, baseline: str = "random", metric: str = "accuracy") -> pd.DataFrame:
    """Every method's paired gain over ``baseline`` per (protocol, dataset, size, IPC), with the
    means over all seeds of both (``mean``, ``std``, ``n`` and ``baseline_mean``, …)."""
    columns = [*GROUP, "method", "seeds", "gain", "se", "low", "high", "p", "significant", "mean", "std", "n",
               "baseline_mean", "baseline_std", "baseline_n"]
    rows = []
    frame = per_seed[per_seed.metric == metric]
    for key, group in frame.groupby(GROUP, dropna=False):
        by_method = {m: g.set_index("seed").value for m, g in group.groupby("method")}
        if baseline not in by_method:
            continue
        for method, values in by_method.items():
            if method in (baseline, "full"):
                continue
            base = by_method[baseline]
            result = paired(values, base)
            rows.append(dict(zip(GROUP, key, strict=True)) | {
                "method": method, "seeds": result.n, "gain": result.diff, "se": result.se, "low": result.low,
                "high": result.high, "p": result.p, "significant": result.significant,
                "mean": values.mean(), "std": values.std(ddof=1), "n": len(values),
                "baseline_mean": base.mean(), "baseline_std": base.std(ddof=1), "baseline_n": len(base)})
    return pd.DataFrame(rows, columns=columns)


def ranks(per_seed: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Per (protocol, dataset, size, IPC): each method's rank (1 + methods significantly better)
    and the methods it beats significantly (``beats``, comma-separated). The full-data row is not
    ranked."""
    rows = []
    frame = per_seed[(per_seed.metric == metric) & (per_seed.method != "full")]
    for key, group in frame.groupby(GROUP, dropna=False):
        by_method = {m: g.set_index("seed").value for m, g in group.groupby("method")}
        beats: dict[str, list[str]] = {m: [] for m in by_method}
        for a, b in combinations(sorted(by_method), 2):
            result = paired(by_method[a], by_method[b])
            if result.significant:
                winner, loser = (a, b) if result.diff > 0 else (b, a)
                beats[winner].append(loser)
        for method in by_method:
            beaten_by = sum(method in losers for losers in beats.values())
            rows.append(dict(zip(GROUP, key, strict=True)) | {
                "method": method, "rank": 1 + beaten_by, "beats": ", ".join(sorted(beats[method]))})
    return pd.DataFrame(rows, columns=[*GROUP, "method", "rank", "beats"])
