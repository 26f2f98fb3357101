"""Verdicts of one table: which methods beat their matched baseline, after correction.

A table is one dataset, size and IPC under one protocol, in one **report metric** (balanced
accuracy by default). For every row (a method, or a merged group of methods with identical sets):

* its mean over seeds and an interval that combines the **spread over seeds** (t over seeds)
  with the **test-set uncertainty** (the variance of the seed-mean over bootstrap resamples of
  the test images, :mod:`medbench.analysis.testset`): mean ± t(n−1)·√(s²/n + v_test); without
  stored predictions v_test is 0 and the table says the interval is over seeds only;
* whether that interval lies above what a classifier without skill scores (``chance``); a row
  whose interval reaches down to it is flagged "no better than chance";
* the **primary** comparison: the paired gain over its matched baseline (random choosing among as
  many subsets as the method had checkpoints, tiled random for a tiled set, random_soft for soft
  labels; plain random otherwise), d̄ ± t(n−1)·√(s_d²/n + v_test(d̄)), the t-test on that standard
  error (the paired t-test over seeds when v_test is 0), Holm-corrected over the table's methods;
* the gain over plain random beside it, and every method-vs-method difference, in the
  **secondary** family (Benjamini–Hochberg): ranks, "beats" and the ties with the best follow it.

A difference that is the same on every seed (identical sets: a kept initialisation) has no spread
to test: it is reported as "zero spread", never starred.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from medbench.analysis.multiplicity import ALPHA, PRIMARY, SECONDARY, adjust, detectable_effect

GROUP = ["protocol_id", "dataset", "size", "ipc"]
PLAIN = "random"
FULL = "full"


@dataclass(frozen=True)
class Estimate:
    """A row's mean over seeds with its combined interval."""

    n: int
    mean: float
    sd: float  # across seeds (NaN with one seed)
    low: float
    high: float
    test_var: float  # the test-set part of the variance of the mean (0: none stored)


@dataclass(frozen=True)
class Comparison:
    """``a − b`` over their common seeds, with the test-set variance of the mean difference."""

    n: int
    diff: float
    se: float
    low: float
    high: float
    p: float
    zero_spread: bool = False


def _quantile(n: int, level: float = 0.95) -> float:
    return float(stats.t.ppf(0.5 + level / 2, n - 1)) if n >= 2 else float(stats.norm.ppf(0.5 + level / 2))


def _test_var(boot: dict[int, np.ndarray] | None, seeds: list[int]) -> float:
    if not boot or not all(s in boot for s in seeds):
        return 0.0
    return float(np.var(np.mean([boot[s] for s in seeds], axis=0), ddof=1))


def estimate(values: pd.Series, boot: dict[int, np.ndarray] | None = None, level: float = 0.95) -> Estimate:
    """Mean of per-seed ``values`` (indexed by seed) with the interval of the module doc."""
    seeds = list(values.index)
    n = len(seeds)
    mean = float(values.mean())
    sd = float(values.std(ddof=1)) if n >= 2 else math.nan
    v_test = _test_var(boot, seeds)
    var = (sd**2 / n if n >= 2 else 0.0) + v_test
    if n < 2 and v_test == 0:
        return Estimate(n, mean, sd, math.nan, math.nan, v_test)
    half = _quantile(n, level) * math.sqrt(var)
    return Estimate(n, mean, sd, mean - half, mean + half, v_test)


