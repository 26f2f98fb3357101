"""Seed-level statistics (medbench.analysis.seeds) and the leaderboard built on them, against
values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from _records import record, store_with
from scipy import stats

from medbench.analysis.frames import metric_values
from medbench.analysis.seeds import across_seeds, gains, paired, seed_means
from medbench.analysis.verdicts import analyse_table
from medbench.reports.build import build_sections
from medbench.storage.store import Store


def _per_seed(recs, tmp_path):
    with Store(store_with(tmp_path / "s.sqlite", recs)) as store:
        return seed_means(metric_values(store))


def test_std_is_across_seed_means_and_within_seed_spread_is_kept(tmp_path):
    recs = [record("random", "a", 1, [0.40, 0.50], seed=0), record("random", "a", 1, [0.60, 0.62], seed=1),
            record("random", "a", 1, [0.70, 0.74], seed=2)]
    row = across_seeds(_per_seed(recs, tmp_path)).iloc[0]
    means = np.array([0.45, 0.61, 0.72])
    assert row["mean"] == pytest.approx(means.mean())
    assert row["std"] == pytest.approx(means.std(ddof=1)) and row["spread"] == "seeds"
    within = np.mean([np.std([0.40, 0.50], ddof=1), np.std([0.60, 0.62], ddof=1), np.std([0.70, 0.74], ddof=1)])
    assert row["within_std"] == pytest.approx(within)
    assert (row["seeds"], row["networks"]) == (3, 6)


def test_one_seed_reports_the_network_spread_and_says_so(tmp_path):
    row = across_seeds(_per_seed([record("random", "a", 1, [0.4, 0.5, 0.6])], tmp_path)).iloc[0]
    assert row["std"] == pytest.approx(0.1) and row["spread"] == "networks" and row["seeds"] == 1


def test_paired_uses_only_common_seeds():
    a = pd.Series([0.8, 0.7, 0.9, 0.99], index=[0, 1, 2, 7])
    b = pd.Series([0.6, 0.6, 0.6], index=[0, 1, 2])
    result = paired(a, b)
    d = np.array([0.2, 0.1, 0.3])
    assert result.n == 3 and result.diff == pytest.approx(0.2)
    assert result.p == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    assert not result.significant  # t = 3.46, 2 df: p = 0.074
    assert paired(a, pd.Series([0.5], index=[9])).n == 0


def test_gains_ranks_and_ties(tmp_path):
    recs = []
    for seed, (r, strong, weak) in enumerate([(0.50, 0.70, 0.52), (0.55, 0.76, 0.50), (0.52, 0.71, 0.55),
                                              (0.48, 0.69, 0.49)]):
        recs += [record("random", "a", 10, [r], seed=seed), record("dm", "a", 10, [strong], seed=seed),
                 record("dc", "a", 10, [weak], seed=seed)]
    per_seed = _per_seed(recs, tmp_path)
    g = gains(per_seed).set_index("method")
    assert g.loc["dm", "significant"] and g.loc["dm", "gain"] == pytest.approx(0.2025)
    assert not g.loc["dc", "significant"]  # differences +0.02, −0.05, +0.03, +0.01
    values = {m: grp.set_index("seed").value for m, grp in per_seed[per_seed.metric == "accuracy"].groupby("method")}
    verdict = analyse_table(("p1", "a", 28, 10), values, {}, {}, {"random"}, metric="accuracy")
    r = verdict.rows.set_index("method")
    assert r.loc["dm", "rank"] == 1 and r.loc["dm", "beats"] == "dc, random"  # Benjamini–Hochberg over 3 pairs
    assert r.loc["dc", "rank"] == 2 and r.loc["random", "rank"] == 2  # tied: not significantly different
    assert verdict.winners() == ["dm"] and r.loc["dm", "tied_best"] and not r.loc["dc", "tied_best"]


def test_leaderboard_shows_seed_spread_paired_gain_and_chosen_checkpoints(tmp_path):
    recs = []
    for seed, (r, d) in enumerate([(0.50, 0.70), (0.55, 0.76), (0.52, 0.71)]):
        recs.append(record("random", "a", 10, [r, r + 0.02], seed=seed))
        rec = record("dm", "a", 10, [d, d + 0.02], seed=seed)
        rec.config["condensed_info"] = {"chosen_iteration": 0 if seed == 1 else 200, "candidates": 3}
        rec.config["selection_metric"] = "balanced_accuracy"
        recs.append(rec)
    with Store(store_with(tmp_path / "b.sqlite", recs)) as store:
        [section] = build_sections(store, metric="accuracy")
    [table] = section.datasets
    rows = {row["method"]: row for row in table.rows}
    d = np.array([0.20, 0.21, 0.19])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)  # no stored predictions: seeds only
    interval = f"[{100 * (0.2 - half):+.1f}, {100 * (0.2 + half):+.1f}]"
    assert rows["dm"]["vs matched baseline (pp) [95 % CI]"] == f"+20.0 {interval} *"  # one test: Holm = raw p
    assert float(rows["dm"]["p (Holm)"]) == pytest.approx(stats.ttest_1samp(d, 0).pvalue, rel=1e-2)
    assert rows["dm"]["rank"] == "1" and rows["random"]["rank"] == "2"
    assert rows["dm"]["beats"] == "random" and rows["random"]["beats"] == ""
    assert rows["dm"]["chosen (val)"] == "200, 0 (init), 200 of 3 checkpoints"
    assert rows["random"]["seeds × networks"] == "3 × 2"
    means = np.array([0.51, 0.56, 0.53])
    assert rows["random"]["accuracy %"] == f"{100 * means.mean():.1f} ± {100 * means.std(ddof=1):.1f}"


def test_the_same_cells_under_two_protocols_stand_side_by_side(tmp_path):
    from medbench.reports.build import protocols_table

    recs = []
    for pid, shift in (("pdc", 0.0), ("pdsa", 0.04)):
        protocol = {"name": pid[1:], "epochs": 300, "augment": "none" if pid == "pdc" else "dsa"}
        for seed in range(2):
            recs.append(record("random", "a", 10, [0.50 + shift + 0.01 * seed], seed=seed, protocol_id=pid,
                               protocol=protocol))
    recs.append(record("dm", "a", 10, [0.7], protocol_id="pdsa", protocol=protocol))  # one protocol only: not shown
    with Store(store_with(tmp_path / "p.sqlite", recs)) as store:
        table = protocols_table(store)
    [row] = table.rows
    assert row["method"] == "random" and row["right − left (pp)"] == "+4.0"
    assert [c for c in table.columns if c.endswith("%")] == ["dc · pdc %",
                                                              "dsa (changed: epochs 300) · pdsa %"]


def test_the_matched_baseline_stands_beside_plain_random(tmp_path):
    """random with candidates=3 (best of 3 subsets on val) is named apart and compared with the plain
    random baseline, which keeps its name."""
    recs = []
    for seed, (plain, best) in enumerate([(0.50, 0.56), (0.55, 0.60), (0.52, 0.58)]):
        recs.append(record("random", "a", 10, [plain], seed=seed, params={"candidates": 1, "eval_epochs": 300,
                                                                           "eval_lr": 0.01, "augment": False}))
        recs.append(record("random", "a", 10, [best], seed=seed, params={"candidates": 3, "eval_epochs": 300,
                                                                          "eval_lr": 0.01, "augment": False}))
    with Store(store_with(tmp_path / "m.sqlite", recs)) as store:
        per_seed = seed_means(metric_values(store))
    assert set(per_seed.method) == {"random", "random (candidates=3)"}
    [row] = gains(per_seed).itertuples()
    assert row.method == "random (candidates=3)" and row.gain == pytest.approx(0.0567, abs=1e-3)
