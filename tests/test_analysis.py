"""Correlation, gain and prediction statistics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _records import record, store_with
from scipy import stats

from medbench.analysis import (
    NEEDS_MORE,
    correlate,
    critical_r,
    fit_line,
    metric_values,
    paired_points,
    predict,
)
from medbench.cli.main import main
from medbench.core.errors import MedbenchError
from medbench.storage.store import Store


def _store(tmp_path, pairs, *, method="dm", ipc=10, protocol_id="p1", extra=()):
    """One random and one distilled cell per dataset with exactly the given mean accuracies."""
    recs = list(extra)
    for i, (x, y) in enumerate(pairs):
        recs.append(record("random", f"ds{i}", ipc, [x - 0.01, x, x + 0.01], protocol_id=protocol_id))
        recs.append(record(method, f"ds{i}", ipc, [y - 0.02, y, y + 0.02], protocol_id=protocol_id))
    return store_with(tmp_path / "r.sqlite", recs)


def _results(db, **kw):
    with Store(db) as store:
        points = paired_points(metric_values(store))
    return points, correlate(points, **kw)


def test_points_on_an_exact_line(tmp_path):
    xs = [0.40, 0.50, 0.60, 0.75]
    db = _store(tmp_path, [(x, 0.5 * x + 0.3) for x in xs])
    points, [c] = _results(db)
    assert list(points.dataset) == ["ds0", "ds1", "ds2", "ds3"]
    assert points.random_mean.tolist() == pytest.approx(xs)
    assert c.ok and c.n == 4 and (c.method, c.ipc, c.protocol_id) == ("dm", 10, "p1")
    assert c.pearson_r == pytest.approx(1.0) and c.spearman_rho == pytest.approx(1.0)
    assert c.line.slope == pytest.approx(0.5) and c.line.intercept == pytest.approx(0.3)
    assert c.line.r2 == pytest.approx(1.0)
    assert c.r_ci == pytest.approx((1.0, 1.0))  # Fisher z of r = 1
    # gain = y − x = 0.3 − 0.5·x: it falls exactly as random's score rises
    assert c.gain_r == pytest.approx(-1.0) and c.gain_rho == pytest.approx(-1.0)


def test_pearson_and_spearman_match_hand_formulas(tmp_path):
    x = np.array([0.50, 0.60, 0.70, 0.80, 0.65])
    y = np.array([0.55, 0.70, 0.66, 0.90, 0.60])
    _, [c] = _results(_store(tmp_path, list(zip(x, y, strict=True))))
    xc, yc = x - x.mean(), y - y.mean()
    r = (xc * yc).sum() / math.sqrt((xc**2).sum() * (yc**2).sum())
    t = r * math.sqrt(len(x) - 2) / math.sqrt(1 - r**2)
    p = 2 * stats.t.sf(abs(t), len(x) - 2)
    rank = lambda v: np.argsort(np.argsort(v)).astype(float)  # noqa: E731 - no ties here
    rx, ry = rank(x) - 2, rank(y) - 2
    rho = (rx * ry).sum() / math.sqrt((rx**2).sum() * (ry**2).sum())
    slope = (xc * yc).sum() / (xc**2).sum()
    assert c.pearson_r == pytest.approx(r) and c.pearson_p == pytest.approx(p)
    # ranks (0,1,3,4,2) vs (0,3,2,4,1): ρ = 1 − 6·Σd²/(n(n²−1)) = 1 − 6·6/120
    assert c.spearman_rho == pytest.approx(rho) and rho == pytest.approx(0.7)
    assert c.line.slope == pytest.approx(slope) and c.line.intercept == pytest.approx(y.mean() - slope * x.mean())
    assert c.line.r2 == pytest.approx(r**2)
    # Fisher z: tanh(atanh(r) ± 1.959964 / sqrt(n − 3))
    z, half = math.atanh(r), 1.959964 / math.sqrt(len(x) - 3)
    assert c.r_ci == pytest.approx((math.tanh(z - half), math.tanh(z + half)), abs=1e-5)
    g = y - x  # the gain: random's score against it
    gc = g - g.mean()
    assert c.gain_r == pytest.approx((xc * gc).sum() / math.sqrt((xc**2).sum() * (gc**2).sum()))


def test_what_few_datasets_can_support():
    # |r| with p < 0.05 at n datasets: t(0.975, n − 2) / sqrt(n − 2 + t²)
    assert critical_r(5) == pytest.approx(0.878, abs=1e-3) and critical_r(6) == pytest.approx(0.811, abs=1e-3)
    assert math.isnan(critical_r(2))


def test_prediction_interval_matches_hand_computation(tmp_path):
    # x = 1..4, y = 2,3,5,6: slope 1.4, intercept 0.5, SSE 0.2, s² = 0.1, x̄ = 2.5, Sxx = 5.
    line = fit_line(np.array([1.0, 2, 3, 4]), np.array([2.0, 3, 5, 6]))
    assert (line.slope, line.intercept) == pytest.approx((1.4, 0.5))
    assert line.residual_std == pytest.approx(math.sqrt(0.1))
    # at x0 = 5: ŷ = 7.5, se = s·sqrt(1 + 1/4 + 2.5²/5) = sqrt(0.1 · 2.5) = 0.5, t(0.975, 2) = 4.302653
    y, low, high = line.prediction_interval(5.0)
    assert y == pytest.approx(7.5)
    assert (low, high) == pytest.approx((7.5 - 4.302653 * 0.5, 7.5 + 4.302653 * 0.5), abs=1e-5)
    # the same through the store, in accuracy units (everything scaled by 1/10)
    db = _store(tmp_path, [(0.1, 0.2), (0.2, 0.3), (0.3, 0.5), (0.4, 0.6)])
    _, results = _results(db)
    p = predict(results, method="dm", ipc=10, random_accuracy=0.5)
    assert p.predicted == pytest.approx(0.75)
    assert (p.low, p.high) == pytest.approx((0.75 - 0.4302653 * 0.5, 0.75 + 0.4302653 * 0.5), abs=1e-6)
    assert p.n_datasets == 4


def test_gain_is_paired_over_seeds_with_its_t_interval(tmp_path):
    # Per-seed means: random 0.55, 0.60, 0.50; dc 0.80, 0.70, 0.72 -> differences 0.25, 0.10, 0.22.
    recs = [record("random", "a", 1, [0.5, 0.6], seed=0), record("random", "a", 1, [0.6, 0.6], seed=1),
            record("random", "a", 1, [0.45, 0.55], seed=2),
            record("dc", "a", 1, [0.7, 0.8, 0.9], seed=0), record("dc", "a", 1, [0.7], seed=1),
            record("dc", "a", 1, [0.72, 0.72], seed=2)]
    with Store(store_with(tmp_path / "g.sqlite", recs)) as store:
        [row] = paired_points(metric_values(store)).itertuples()
    d = np.array([0.25, 0.10, 0.22])
    sd = math.sqrt(((d - d.mean()) ** 2).sum() / 2)
    assert row.gain == pytest.approx(d.mean()) and row.gain_se == pytest.approx(sd / math.sqrt(3))
    half = 4.302653 * sd / math.sqrt(3)  # t(0.975, 2)
    assert (row.gain_low, row.gain_high) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-6)
    # paired t: t = mean / (sd / sqrt n), two-sided with n − 1 = 2 degrees of freedom
    assert row.p == pytest.approx(2 * stats.t.sf(d.mean() / (sd / math.sqrt(3)), 2))
    assert row.random_mean == pytest.approx(0.55) and row.distilled_mean == pytest.approx(0.74)
    assert row.random_std == pytest.approx(0.05)  # across the seed means 0.55, 0.60, 0.50
    assert (row.random_n, row.distilled_n, row.seeds) == (3, 3, 3)


def test_one_common_seed_gives_a_gain_without_an_interval(tmp_path):
    recs = [record("random", "a", 1, [0.5, 0.6]), record("dc", "a", 1, [0.7, 0.8, 0.9])]
    with Store(store_with(tmp_path / "g.sqlite", recs)) as store:
        [row] = paired_points(metric_values(store)).itertuples()
    assert row.gain == pytest.approx(0.8 - 0.55)
    assert math.isnan(row.gain_se) and math.isnan(row.gain_low) and math.isnan(row.p) and row.seeds == 1


def test_fewer_than_three_datasets_says_so(tmp_path, capsys):
    db = _store(tmp_path, [(0.4, 0.5), (0.6, 0.7)])
    _, [c] = _results(db)
    assert not c.ok and NEEDS_MORE in c.message and math.isnan(c.pearson_r) and c.line is None
    with pytest.raises(MedbenchError, match="needs at least 3 datasets"):
        predict([c], method="dm", ipc=10, random_accuracy=0.5)
    assert main(["correlate", "--db", str(db)]) == 0
    assert "needs at least 3 datasets (has 2)" in capsys.readouterr().out
    assert main(["correlate", "--db", str(db), "--predict", "50", "--method", "dm", "--ipc", "10"]) == 2
    assert "needs at least 3 datasets" in capsys.readouterr().err


def test_random_baseline_is_never_taken_from_another_protocol(tmp_path):
    # Under p2 the distilled cells have no random baseline of their own: no points, no pairing
    # with p1's random cells even though dataset, size and IPC match.
    p2 = [record("dm", f"ds{i}", 10, [0.9, 0.9], protocol_id="p2") for i in range(3)]
    db = _store(tmp_path, [(0.4, 0.5), (0.5, 0.55), (0.6, 0.7)], extra=p2)
    points, results = _results(db)
    assert set(points.protocol_id) == {"p1"} and len(points) == 3
    assert points.distilled_mean.max() < 0.8  # p2's 0.9 never appears
    assert [c.protocol_id for c in results] == ["p1"]


def test_two_protocols_are_analysed_separately_and_prediction_asks_which(tmp_path, capsys):
    recs = []
    for pid, offset in (("p1", 0.0), ("p2", 0.2)):
        for i, x in enumerate([0.3, 0.4, 0.5]):
            recs.append(record("random", f"ds{i}", 10, [x + offset] * 2, protocol_id=pid))
            recs.append(record("dm", f"ds{i}", 10, [x + offset + 0.1 * (i + 1)] * 2, protocol_id=pid))
    db = store_with(tmp_path / "two.sqlite", recs)
    _, results = _results(db)
    assert [c.protocol_id for c in results] == ["p1", "p2"]
    for c, offset in zip(results, (0.0, 0.2), strict=True):
        assert c.x == pytest.approx((0.3 + offset, 0.4 + offset, 0.5 + offset))
        assert c.line.slope == pytest.approx(2.0)  # y − x grows by 0.1 per 0.1 of x
    with pytest.raises(MedbenchError, match="2 protocols"):
        predict(results, method="dm", ipc=10, random_accuracy=0.4)
    assert predict(results, method="dm", ipc=10, random_accuracy=0.4, protocol_id="p2").predicted == \
        pytest.approx(results[1].line.slope * 0.4 + results[1].line.intercept)
    assert main(["correlate", "--db", str(db), "--predict", "0.4", "--method", "dm", "--ipc", "10"]) == 2
    assert "choose one with --protocol" in capsys.readouterr().err
    assert main(["correlate", "--db", str(db), "--predict", "40", "--method", "dm", "--ipc", "10",
                 "--protocol", "p1"]) == 0
    out = capsys.readouterr().out
    assert "random 40.0 % → predicted" in out and "protocol p1" in out


def test_correlate_cli_prints_the_table_and_rejects_bad_input(tmp_path, capsys):
    db = _store(tmp_path, [(0.4, 0.5), (0.5, 0.55), (0.6, 0.7)])
    assert main(["correlate", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "r (distilled, random)" in out and "r (random, gain)" in out and "gain (pp) ± SE" in out
    assert main(["correlate", "--db", str(db), "--predict", "0.5"]) == 2
    assert "--predict needs --method and --ipc" in capsys.readouterr().err
    assert main(["correlate", "--db", str(tmp_path / "none.sqlite")]) == 2


def test_spearman_p_is_exact_for_few_datasets():
    from medbench.analysis.correlation import spearman_exact

    # 3 datasets in the same order: 2 of the 3! orderings reach |ρ| = 1, so p = 1/3 (scipy's t approximation: ~0)
    assert spearman_exact(np.array([0.1, 0.2, 0.3]), np.array([0.4, 0.5, 0.9])) == pytest.approx((1.0, 1 / 3))
    # 5 datasets, ρ = 0.9 (one adjacent swap): |ρ| ≥ 0.9 for 1 + 4 orderings at each end: p = 10/120
    rho, p = spearman_exact(np.array([1.0, 2, 3, 4, 5]), np.array([2.0, 3, 5, 4, 6]))
    assert rho == pytest.approx(0.9) and p == pytest.approx(10 / 120)
