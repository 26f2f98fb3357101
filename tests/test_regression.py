"""Golden files (``medbench baseline`` / ``medbench check``): the equivalence rule against hand-computed
values, the fingerprint rule against a one-pixel change, platforms, missing cells, re-blessing, a real
sabotage, and the shipped CI preset's golden file."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import pytest
import torch
from _records import record, store_with
from conftest import FAST, make_arrays, write_npz

import medbench
from medbench.analysis.regression import Rules, compare, equivalence, make_golden, snapshot
from medbench.cli.main import main
from medbench.distill.contract import METHODS, CondensedSet, DistillTask, register_method
from medbench.harness.gridfile import preset_path, read_grid_file
from medbench.harness.runner import fingerprint
from medbench.storage.store import Store

HERE = {"packages": {"torch": "2.14.1"}, "torch_threads": 1, "cpu_capability": "AVX2", "device": "cpu"}


def _cells(scores, *, method="dm", sha=None, environment=HERE):
    """One cell per seed, each with the balanced accuracy ``scores[seed]`` on both of its networks."""
    return [record(method, "alpha", 2, [s + 0.05, s + 0.05], balanced=[s, s], seed=seed,
                   sha256=(sha or {}).get(seed, f"set{seed}"), environment=environment)
            for seed, s in enumerate(scores)]


def _golden(tmp_path, scores, **kw):
    with Store(store_with(tmp_path / "golden.sqlite", _cells(scores, **kw))) as store:
        return make_golden(store)


def _now(tmp_path, scores, **kw):
    with Store(store_with(tmp_path / "now.sqlite", _cells(scores, **kw))) as store:
        return snapshot(store)


def _by_rule(findings, rule):
    return [f for f in findings if f.rule == rule]


# --- the equivalence rule ---------------------------------------------------------------------


def test_equivalence_matches_a_hand_computed_tost():
    golden, current = [0.70, 0.72, 0.68], [0.69, 0.70, 0.69]
    # Differences −0.01, −0.02, +0.01: mean −1/150, sd 0.015275, se = sd/√3 = 0.0088192.
    mean, se = -1 / 150, 0.015275252 / math.sqrt(3)
    t95 = 2.919986  # t quantile 0.95 at 2 degrees of freedom (tables)
    low, high = mean - t95 * se, mean + t95 * se  # the 90 % interval: [−0.03242, +0.01909]
    assert (round(low, 5), round(high, 5)) == (-0.03242, 0.01909)

    def cdf2(t):  # Student's t with 2 degrees of freedom has a closed form
        return 0.5 + t / (2 * math.sqrt(2 + t * t))

    for margin in (0.05, 0.02):
        p = max(1 - cdf2((mean + margin) / se), cdf2((mean - margin) / se))
        ok, line = equivalence(golden, current, margin, 0.05)
        assert ok == (p < 0.05) == (-margin < low and high < margin)
        assert f"CI [{100 * low:+.2f}, {100 * high:+.2f}]" in line and f"TOST p = {p:.3g}" in line
        assert ("not within" in line) == (not ok) and f"± {100 * margin:g} pp" in line
    assert equivalence(golden, current, 0.05, 0.05)[0] and not equivalence(golden, current, 0.02, 0.05)[0]


def test_equivalence_without_spread_is_the_difference_against_the_margin():
    assert equivalence([0.5, 0.6, 0.7], [0.5, 0.6, 0.7], 0.05, 0.05) == \
        (True, "Δ +0.00 pp (all 3 seeds differ by the same amount) within ± 5 pp")
    ok, line = equivalence([0.5, 0.6, 0.7], [0.56, 0.66, 0.76], 0.05, 0.05)
    assert not ok and "Δ +6.00 pp" in line and "outside" in line
    assert equivalence([0.5], [0.52], 0.05, 0.05) == (True, "Δ +2.00 pp (1 seed, no interval) within ± 5 pp")


def test_a_gain_beyond_the_margin_fails_too(tmp_path):
    golden = _golden(tmp_path, [0.60, 0.62, 0.58, 0.61, 0.59])
    now = _now(tmp_path, [0.70, 0.73, 0.69, 0.70, 0.71])
    [finding] = _by_rule(compare(golden, now, Rules(fingerprint=False)), "equivalence")
    assert finding.failed and "mean Δ +10.60 pp over 5 seeds" in finding.detail
    assert finding.where.startswith("dm · alpha@28 · ipc 2 · p1")


# --- the fingerprint rule ---------------------------------------------------------------------


def test_one_changed_pixel_changes_the_fingerprint():
    images = torch.rand(4, 1, 8, 8)
    labels = torch.arange(4)
    one_pixel = images.clone()
    one_pixel[2, 0, 3, 5] += 1 / 255
    assert fingerprint(CondensedSet(images, labels)) == fingerprint(CondensedSet(images.clone(), labels.clone()))
    assert fingerprint(CondensedSet(images, labels)) != fingerprint(CondensedSet(one_pixel, labels))


def test_a_changed_set_fails_on_the_same_platform_and_is_na_on_another(tmp_path):
    golden = _golden(tmp_path, [0.6, 0.7, 0.8])
    same = _now(tmp_path, [0.6, 0.7, 0.8], sha={1: "changed"})
    findings = _by_rule(compare(golden, same, Rules()), "fingerprint")
    assert [f.status for f in findings] == ["ok", "fail", "ok"]
    assert "sha256 set1 → changed" in findings[1].detail and "seed 1" in findings[1].where
    # the scores are equal, so only the fingerprint catches it
    assert not _by_rule(compare(golden, same, Rules()), "equivalence")[0].failed
    other = (tmp_path / "other").mkdir() or tmp_path / "other"
    elsewhere = _now(other, [0.6, 0.7, 0.8], sha={1: "changed"}, environment={**HERE, "torch_threads": 4})
    findings = _by_rule(compare(golden, elsewhere, Rules()), "fingerprint")
    assert {f.status for f in findings} == {"n/a"} and "threads 1 → 4" in findings[0].detail
    assert not any(f.failed for f in compare(golden, same, Rules(fingerprint=False)))


def test_missing_and_failed_cells_fail(tmp_path):
    golden = _golden(tmp_path, [0.6, 0.7, 0.8])
    cells = _cells([0.6, 0.7])
    cells[1] = dataclasses.replace(cells[1], status="failed", models=[])
    with Store(store_with(tmp_path / "now.sqlite", cells)) as store:
        findings = compare(golden, snapshot(store), Rules())
    missing = _by_rule(findings, "missing")
    assert [f.detail for f in missing] == ["cell status failed, no scores", "not in the database"]


# --- the command: baseline, re-blessing, check ------------------------------------------------


def test_baseline_check_and_rebless(tmp_path, capsys):
    db = store_with(tmp_path / "a.sqlite", [*_cells([0.6, 0.7, 0.8]), record("dc", "alpha", 2, [], status="failed")])
    out = tmp_path / "golden.json"
    assert main(["baseline", "--db", str(db), "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["format"] == 2 and document["metric"] == "balanced_accuracy" and len(document["cells"]) == 3
    assert document["cells"][0]["score"] == pytest.approx(0.6) and document["cells"][0]["sha256"] == "set0"
    assert document["cells"][0]["platform"] == {"torch": "2.14.1", "threads": 1, "cpu_capability": "AVX2",
                                                "device": "cpu"}
    assert main(["check", "--baseline", str(out), "--db", str(db)]) == 0
    assert "fingerprint: 3 ok; equivalence: 1 ok" in capsys.readouterr().out
    assert main(["check", "--baseline", str(out), "--db", str(db), "--verbose"]) == 0
    listed = capsys.readouterr().out
    assert listed.count("| fingerprint | ok ") == 3 and "| equivalence | ok " in listed

    # an existing golden file is only replaced by a re-blessing with a reason
    assert main(["baseline", "--db", str(db), "--out", str(out)]) == 2
    assert main(["baseline", "--db", str(db), "--out", str(out), "--rebless"]) == 2
    assert main(["baseline", "--db", str(db), "--out", str(out), "--reason", "x"]) == 2
    assert "--rebless needs --reason" in capsys.readouterr().err
    changed = store_with(tmp_path / "b.sqlite", _cells([0.6, 0.75, 0.8], sha={1: "new"}))
    assert main(["check", "--baseline", str(out), "--db", str(changed)]) == 1
    printed = capsys.readouterr().out
    assert "| fingerprint |" in printed and "seed 1" in printed and "sha256 set1 → new" in printed
    assert main(["baseline", "--db", str(changed), "--out", str(out), "--rebless", "--reason",
                 "DM's loss now averages over classes"]) == 0
    history = json.loads(out.read_text())["history"]
    assert [h["reason"] for h in history] == ["first blessing", "DM's loss now averages over classes"]
    assert history[1]["changed"] == ["dm · alpha@28 · ipc 2 · seed 1 · p1: 70.0 → 75.0 %, set set1 → new"]
    assert main(["check", "--baseline", str(out), "--db", str(changed)]) == 0


def test_an_old_format_baseline_is_refused_in_one_line(tmp_path, capsys):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": 1, "cells": []}))
    assert main(["check", "--baseline", str(old), "--db", str(tmp_path / "x.sqlite")]) == 2
    assert "golden format 1" in capsys.readouterr().err


@dataclass(frozen=True)
class ProbeParams:
    lr: float = 0.5
    steps: int = 20


def probe(task: DistillTask, params: ProbeParams) -> CondensedSet:
    """Test-only method: noise images pulled towards their class mean, ``steps`` times by ``lr``."""
    generator = torch.Generator().manual_seed(task.seed)
    means = torch.stack([task.real(idx).mean(0) for idx in task.class_indices])
    labels = torch.arange(task.num_classes).repeat_interleave(task.ipc)
    x = torch.randn(len(labels), task.channels, task.size, task.size, generator=generator)
    for _ in range(params.steps):
        x = x + params.lr * (means[labels] - x)
    return CondensedSet(x, labels)


@pytest.fixture
def probe_method():
    register_method("regress_probe", params=ProbeParams, selects=False)(probe)
    yield "regress_probe"
    METHODS._items.pop("regress_probe", None)  # keep the registry as other tests expect it


def test_check_catches_a_sabotaged_learning_rate(tmp_path, probe_method, capsys):
    """A real tiny grid over 3 seeds: frozen, re-checked (passes), then run with lr 1e-9 (fails)."""
    data = write_npz(tmp_path / "toy.npz", make_arrays(n=(60, 12, 60), classes=3, size=12))
    settings = dict(methods=[probe_method], datasets=[str(data)], ipc=[2], device="cpu", matched_baselines=False,
                    seeds=[0, 1, 2], **{**FAST, "epochs": 12, "eval_models": 2})
    good = medbench.run(db=tmp_path / "good.sqlite", **settings)
    bad = medbench.run(db=tmp_path / "bad.sqlite", method_args={probe_method: {"lr": 1e-9}}, **settings)
    assert good.test_accuracy.mean() > 0.8 and bad.test_accuracy.mean() < 0.6  # the sabotage really hurts
    golden = tmp_path / "golden.json"
    assert main(["baseline", "--db", str(tmp_path / "good.sqlite"), "--out", str(golden)]) == 0
    assert main(["check", "--baseline", str(golden), "--db", str(tmp_path / "good.sqlite")]) == 0
    capsys.readouterr()
    assert main(["check", "--baseline", str(golden), "--db", str(tmp_path / "bad.sqlite")]) == 1
    out = capsys.readouterr().out
    assert "| equivalence |" in out and "regress_probe · toy@12 · ipc 2" in out and "not within ± 5 pp" in out
    assert "fingerprint: 3 fail" in out


def test_the_ci_preset_and_its_golden_file_describe_the_same_cells():
    grid = read_grid_file(preset_path("ci-golden"))
    with open(preset_path("ci-golden").with_name("ci-golden.golden.json")) as fh:
        golden = json.load(fh)
    cells = {(c["method"], c["dataset"], c["ipc"], c["seed"]) for c in golden["cells"]}
    expected = {(m, d, i, s) for m in grid["methods"] for d, _ in grid["datasets"] for i in grid["ipcs"]
                for s in grid["seeds"]}
    assert cells == expected and len({c["protocol_id"] for c in golden["cells"]}) == 1
    assert golden["format"] == 2 and golden["history"][0]["reason"]


@pytest.mark.parametrize("argv, message", [
    (["check"], "give --baseline FILE (with --db) or --preset NAME"),
    (["check", "--preset", "nosuch"], "unknown preset 'nosuch'"),
    (["check", "--preset", "covid19-mtt"], "preset covid19-mtt has no golden file"),
    (["check", "--preset", "ci-golden", "--margin", "5"], "--margin must be a fraction in (0, 1), got 5"),
    (["check", "--preset", "ci-golden", "--alpha", "0.7"], "--alpha must be in (0, 0.5)"),
    (["check", "--preset", "ci-golden", "--time-factor", "0.5"], "--time-factor must be above 1"),
    (["baseline", "--db", "x.sqlite", "--margin", "0"], "--margin must be a fraction in (0, 1), got 0"),
])
def test_bad_check_options_are_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
