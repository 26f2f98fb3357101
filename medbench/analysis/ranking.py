"""Ranking methods across datasets (Demšar, JMLR 2006): average ranks, the Friedman test and
Wilcoxon signed-rank post-hoc tests with Holm's correction, drawn as a critical-difference diagram.

The blocks are datasets: one value per dataset and method (the mean over seeds of the report
metric) under one protocol and one IPC. IPCs are ranked separately, never pooled as if they were
independent datasets. Only methods measured on every dataset of the ranking take part; the others
are named. ``scipy.stats.friedmanchisquare`` and ``scikit_posthocs.posthoc_wilcoxon`` do the tests.

What few datasets can support: the Wilcoxon signed-rank test over n datasets cannot reach
p < 0.05 below n = 6 (its smallest two-sided p is 2/2ⁿ), so with 5 or fewer datasets no pair of
methods can be told apart after any correction; the average ranks are then a description only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from scipy import stats

from medbench.analysis.multiplicity import ALPHA


def smallest_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test can give over ``n`` pairs."""
    return min(1.0, 2 / 2**n) if n >= 1 else math.nan


@dataclass
class Ranking:
    """Average ranks of methods over datasets at one protocol and IPC, with their tests."""

    protocol_id: str
    ipc: int
    metric: str
    values: pd.DataFrame  # datasets × methods (mean over seeds)
    ranks: pd.Series  # method -> average rank (1 = best)
    friedman_p: float = math.nan
    friedman_statistic: float = math.nan
    posthoc: pd.DataFrame | None = None  # methods × methods Wilcoxon p-values, Holm-adjusted
    left_out: list[str] = field(default_factory=list)  # methods missing on some dataset
    message: str = ""  # why a test is not reported

    @property
    def datasets(self) -> list[str]:
        return list(self.values.index)

    def different(self) -> list[tuple[str, str]]:
        """Pairs (better, worse) whose post-hoc test is significant after Holm."""
        if self.posthoc is None:
            return []
        out = []
        methods = list(self.ranks.sort_values().index)
        for i, a in enumerate(methods):
            for b in methods[i + 1:]:
                if self.posthoc.loc[a, b] < ALPHA:
                    out.append((a, b))
        return out


def rank_methods(values: pd.DataFrame, *, protocol_id: str = "", ipc: int = 0, metric: str = "") -> Ranking:
    """``values``: one row per dataset, one column per method, NaN where a method was not measured."""
    complete = values.dropna(axis=1)
    left_out = sorted(set(values.columns) - set(complete.columns))
    ranks = complete.rank(axis=1, ascending=False).mean() if not complete.empty else pd.Series(dtype=float)
    result = Ranking(protocol_id, ipc, metric, complete, ranks.sort_values(), left_out=left_out)
    n, k = complete.shape
    if k < 3 or n < 2:
        result.message = (f"a Friedman test needs at least 3 methods on at least 2 datasets (here {k} methods on "
                          f"{n} datasets)")
        return result
    test = stats.friedmanchisquare(*(complete[m].to_numpy() for m in complete.columns))
    result.friedman_statistic, result.friedman_p = float(test.statistic), float(test.pvalue)
    if np.ptp(complete.to_numpy(), axis=1).max() == 0:
        result.message = "every method scores the same on every dataset"
        return result
    try:
        posthoc = sp.posthoc_wilcoxon([complete[m].to_numpy() for m in complete.columns], zero_method="zsplit",
                                     p_adjust="holm")
    except ValueError as exc:  # e.g. two methods identical on every dataset
        result.message = f"the post-hoc tests could not be computed ({exc})"
        return result
    posthoc.index = posthoc.columns = list(complete.columns)
    result.posthoc = posthoc.fillna(1.0)
    if smallest_wilcoxon_p(n) >= ALPHA:
        result.message = (f"with {n} datasets the Wilcoxon test cannot reach p < {ALPHA} (its smallest p is "
                          f"{smallest_wilcoxon_p(n):.3g}): the ranks describe, they do not separate methods")
    return result
