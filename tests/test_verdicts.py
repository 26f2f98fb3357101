"""Verdicts that hold on imbalanced, small test sets: corrected tests, rankings across datasets, the
test-image bootstrap, zero-spread differences, matched baselines, identical sets and the selection
metric, against values computed by hand or published."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from _records import record, store_with
from _synth import make_splits, make_task
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from statsmodels.stats.power import TTestPower

import medbench.methods.idm as idm_module
import medbench.tuning.trial as trial_module
from medbench.analysis.multiplicity import PRIMARY, SECONDARY, adjust, detectable_effect, t_test_power
from medbench.analysis.ranking import rank_methods, smallest_wilcoxon_p
from medbench.analysis.testset import chance_level, resample_weights, weighted_metric
from medbench.analysis.verdicts import compare, estimate
from medbench.core.hparams import as_dict
from medbench.distill.contract import CondensedSet, get_method
from medbench.evaluation import Protocol
from medbench.harness.grid import Cell, GridSpec, digest, expand
from medbench.methods import synthetic as syn
from medbench.methods.random_selection import initial_tiles
from medbench.nn.models import ModelSpec
from medbench.reports import write_report
from medbench.tuning.trial import TrialContext, run_trial

pytestmark = pytest.mark.usefixtures("one_thread")


def test_holm_and_benjamini_hochberg_on_a_known_p_vector():
    p = pd.Series([0.01, 0.04, 0.03, 0.005, math.nan])
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert adjust(p, PRIMARY).tolist()[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: p(i)·m/i = 0.02, 0.02, 0.04, 0.04 -> running min from the top
    assert adjust(p, SECONDARY).tolist()[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert math.isnan(adjust(p, PRIMARY)[4])  # an untestable comparison is not a test


# Demšar (JMLR 2006), Table 6: AUC of C4.5, C4.5+m, C4.5+cf, C4.5+m+cf on 14 UCI data sets.
DEMSAR = pd.DataFrame(
    [[0.763, 0.768, 0.771, 0.798], [0.599, 0.591, 0.590, 0.569], [0.954, 0.971, 0.968, 0.967],
     [0.628, 0.661, 0.654, 0.657], [0.882, 0.888, 0.886, 0.898], [0.936, 0.931, 0.916, 0.931],
     [0.661, 0.668, 0.609, 0.685], [0.583, 0.583, 0.563, 0.625], [0.775, 0.838, 0.866, 0.875],
     [1.000, 1.000, 1.000, 1.000], [0.940, 0.962, 0.965, 0.962], [0.619, 0.666, 0.614, 0.669],
     [0.972, 0.981, 0.975, 0.975], [0.957, 0.978, 0.946, 0.970]],
    columns=["C4.5", "C4.5+m", "C4.5+cf", "C4.5+m+cf"])


def test_friedman_and_wilcoxon_holm_on_demsars_published_example():
    ranking = rank_methods(DEMSAR)
    # The paper's average ranks are 3.143, 2.000, 2.893, 1.964: it ranks the tied 0.975 of "voting" as 2 and 3;
    # tied values share their mean rank here (2.5 each), which moves C4.5+cf and C4.5+m+cf by 0.5/14.
    assert ranking.ranks.to_dict() == pytest.approx({"C4.5": 3.143, "C4.5+m": 2.000, "C4.5+cf": 2.929,
                                                     "C4.5+m+cf": 1.929}, abs=1e-3)
    broken = DEMSAR.copy()
    broken.loc[12, "C4.5+cf"] = 0.9751  # the paper's ranks for voting
    paper = rank_methods(broken)
    assert paper.ranks.to_dict() == pytest.approx({"C4.5": 3.143, "C4.5+m": 2.000, "C4.5+cf": 2.893,
                                                   "C4.5+m+cf": 1.964}, abs=1e-3)
    # The paper's chi²_F = 12N/(k(k+1))·(ΣR² − k(k+1)²/4) = 9.28 from these ranks; scipy corrects it for the
    # ties (mushroom's four-way tie, ...), which shrink the rank variance: a larger statistic, the same verdict.
    ranks = paper.ranks.to_numpy()
    assert 12 * 14 / 20 * ((ranks**2).sum() - 4 * 25 / 4) == pytest.approx(9.28, abs=0.01)
    assert paper.friedman_statistic == pytest.approx(10.23, abs=0.01) and paper.friedman_p < 0.05  # "we reject"
    # Wilcoxon C4.5 vs C4.5+m with zeros split (the paper's section 3.1.3): R+ = 93, R- = 12, T = 12 < 21
    raw = stats.wilcoxon(DEMSAR["C4.5+m"], DEMSAR["C4.5"], zero_method="zsplit")
    assert raw.statistic == 12 and raw.pvalue < 0.05
    assert ranking.posthoc.loc["C4.5", "C4.5+m"] >= raw.pvalue  # Holm never lowers a p-value
    assert smallest_wilcoxon_p(5) == pytest.approx(0.0625) and smallest_wilcoxon_p(6) < 0.05


def test_two_datasets_rank_but_say_they_cannot_separate_methods():
    ranking = rank_methods(DEMSAR.iloc[:2])
    assert len(ranking.ranks) == 4 and "cannot reach p < 0.05" in ranking.message and ranking.different() == []


def test_weighted_metrics_equal_scikit_learn_and_the_bootstrap_is_binomial():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 300)
    predicted = np.where(rng.random(300) < 0.7, truth, rng.integers(0, 3, 300))
    ones = np.ones((1, 300))
    assert weighted_metric("accuracy", truth, predicted, ones, 3)[0] == pytest.approx(accuracy_score(truth, predicted))
    assert weighted_metric("balanced_accuracy", truth, predicted, ones, 3)[0] == pytest.approx(
        balanced_accuracy_score(truth, predicted))
    assert weighted_metric("macro_f1", truth, predicted, ones, 3)[0] == pytest.approx(
        f1_score(truth, predicted, average="macro"))
    # resampling 300 images: the variance of accuracy is p(1 − p)/N (binomial), within 10 %
    boot = weighted_metric("accuracy", truth, predicted, resample_weights(300, 4000), 3)
    p = accuracy_score(truth, predicted)
    assert boot.var(ddof=1) == pytest.approx(p * (1 - p) / 300, rel=0.1)
    assert (resample_weights(300, 50) == resample_weights(300, 50)).all()  # seeded: one report, one answer


def test_an_interval_adds_the_test_set_variance_to_the_seed_spread():
    values = pd.Series([0.5, 0.6, 0.7], index=[0, 1, 2])
    seed_only = estimate(values)
    half = stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
    assert (seed_only.low, seed_only.high) == pytest.approx((0.6 - half, 0.6 + half))
    # every seed's resamples move together by ±0.1: the seed-mean's bootstrap variance is 0.02
    boot = {s: np.array([v - 0.1, v + 0.1]) for s, v in values.items()}
    both = estimate(values, boot)
    half = stats.t.ppf(0.975, 2) * math.sqrt(0.01 / 3 + 0.02)
    assert both.test_var == pytest.approx(0.02) and (both.low, both.high) == pytest.approx((0.6 - half, 0.6 + half))
    # a paired gain: the shared test-set noise cancels, only what differs between the two rows stays
    gain = compare(values + 0.05, values, {s: b + 0.05 for s, b in boot.items()}, boot)
    assert gain.zero_spread and math.isnan(gain.p)


def test_zero_spread_differences_are_reported_and_never_starred(tmp_path):
    recs = []
    for seed, r in enumerate([0.50, 0.60, 0.55]):
        recs += [record("random", "a", 10, [r, r], seed=seed), record("dm", "a", 10, [r + 0.03, r + 0.03], seed=seed)]
    table = write_report(store_with(tmp_path / "z.sqlite", recs), tmp_path / "out", metric="accuracy")
    text = table.leaderboard.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 10 ") and "| dm " in line)
    assert "+3.0 (zero spread)" in row and "*" not in row.split("|")[5]


def test_the_seeds_needed_after_correction():
    assert t_test_power(1.0, 3, 0.05) == pytest.approx(0.179, abs=1e-3)  # 3 seeds, a one-SD effect
    for seeds, tests in ((5, 1), (5, 11), (10, 11)):  # where statsmodels' non-central t is finite
        expected = TTestPower().solve_power(effect_size=None, nobs=seeds, alpha=0.05 / tests, power=0.8)
        assert detectable_effect(seeds, tests) == pytest.approx(expected, rel=1e-4)
    assert detectable_effect(3, 11) > detectable_effect(5, 11) > detectable_effect(10, 11)
    assert math.isnan(detectable_effect(1, 3))


def test_chance_levels():
    assert chance_level("accuracy", [42, 114]) == pytest.approx(114 / 156)
    assert chance_level("balanced_accuracy", [42, 114]) == pytest.approx(0.5)
    share = 114 / 156
    assert chance_level("macro_f1", [42, 114]) == pytest.approx(2 * share / (1 + share) / 2)
    assert chance_level("auc", [3, 4]) == 0.5


@pytest.fixture(scope="module")
def splits():
    return make_splits(size=8)


def test_the_tiled_random_baseline_is_bit_identical_to_idms_initial_set(splits, monkeypatch):
    task = make_task(splits, ipc=2, seed=3)
    tiled = get_method("random_tiled")
    baseline = tiled.run(task, tiled.make_params({"partition": 2}))
    seen = {}

    def capture(task, params, *, initial, **kwargs):
        seen["initial"] = initial
        return CondensedSet(initial, torch.arange(task.num_classes).repeat_interleave(task.ipc))

    monkeypatch.setattr(idm_module.syn, "distill", capture)
    idm = get_method("idm")
    idm.run(task, idm.make_params({"iterations": 1, "batch_real": 8}))
    assert torch.equal(seen["initial"], baseline.images) and torch.equal(baseline.images, initial_tiles(task, 2))
    assert int(baseline.extras["partition"]) == 2 and len(baseline.extras["train_indices"]) == 4 * len(baseline)
    # IDM's matched baseline is the val-chosen tiled random with as many candidates as IDM has checkpoints
    assert idm.baseline({"iterations": 100, "eval_every": 50})[0] == "random_tiled"
    assert idm.baseline({"iterations": 100, "eval_every": 50})[1]["candidates"] == 3


def _choices(monkeypatch, module, scores):
    """Make ``module.val_scores`` return the given (accuracy, balanced accuracy) pairs in turn."""
    calls = iter(scores)
    monkeypatch.setattr(module, "val_scores", lambda *a, **k: dict(zip(("accuracy", "balanced_accuracy"),
                                                                         next(calls), strict=True)))


@pytest.mark.parametrize("metric, chosen", [("balanced_accuracy", 2), ("accuracy", 0)])
def test_checkpoints_and_random_candidates_are_chosen_by_the_selection_metric(splits, monkeypatch, metric, chosen):
    # candidate 0 predicts the majority (high accuracy, chance balanced accuracy); candidate 2 is balanced
    scores = [(0.9, 0.5), (0.6, 0.55), (0.7, 0.8)]
    task = dataclasses.replace(make_task(splits, ipc=1), selection_metric=metric)
    _choices(monkeypatch, syn, scores)
    dm = get_method("dm")
    out = dm.run(task, dm.make_params({"iterations": 2, "eval_every": 1, "batch_real": 8}))
    assert out.info["chosen_iteration"] == chosen and out.info["selection_metric"] == metric
    assert out.info["val_score"] == dict(zip(("accuracy", "balanced_accuracy"), scores[chosen], strict=True))[metric]
    _choices(monkeypatch, syn, scores)
    rnd = get_method("random")
    subset = rnd.run(task, rnd.make_params({"candidates": 3}))
    assert subset.info["chosen_candidate"] == chosen and subset.info["selection_metric"] == metric


def test_a_tuning_trial_scores_the_set_the_method_returns(splits, monkeypatch, tmp_path):
    monkeypatch.setattr(trial_module, "load_dataset", lambda *a, **k: splits)
    reports = []
    context = TrialContext("dm", "toy", None, 2, 0, {"iterations": 4, "eval_every": 2, "eval_epochs": 5,
                                                     "batch_real": 8}, ModelSpec("convnet", {"width": 4, "depth": 2}),
                           "balanced_accuracy", str(tmp_path))
    _choices(monkeypatch, syn, [(0.9, 0.5), (0.6, 0.7), (0.95, 0.6)])
    result = run_trial({"lr_img": 1.0}, context, reports.append)
    # the method kept iteration 2 (balanced 0.7), so the trial's score is 0.7, not the best accuracy 0.95
    assert result["objective"] == pytest.approx(0.7) and [r["objective"] for r in reports] == [0.5, 0.7, 0.7]


def test_the_selection_metric_is_part_of_a_selecting_cells_identity(toy_npz):
    protocol = Protocol(width=4)
    dm = as_dict(get_method("dm").make_params())
    balanced = Cell("dm", str(toy_npz), None, 1, 0, dm, protocol)
    old = Cell("dm", str(toy_npz), None, 1, 0, dm, protocol, selection="accuracy")
    assert balanced.cell_id != old.cell_id
    # accuracy, the rule every stored cell chose by, is left out of the identity: stored cells keep their ids
    assert old.cell_id == digest(["dm", str(toy_npz), None, 1, 0, dm, protocol.identity()])
    plain = as_dict(get_method("random").make_params())
    assert Cell("random", str(toy_npz), None, 1, 0, plain, protocol).cell_id == \
        Cell("random", str(toy_npz), None, 1, 0, plain, protocol, selection="accuracy").cell_id  # chooses nothing


def test_a_grid_gets_its_matched_baselines_before_the_cells_that_need_them(toy_npz):
    spec = GridSpec(methods=("dm", "idm", "herding"), datasets=(str(toy_npz),), ipcs=(1,), seeds=(0,),
                    protocol=Protocol(width=4), method_args={"dm": {"iterations": 10, "eval_every": 5},
                                                             "idm": {"iterations": 10, "eval_every": 5}})
    cells = expand(spec)
    names = [(c.method, c.params.get("candidates")) for c in cells]
    assert names == [("random", 1), ("random", 3), ("dm", None), ("random_tiled", 3), ("idm", None),
                     ("herding", None)]
    assert [c.added for c in cells] == ["random", "random (augment=True, candidates=3)", "",
                                        "random_tiled (augment=True, candidates=3)", "", ""]
    assert [c.method for c in expand(GridSpec(**{**spec.__dict__, "matched_baselines": False}))] == [
        "dm", "idm", "herding"]


def test_identical_sets_are_shown_and_ranked_once(tmp_path):
    recs = []
    for dataset in ("a", "b"):
        for seed in range(3):
            recs.append(record("random", dataset, 1, [0.5 + 0.01 * seed] * 2, seed=seed))
            for method in ("herding", "kcenter"):
                rec = record(method, dataset, 1, [0.6 + 0.01 * seed] * 2, seed=seed)
                rec.config["condensed_sha256"] = f"same-set-{dataset}-{seed}"
                recs.append(rec)
    text = write_report(store_with(tmp_path / "i.sqlite", recs), tmp_path / "out").leaderboard.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 1 ")]
    assert sum("herding = kcenter" in r for r in rows) == 2 and not any("| kcenter " in r for r in rows)
    assert "herding = kcenter 1.00, random 2.00" in text  # ranked once across the two datasets
