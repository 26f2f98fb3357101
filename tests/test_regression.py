"""``medbench baseline`` / ``medbench check``: the tolerance rule, timing, missing cells, a real sabotage."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch
from _records import record, store_with
from conftest import FAST, make_arrays, write_npz

import medbench
from medbench.analysis.regression import Tolerance, compare, make_baseline, snapshot
from medbench.cli.main import main
from medbench.distill.contract import METHODS, CondensedSet, DistillTask, register_method
from medbench.storage.store import Store


def _baseline(db):
    with Store(db) as store:
        return make_baseline(store)


def _now(db):
    with Store(db) as store:
        return snapshot(store)


def test_baseline_file_holds_each_cell_key(tmp_path):
    db = store_with(tmp_path / "a.sqlite", [
        record("dm", "alpha", 10, [0.8, 0.82, 0.78], distill_seconds=20.0, iterations=100),
        record("random", "alpha", 10, [0.6, 0.6, 0.6], distill_seconds=0.01),
        record("full", "alpha", None, [0.9, 0.9, 0.9]),
        record("dc", "alpha", 10, [], status="failed"),
    ])
    out = tmp_path / "reports" / "baseline.json"
    assert main(["baseline", "--db", str(db), "--out", str(out)]) == 0
    cells = {(c["method"], c["ipc"]): c for c in json.loads(out.read_text())["cells"]}
    assert set(cells) == {("dm", 10), ("random", 10), ("full", None)}  # failed cells are not frozen
    dm = cells[("dm", 10)]
    assert (dm["dataset"], dm["size"], dm["seed"], dm["protocol_id"]) == ("alpha", 28, 0, "p1")
    assert dm["accuracy_mean"] == pytest.approx(0.8) and dm["accuracy_std"] == pytest.approx(0.02)
    assert dm["n_models"] == 3 and dm["seconds_per_iteration"] == pytest.approx(0.2)
    assert cells[("random", 10)]["seconds_per_iteration"] is None
    assert main(["check", "--baseline", str(out), "--db", str(db)]) == 0


def test_tolerance_is_k_standard_errors_of_the_difference(tmp_path):
    base = _baseline(store_with(tmp_path / "a.sqlite", [record("dm", "alpha", 10, [0.80, 0.82, 0.78])]))
    now = _now(store_with(tmp_path / "b.sqlite", [record("dm", "alpha", 10, [0.74, 0.75, 0.76])]))
    # SE = sqrt(0.02²/3 + 0.01²/3) = 0.01291; drop 0.05: > 2·SE = 0.0258, < 4·SE = 0.0516
    se = math.sqrt(0.02**2 / 3 + 0.01**2 / 3)
    assert 2 * se < 0.05 < 4 * se
    [f2] = compare(base, now, Tolerance(sigmas=2))
    [f4] = compare(base, now, Tolerance(sigmas=4))
    assert f2.status == "regressed" and "drop 5.0 pp" in f2.detail
    assert f4.status == "ok"
    # the absolute floor: identical networks (std 0) may still move by less than a point
    base0 = _baseline(store_with(tmp_path / "c.sqlite", [record("dm", "beta", 10, [0.80, 0.80])]))
    near = _now(store_with(tmp_path / "d.sqlite", [record("dm", "beta", 10, [0.795, 0.795])]))
    far = _now(store_with(tmp_path / "e.sqlite", [record("dm", "beta", 10, [0.78, 0.78])]))
    assert compare(base0, near, Tolerance())[0].status == "ok"
    assert compare(base0, far, Tolerance())[0].status == "regressed"
    better = _now(store_with(tmp_path / "f.sqlite", [record("dm", "beta", 10, [0.95, 0.95])]))
    assert compare(base0, better, Tolerance())[0].status == "ok"


def test_time_factor_per_iteration_with_a_floor(tmp_path):
    base = _baseline(store_with(tmp_path / "a.sqlite", [
        record("dm", "alpha", 10, [0.8, 0.8], distill_seconds=20.0, iterations=100),
        record("random", "alpha", 10, [0.6, 0.6], distill_seconds=0.01)]))
    slow = _now(store_with(tmp_path / "b.sqlite", [
        record("dm", "alpha", 10, [0.8, 0.8], distill_seconds=40.0, iterations=100),
        record("random", "alpha", 10, [0.6, 0.6], distill_seconds=0.05)]))  # ×5, but 40 ms
    findings = {f.key[0]: f for f in compare(base, slow, Tolerance())}
    assert findings["dm"].status == "slower" and "s/iteration 0.2 → 0.4" in findings["dm"].detail
    assert findings["random"].status == "ok"
    # fewer iterations in the same time: per iteration slower even though the total is equal
    fewer = _now(store_with(tmp_path / "c.sqlite", [
        record("dm", "alpha", 10, [0.8, 0.8], distill_seconds=22.0, iterations=50),
        record("random", "alpha", 10, [0.6, 0.6], distill_seconds=0.01)]))
    findings = {f.key[0]: f.status for f in compare(base, fewer, Tolerance(time_floor=0))}
    assert findings == {"dm": "slower", "random": "ok"}  # 0.44 s/it > 1.5 × 0.2
    findings = {f.key[0]: f.status for f in compare(base, fewer, Tolerance(time_factor=3, time_floor=0))}
    assert findings == {"dm": "ok", "random": "ok"}


def test_missing_and_failed_cells_fail_the_check(tmp_path, capsys):
    a = store_with(tmp_path / "a.sqlite", [record("dm", "alpha", 10, [0.8, 0.8]),
                                           record("dm", "beta", 10, [0.7, 0.7])])
    out = tmp_path / "base.json"
    assert main(["baseline", "--db", str(a), "--out", str(out)]) == 0
    b = store_with(tmp_path / "b.sqlite", [record("dm", "alpha", 10, [], status="failed")])
    assert main(["check", "--baseline", str(out), "--db", str(b)]) == 1
    text = capsys.readouterr().out
    assert "failed" in text and "missing" in text and "beta" in text
    assert main(["check", "--baseline", str(tmp_path / "none.json"), "--db", str(b)]) == 2
    (tmp_path / "bad.json").write_text("{}")
    assert main(["check", "--baseline", str(tmp_path / "bad.json"), "--db", str(b)]) == 2


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
    register_method("regress_probe", params=ProbeParams)(probe)
    yield "regress_probe"
    METHODS._items.pop("regress_probe", None)  # keep the registry as other tests expect it


def test_check_catches_a_sabotaged_learning_rate(tmp_path, probe_method, capsys):
    """A real tiny grid: frozen, re-checked (passes), then run with lr 1e-9 (fails)."""
    data = write_npz(tmp_path / "toy.npz", make_arrays(n=(60, 12, 60), classes=3, size=12))
    settings = dict(methods=[probe_method], datasets=[str(data)], ipc=[2], device="cpu", matched_baselines=False,
                    seeds=[0], **{**FAST, "epochs": 12, "eval_models": 3})
    good = medbench.run(db=tmp_path / "good.sqlite", **settings)
    bad = medbench.run(db=tmp_path / "bad.sqlite", method_args={probe_method: {"lr": 1e-9}}, **settings)
    assert good.test_accuracy[0] > 0.8 and bad.test_accuracy[0] < 0.6  # the sabotage really hurts
    assert good.protocol_id[0] == bad.protocol_id[0] and good.cell_id[0] != bad.cell_id[0]
    base = tmp_path / "baseline.json"
    assert main(["baseline", "--db", str(tmp_path / "good.sqlite"), "--out", str(base)]) == 0
    assert main(["check", "--baseline", str(base), "--db", str(tmp_path / "good.sqlite")]) == 0
    capsys.readouterr()
    assert main(["check", "--baseline", str(base), "--db", str(tmp_path / "bad.sqlite"),
                 "--tolerance-sigmas", "2", "--time-factor", "1.5"]) == 1
    out = capsys.readouterr().out
    assert "regressed" in out and "regress_probe" in out and "1 regressed" in out
