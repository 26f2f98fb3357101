"""Many tests in one table: corrected p-values and the smallest effect the seeds can detect.

* The **primary family** of a table (one dataset, size and IPC under one protocol): each method
  against its matched baseline, corrected with Holm's step-down method (family-wise error ≤ α).
* The **secondary family**: every method against every other, corrected with Benjamini–Hochberg
  (false discovery rate ≤ α); ranks, "beats" and ties with the best follow it.

Both come from ``statsmodels.stats.multitest.multipletests``; untestable comparisons (NaN p: one
seed, zero spread) stay NaN and do not count as tests. The detectable effect inverts the power of
the paired t-test; statsmodels' ``TTestPower`` returns NaN for 2–3 seeds at Holm-corrected levels
(its non-central t loses precision there), so the power is integrated directly with scipy: the
normal tail given the variance, over the variance's chi-square (equal to ``TTestPower`` wherever
that is finite: tested).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import integrate, optimize, stats
from statsmodels.stats.multitest import multipletests

ALPHA = 0.05
POWER = 0.8
PRIMARY = "Holm"
SECONDARY = "Benjamini–Hochberg"
_METHODS = {PRIMARY: "holm", SECONDARY: "fdr_bh"}


def adjust(p: pd.Series | list[float], method: str) -> pd.Series:
    """Adjusted p-values of ``p`` (``PRIMARY`` or ``SECONDARY``); NaN entries are not tests and stay NaN."""
    p = pd.Series(p, dtype=float)
    out = pd.Series(np.nan, index=p.index)
    tested = p.notna()
    if tested.any():
        out[tested] = multipletests(p[tested].to_numpy(), alpha=ALPHA, method=_METHODS[method])[1]
    return out


def t_test_power(effect: float, seeds: int, alpha: float) -> float:
    """Power of the two-sided paired (one-sample) t-test over ``seeds`` at level ``alpha`` for a true
    effect of ``effect`` standard deviations: P(|Z + δ√n| > t·√(V/df)), Z normal, V chi-square(df)."""
    df = seeds - 1
    t = float(stats.t.ppf(1 - alpha / 2, df))
    shift = effect * math.sqrt(seeds)

    def integrand(v: float) -> float:
        cut = t * math.sqrt(v / df)
        return float((stats.norm.sf(cut - shift) + stats.norm.cdf(-cut - shift)) * stats.chi2.pdf(v, df))

    return float(integrate.quad(integrand, 0, math.inf)[0])


def detectable_effect(seeds: int, tests: int, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest paired effect, in standard deviations of the per-seed differences, that a
    two-sided paired t-test over ``seeds`` detects with probability ``power`` at the level of the
    first step of Holm over ``tests`` tests (α / tests): what a table's seeds can show after
    correction. NaN with fewer than 2 seeds."""
    if seeds < 2:
        return math.nan
    level = alpha / max(tests, 1)
    return float(optimize.brentq(lambda d: t_test_power(d, seeds, level) - power, 1e-6, 1e3))
