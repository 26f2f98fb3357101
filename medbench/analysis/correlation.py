"""Does a method's gain carry over across datasets? Distilled vs random-subset scores.

For every method (other than ``random``/``full``), IPC and protocol, each dataset gives one point
(random score, distilled score) in one metric, each the mean of per-seed means (seeds are the unit
of replication, :mod:`medbench.analysis.seeds`). Across datasets we report n, Pearson r with its
Fisher-z 95 % interval and p (``scipy.stats.pearsonr``), Spearman ρ with its exact permutation p,
and the least-squares line with R². Distilled and random scores both follow the dataset's
difficulty, so their r is high almost by construction; the question a feasibility study asks
("does distillation help more on easier tasks?") is the correlation of random's score with the
*gain* (distilled − random), reported beside it. Five or six datasets support little: the table
says which |r| would reach p < 0.05 at its n. Per dataset the gain over random (the spirit of
DD-Ranking's improvement over random) is the mean of the paired per-seed differences, with its
standard error and t-interval over seeds and the paired t-test. The line also predicts a new
dataset's distilled score from its random-subset score, with the usual OLS prediction interval.

A random baseline is only ever paired with a distilled cell under the same ``protocol_id`` (and
the same dataset, size and IPC): accuracies from different protocols are not comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from medbench.analysis.frames import is_baseline
from medbench.analysis.seeds import gains, seed_means
from medbench.core.errors import MedbenchError

MIN_DATASETS = 3
NEEDS_MORE = f"needs at least {MIN_DATASETS} datasets"


def paired_points(values: pd.DataFrame) -> pd.DataFrame:
    """Distilled vs random accuracy per dataset, matched on protocol_id, dataset, size and IPC.

    ``values``: one row per evaluation network of one metric (``medbench.analysis.frames.metric_values``).
    Returns one row per (protocol_id, method, ipc, dataset, size): both means over seeds with their
    std across seeds and seed counts, and the paired gain over the seeds both have: its mean, SE,
    95 % t-interval and paired t-test p (NaN with a single common seed).
    """
    columns = ["protocol_id", "method", "ipc", "dataset", "size", "random_mean", "random_std", "random_n",
               "distilled_mean", "distilled_std", "distilled_n", "gain", "gain_se", "gain_low", "gain_high", "p",
               "seeds"]
    per_seed = seed_means(values)
    metric = per_seed.metric.iloc[0] if len(per_seed) else "accuracy"
    found = gains(per_seed, metric=metric)
    found = found[~found.method.map(is_baseline) & (found.method != "full")]
    if found.empty:
        return pd.DataFrame(columns=columns)
    out = found.rename(columns={"baseline_mean": "random_mean", "baseline_std": "random_std", "baseline_n": "random_n",
                                "mean": "distilled_mean", "std": "distilled_std", "n": "distilled_n", "se": "gain_se",
                                "low": "gain_low", "high": "gain_high"})
    return out.sort_values(["protocol_id", "method", "ipc", "dataset"]).reset_index(drop=True)[columns]


@dataclass(frozen=True)
class Line:
    """An OLS fit y = slope·x + intercept with what the prediction interval needs."""

    slope: float
    intercept: float
    r2: float
    n: int
    x_mean: float
    sxx: float  # Σ (x − x̄)²
    residual_std: float  # s = sqrt(SSE / (n − 2))

    def t(self, level: float) -> float:
        return float(stats.t.ppf(0.5 + level / 2, self.n - 2))

    def prediction_interval(self, x: float, level: float = 0.95) -> tuple[float, float, float]:
        """(ŷ, low, high) for one new observation at ``x``: ŷ ± t·s·sqrt(1 + 1/n + (x − x̄)²/Sxx)."""
        y = self.slope * x + self.intercept
        half = self.t(level) * self.residual_std * math.sqrt(1 + 1 / self.n + (x - self.x_mean) ** 2 / self.sxx)
        return y, y - half, y + half

    def confidence_band(self, xs: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Band for the fitted mean line: ŷ ± t·s·sqrt(1/n + (x − x̄)²/Sxx)."""
        xs = np.asarray(xs, dtype=float)
        y = self.slope * xs + self.intercept
        half = self.t(level) * self.residual_std * np.sqrt(1 / self.n + (xs - self.x_mean) ** 2 / self.sxx)
        return y - half, y + half