def compare(a: pd.Series, b: pd.Series, a_boot: dict[int, np.ndarray] | None = None,
            b_boot: dict[int, np.ndarray] | None = None, level: float = 0.95) -> Comparison:
    """The paired comparison of the module doc over the seeds ``a`` and ``b`` share."""
    common = [s for s in a.index if s in b.index]
    n = len(common)
    if n == 0:
        return Comparison(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    d = (a.loc[common] - b.loc[common]).to_numpy(dtype=float)
    diff = float(d.mean())
    if n < 2:
        return Comparison(n, diff, math.nan, math.nan, math.nan, math.nan)
    sd = float(d.std(ddof=1))
    if sd == 0:  # the same difference on every seed: nothing to test against
        return Comparison(n, diff, 0.0, diff, diff, math.nan, zero_spread=True)
    v_test = 0.0
    if a_boot and b_boot and all(s in a_boot and s in b_boot for s in common):
        v_test = float(np.var(np.mean([a_boot[s] - b_boot[s] for s in common], axis=0), ddof=1))
    se = math.sqrt(sd**2 / n + v_test)
    half = _quantile(n, level) * se
    p = float(2 * stats.t.sf(abs(diff) / se, n - 1))
    return Comparison(n, diff, se, diff - half, diff + half, p)


@dataclass
class TableVerdict:
    """Everything one table shows beyond its means: rows, comparisons, the power statement."""

    key: tuple  # (protocol_id, dataset, size, ipc)
    metric: str
    rows: pd.DataFrame  # one per method: estimate, chance flag, primary and plain gains, rank, beats, tie
    pairs: pd.DataFrame  # every method-vs-method comparison with its BH-adjusted p
    primary_tests: int
    seeds: int
    detectable: float  # smallest effect (SDs of the per-seed differences) the seeds detect after Holm
    test_bootstrap: bool  # whether every row's interval includes the test-set part
    chance: float
    notes: list[str] = field(default_factory=list)

    def winners(self) -> list[str]:
        """Methods whose gain over their matched baseline is significant after Holm (positive)."""
        rows = self.rows
        return list(rows[rows.primary_significant & (rows.primary_gain > 0)].method)


ROW_COLUMNS = ["method", "role", "n", "mean", "sd", "low", "high", "test_var", "above_chance",
               "baseline", "primary_gain", "primary_low", "primary_high", "primary_p", "primary_p_holm",
               "primary_zero_spread", "primary_significant", "random_gain", "random_low", "random_high",
               "random_p", "random_p_bh", "random_zero_spread", "rank", "beats", "tied_best"]


def analyse_table(key: tuple, values: dict[str, pd.Series], boot: dict[str, dict[int, np.ndarray]],
                  baseline_of: dict[str, str], baselines: set[str], *, metric: str, chance: float = math.nan,
                  level: float = 0.95) -> TableVerdict:
    """The verdicts of one table. ``values``: method -> per-seed value (Series by seed); ``boot``:
    method -> seed -> bootstrap values (missing: no test-set part); ``baseline_of``: method -> its
    matched baseline (plain random where absent); ``baselines``: the rows that are baselines."""
    methods = [m for m in values if m != FULL]
    rows: dict[str, dict] = {}
    for m in values:
        e = estimate(values[m], boot.get(m), level)
        role = "full" if m == FULL else "baseline" if m in baselines else "method"
        # above chance by its interval; with no interval (one seed, no predictions) by its mean
        bound = e.low if np.isfinite(e.low) else e.mean
        above = bool(bound > chance) if np.isfinite(chance) else True
        rows[m] = {"method": m, "role": role, "n": e.n, "mean": e.mean, "sd": e.sd, "low": e.low, "high": e.high,
                   "test_var": e.test_var, "above_chance": above, "baseline": "", "rank": math.nan, "beats": "",
                   "tied_best": False, "primary_significant": False}
    # Primary family: each method against its matched baseline (Holm).
    primary: dict[str, Comparison] = {}
    for m in methods:
        if rows[m]["role"] != "method":
            continue
        base = baseline_of.get(m, PLAIN)
        if base not in values:
            continue
        primary[m] = compare(values[m], values[base], boot.get(m), boot.get(base), level)
        rows[m]["baseline"] = base
    holm = adjust({m: c.p for m, c in primary.items()}, PRIMARY)
    for m, c in primary.items():
        rows[m].update(primary_gain=c.diff, primary_low=c.low, primary_high=c.high, primary_p=c.p,
                       primary_p_holm=holm[m], primary_zero_spread=c.zero_spread,
                       primary_significant=bool(np.isfinite(holm[m]) and holm[m] < ALPHA))
    # Secondary family: every pair of rows (BH), the gain over plain random among them.
    pair_rows = []
    for a, b in combinations(methods, 2):
        c = compare(values[a], values[b], boot.get(a), boot.get(b), level)
        pair_rows.append({"a": a, "b": b, "diff": c.diff, "low": c.low, "high": c.high, "p": c.p,
                          "zero_spread": c.zero_spread})
    pairs = pd.DataFrame(pair_rows, columns=["a", "b", "diff", "low", "high", "p", "zero_spread"])
    pairs["p_bh"] = adjust(pairs.p, SECONDARY).to_numpy() if len(pairs) else []
    pairs["significant"] = pairs.p_bh < ALPHA
    for pr in pairs.itertuples():
        if PLAIN not in (pr.a, pr.b):
            continue
        m, sign = (pr.a, 1) if pr.b == PLAIN else (pr.b, -1)
        low, high = (pr.low, pr.high) if sign > 0 else (-pr.high, -pr.low)
        rows[m].update(random_gain=sign * pr.diff, random_low=low, random_high=high, random_p=pr.p,
                       random_p_bh=pr.p_bh, random_zero_spread=pr.zero_spread)
    beats: dict[str, list[str]] = {m: [] for m in methods}
    for pr in pairs[pairs.significant].itertuples():
        winner, loser = (pr.a, pr.b) if pr.diff > 0 else (pr.b, pr.a)
        beats[winner].append(loser)
    for m in methods:
        rows[m]["rank"] = 1 + sum(m in losers for losers in beats.values())
        rows[m]["beats"] = ", ".join(sorted(beats[m]))
    if methods:
        best = max(methods, key=lambda m: rows[m]["mean"])
        for m in methods:
            rows[m]["tied_best"] = m == best or m not in beats[best]
    frame = pd.DataFrame(list(rows.values())).reindex(columns=ROW_COLUMNS)
    seeds = int(np.median([len(v) for v in values.values()])) if values else 0
    tests = max(len(primary), 1)
    boot_ok = bool(values) and all(m in boot and all(s in boot[m] for s in values[m].index) for m in values)
    return TableVerdict(key, metric, frame, pairs, len(primary), seeds, detectable_effect(seeds, tests), boot_ok,
                        chance)