def fit_line(x: np.ndarray, y: np.ndarray) -> Line:
    """Least squares through ``scipy.stats.linregress``; needs ≥ 3 points and x not constant."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) < MIN_DATASETS:
        raise MedbenchError(f"a fitted line {NEEDS_MORE} (got {len(x)})")
    fit = stats.linregress(x, y)
    residuals = y - (fit.slope * x + fit.intercept)
    sxx = float(((x - x.mean()) ** 2).sum())
    return Line(float(fit.slope), float(fit.intercept), float(fit.rvalue**2) if np.isfinite(fit.rvalue) else math.nan,
                len(x), float(x.mean()), sxx, float(math.sqrt((residuals**2).sum() / (len(x) - 2))))


def fisher_interval(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Pearson r's interval by Fisher's z transformation (``scipy.stats.pearsonr``); NaN below 4 points."""
    if len(x) < 4:
        return math.nan, math.nan
    ci = stats.pearsonr(x, y).confidence_interval(level)
    return float(ci.low), float(ci.high)


def critical_r(n: int, alpha: float = 0.05) -> float:
    """The smallest |r| over ``n`` datasets with a two-sided p below ``alpha`` (t with n − 2 df)."""
    if n < 3:
        return math.nan
    t = float(stats.t.ppf(1 - alpha / 2, n - 2))
    return t / math.sqrt(n - 2 + t * t)


@dataclass(frozen=True)
class Correlation:
    """Across-dataset relation of one method at one IPC under one protocol."""

    protocol_id: str
    method: str
    ipc: int
    datasets: tuple[str, ...]
    x: tuple[float, ...]  # random-subset accuracy per dataset
    y: tuple[float, ...]  # distilled accuracy per dataset
    message: str = ""  # non-empty: why no statistics were computed
    pearson_r: float = math.nan
    pearson_p: float = math.nan
    spearman_rho: float = math.nan
    spearman_p: float = math.nan
    r_ci: tuple[float, float] = (math.nan, math.nan)  # Fisher z
    gain_r: float = math.nan  # Pearson r of the random score with the gain (distilled − random)
    gain_p: float = math.nan
    gain_ci: tuple[float, float] = (math.nan, math.nan)
    gain_rho: float = math.nan  # Spearman ρ of the random score with the gain (exact p)
    gain_rho_p: float = math.nan
    line: Line | None = field(default=None)

    @property
    def n(self) -> int:
        return len(self.datasets)

    @property
    def ok(self) -> bool:
        return not self.message


def correlate_one(protocol_id: str, method: str, ipc: int, group: pd.DataFrame, *,
                  level: float = 0.95) -> Correlation:
    """Statistics for one (protocol, method, IPC) group of paired points; a message instead of
    numbers when they would be meaningless (fewer than 3 datasets, a constant axis)."""
    group = group.sort_values("dataset")
    base = {"protocol_id": protocol_id, "method": method, "ipc": int(ipc),
            "datasets": tuple(f"{d}@{s}" if _sizes_differ(group) else str(d)
                              for d, s in zip(group.dataset, group["size"], strict=True)),
            "x": tuple(float(v) for v in group.random_mean), "y": tuple(float(v) for v in group.distilled_mean)}
    x, y = np.asarray(base["x"]), np.asarray(base["y"])
    if len(x) < MIN_DATASETS:
        return Correlation(**base, message=f"{NEEDS_MORE} (has {len(x)})")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        which = "random" if np.ptp(x) == 0 else "distilled"
        return Correlation(**base, message=f"{which} accuracy is the same on every dataset: r is undefined")
    pearson = stats.pearsonr(x, y)
    rho, rho_p = spearman_exact(x, y)
    gain = y - x
    extra = {}
    if np.ptp(gain) > 0:
        on_gain = stats.pearsonr(x, gain)
        gain_rho, gain_rho_p = spearman_exact(x, gain)
        extra = {"gain_r": float(on_gain.statistic), "gain_p": float(on_gain.pvalue),
                 "gain_ci": fisher_interval(x, gain, level), "gain_rho": gain_rho, "gain_rho_p": gain_rho_p}
    return Correlation(
        **base, pearson_r=float(pearson.statistic), pearson_p=float(pearson.pvalue),
        spearman_rho=rho, spearman_p=rho_p, r_ci=fisher_interval(x, y, level), line=fit_line(x, y), **extra,
    )


EXACT_UP_TO = 8  # datasets: up to 8! = 40,320 orderings, the exact permutation p-value is cheap


def spearman_exact(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman ρ with an exact two-sided permutation p-value for few datasets (scipy's t
    approximation calls ρ = 1 on 3 datasets p ≈ 0, while 2 of the 6 orderings reach |ρ| = 1: p = 1/3);
    scipy's own p-value above ``EXACT_UP_TO`` datasets. Returns (ρ, p)."""
    if len(x) > EXACT_UP_TO:
        result = stats.spearmanr(x, y)
    else:
        result = stats.permutation_test((x, y), lambda a, b: stats.spearmanr(a, b).statistic,
                                        permutation_type="pairings", alternative="two-sided", n_resamples=math.inf)
    return float(result.statistic), float(result.pvalue)


def _sizes_differ(group: pd.DataFrame) -> bool:
    """Label datasets with their size only when one name appears at several sizes."""
    return bool(group.duplicated("dataset").any())


def correlate(points: pd.DataFrame, *, level: float = 0.95) -> list[Correlation]:
    """One :class:`Correlation` per (protocol_id, method, IPC) in ``paired_points`` output."""
    out = []
    for (pid, method, ipc), group in points.groupby(["protocol_id", "method", "ipc"], sort=True):
        out.append(correlate_one(pid, method, ipc, group, level=level))
    return out


def _num(value: float, digits: int = 3) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return "—" if not np.isfinite(value) else (f"{value:.2g}" if value >= 1e-4 else "<1e-4")


def correlation_frame(results: list[Correlation]) -> pd.DataFrame:
    """Display table: one row per (protocol, method, IPC); the message replaces the numbers."""
    rows = []
    keys = ("r (distilled, random) [95 % CI]", "p", "Spearman ρ (p exact)", "r (random, gain) [95 % CI]",
            "p (gain)", "Spearman ρ (random, gain)", "|r| for p < 0.05", "slope", "R²")
    for c in results:
        row = {"protocol": c.protocol_id, "method": c.method, "ipc": c.ipc, "datasets": c.n}
        if c.ok:
            assert c.line is not None
            row.update(dict(zip(keys, (
                f"{_num(c.pearson_r)} [{_num(c.r_ci[0], 2)}, {_num(c.r_ci[1], 2)}]", _p(c.pearson_p),
                f"{_num(c.spearman_rho)} ({_p(c.spearman_p)})",
                f"{_num(c.gain_r)} [{_num(c.gain_ci[0], 2)}, {_num(c.gain_ci[1], 2)}]", _p(c.gain_p),
                f"{_num(c.gain_rho)} ({_p(c.gain_rho_p)})", _num(critical_r(c.n), 2), _num(c.line.slope),
                _num(c.line.r2)), strict=True)), note="")
        else:
            row.update({k: "—" for k in keys})
            row["note"] = c.message
        rows.append(row)
    return pd.DataFrame(rows)


def gain_frame(points: pd.DataFrame) -> pd.DataFrame:
    """Display table of the per-dataset paired gain over random: pp ± SE, 95 % t-interval over seeds,
    paired t-test p, uncorrected (the leaderboard's tables carry the corrected tests)."""
    rows = []
    for _, p in points.iterrows():
        se = "" if not np.isfinite(p.gain_se) else f" ± {100 * p.gain_se:.1f}"
        ci = "" if not np.isfinite(p.gain_low) else f"[{100 * p.gain_low:+.1f}, {100 * p.gain_high:+.1f}]"
        rows.append({"protocol": p.protocol_id, "method": p.method, "ipc": int(p.ipc), "dataset": p.dataset,
                     "random %": f"{100 * p.random_mean:.1f}", "distilled %": f"{100 * p.distilled_mean:.1f}",
                     "gain (pp) ± SE": f"{100 * p.gain:+.1f}{se}", "95 % CI": ci,
                     "p (paired t, uncorrected)": "" if not np.isfinite(p.p) else f"{p.p:.2g}",
                     "seeds": int(p.seeds)})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Prediction:
    method: str
    ipc: int
    protocol_id: str
    random_accuracy: float
    predicted: float
    low: float
    high: float
    level: float
    n_datasets: int


def predict(results: list[Correlation], *, method: str, ipc: int, random_accuracy: float,
            protocol_id: str | None = None, level: float = 0.95) -> Prediction:
    """Predicted distilled accuracy (fraction) of a new dataset from its random-subset accuracy.

    Refuses, rather than guesses, when the method/IPC was measured under several protocols and
    none was chosen, or when the fit has fewer than 3 datasets.
    """
    matches = [c for c in results if c.method == method and c.ipc == ipc
               and (protocol_id is None or c.protocol_id.startswith(protocol_id))]
    if not matches:
        known = sorted({f"{c.method}@ipc{c.ipc}" for c in results}) or ["none"]
        raise MedbenchError(f"no paired results for method {method} at IPC {ipc}"
                            + (f" under protocol {protocol_id}" if protocol_id else "")
                            + f"; available: {', '.join(known)}")
    if len(matches) > 1:
        raise MedbenchError(f"method {method} at IPC {ipc} was evaluated under {len(matches)} protocols "
                            f"({', '.join(c.protocol_id for c in matches)}); choose one with --protocol")
    c = matches[0]
    if not c.ok or c.line is None:
        raise MedbenchError(f"cannot predict {method} at IPC {ipc}: {c.message}")
    y, low, high = c.line.prediction_interval(random_accuracy, level)
    return Prediction(method, ipc, c.protocol_id, random_accuracy, y, low, high, level, c.n)
