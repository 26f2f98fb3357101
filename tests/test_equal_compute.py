"""Equal compute: budgets expand into cells of iterative methods only, and the report's equal-budget
table and anytime figure show what each method reached within each budget."""

from __future__ import annotations

import base64
import dataclasses

import pytest
import torch
from _records import record, store_with
from _synth import make_splits, make_task

from medbench.distill.budget import Budget, Meter, Spent
from medbench.distill.contract import get_method
from medbench.evaluation import Protocol
from medbench.harness.grid import GridSpec, expand
from medbench.reports import write_report
from medbench.reports.compute import budget_frame, equal_budget_table
from medbench.reports.figures import anytime
from medbench.storage.store import Store


def test_budgets_expand_iterative_methods_only_and_keep_unbudgeted_ids(toy_npz):
    base = GridSpec(methods=("random", "dm", "herding"), datasets=(str(toy_npz),), ipcs=(1,), seeds=(0,),
                    protocol=Protocol(width=4), matched_baselines=False)
    plain = expand(base)
    budgeted = expand(GridSpec(**{**base.__dict__, "budgets": (5.0, Budget("seconds", 20.0), Budget("flops", 1e9))}))
    assert [(c.method, c.budget) for c in budgeted] == [  # a plain number is wall-clock seconds
        ("random", None), ("dm", Budget("seconds", 5.0)), ("dm", Budget("seconds", 20.0)),
        ("dm", Budget("flops", 1e9)), ("herding", None)]
    assert len({c.cell_id for c in budgeted}) == 5
    assert budgeted[3].label.endswith("· 1e+09 FLOP")
    ids = {c.method: c.cell_id for c in plain}
    assert {c.cell_id for c in budgeted if c.budget is None} == {ids["random"], ids["herding"]}
    assert ids["dm"] not in {c.cell_id for c in budgeted}  # a budgeted run is not the unlimited one


def test_meter_counts_flops_until_two_iterations_agree_then_charges_each():
    meter = Meter(Spent(seconds=1.0))
    a, b = torch.randn(16, 32), torch.randn(32, 8)
    one = 2 * 16 * 32 * 8
    counted = []
    for i in range(5):  # the first iteration does less (as IDM's, before its queue trained)
        with meter.iteration():
            a @ b if i else a[:, :16] @ b[:16]
        counted.append(meter.spent.flops)
    assert counted == [one / 2, 1.5 * one, 2.5 * one, 3.5 * one, 4.5 * one] and meter._settled
    assert meter.flops_per_iteration == one and meter.spent.seconds > 1.0 and meter.spent.cpu_seconds > 0


@pytest.mark.parametrize(("method", "implementation"), [("dm", None), ("mtt", "unrolled"), ("mtt", "tesla")])
def test_a_flop_budget_stops_a_method_where_the_counted_flops_reach_it(method, implementation, tmp_path):
    splits = make_splits()
    task = make_task(splits, ipc=1)
    args = {"dm": {"iterations": 10, "eval_every": 2, "eval_epochs": 2, "batch_real": 8},
            "mtt": {"num_experts": 2, "buffer_epochs": 4, "batch_train": 16, "max_start_epoch": 2,
                    "expert_epochs": 2, "syn_steps": 3, "iterations": 10, "eval_every": 2, "eval_epochs": 2,
                    "augment": False, "experts_root": str(tmp_path), "implementation": implementation}}[method]
    params = get_method(method).make_params(args)
    assert get_method(method).run(task, params).info["spent"]["flops"] is None  # counted under a FLOP budget only
    full = get_method(method).run(dataclasses.replace(task, budget=Budget("flops", 1e30)), params)
    per_iteration = full.info["flops_per_iteration"]
    assert per_iteration > 0 and full.info["spent"]["flops"] == pytest.approx(10 * per_iteration)
    budget = Budget("flops", 2.5 * per_iteration)  # reached at the end of iteration 3
    stopped = get_method(method).run(dataclasses.replace(task, budget=budget), params)
    assert stopped.info["stopped_by_budget"] == 3 and stopped.info["spent"]["flops"] == pytest.approx(3 * per_iteration)
    assert not dataclasses.replace(task, budget=Budget("seconds", 1.0)).counts_flops  # counted under FLOPs only


def _budgeted(method, accs, seed, budget, seconds, kind="seconds"):
    rec = record(method, "alpha", 10, accs, seed=seed, distill_seconds=(seconds or 49) + 1, params={"tag": budget})
    if budget is not None:
        rec.config[f"budget_{kind}"] = budget
    if seconds is not None:
        rec.config["condensed_info"]["checkpoints"] = [[0, 0.0, 0.1], [5, seconds, 0.5]]
    if method == "mtt":
        rec.config["condensed_info"]["expert_train_seconds"] = 75.0
    return rec


def test_equal_budget_table_and_anytime_figure(tmp_path):
    recs = []
    for seed in range(3):
        recs += [record("random", "alpha", 10, [0.40 + 0.01 * seed] * 2, seed=seed, distill_seconds=0.0),
                 _budgeted("dm", [0.50 + 0.01 * seed] * 2, seed, 10.0, 10.0),
                 _budgeted("dm", [0.60 + 0.01 * seed] * 2, seed, 40.0, 40.0),
                 _budgeted("dm", [0.70 + 0.01 * seed] * 2, seed, None, 120.0),
                 _budgeted("mtt", [0.45 + 0.01 * seed] * 2, seed, 10.0, 14.0),  # overran: one long iteration
                 _budgeted("mtt", [0.65 + 0.01 * seed] * 2, seed, 40.0, 40.0),
                 _budgeted("herding", [0.55 + 0.01 * seed] * 2, seed, None, 30.0),  # one-shot, 30 s
                 _budgeted("dc", [0.52 + 0.01 * seed] * 2, seed, 10.0, 12.0),
                 _budgeted("dc", [0.62 + 0.01 * seed] * 2, seed, None, None),  # no checkpoint seconds recorded
                 _budgeted("dm", [0.58 + 0.01 * seed] * 2, seed, 1e12, 30.0, kind="flops")]
    db = store_with(tmp_path / "r.sqlite", recs)
    from medbench.analysis.frames import model_scores

    with Store(db, readonly=True) as store:
        frame = budget_frame(store.cells(), model_scores(store))
    assert set(frame.method) == {"random", "dm", "mtt", "herding", "dc"} and len(frame) == 30
    table = equal_budget_table(frame, "p1")
    assert table.columns == ["dataset", "IPC", "method", "10 s", "40 s", "1e+12 FLOP", "none (full run)"]
    rows = {r["method"]: r for r in table.rows}
    # a FLOP budget is its own column; a one-shot selection counts no FLOPs
    assert rows["dm"]["1e+12 FLOP"] == "59.0 ± 1.0 (30 s)" and rows["mtt"]["1e+12 FLOP"] == "—"
    assert rows["herding"]["1e+12 FLOP"] == "not metered (30 s)"
    # the seconds actually spent stand beside each distilling method's accuracy, an overrun shows
    assert rows["dm"]["10 s"] == "51.0 ± 1.0 (10 s)" and rows["mtt"]["10 s"] == "46.0 ± 1.0 (14 s)"
    assert rows["mtt"]["40 s"] == "66.0 ± 1.0 (40 s)" and rows["random"]["40 s"] == "41.0 ± 1.0"
    assert rows["dm"]["none (full run)"] == "71.0 ± 1.0 (120 s)" and rows["mtt"]["none (full run)"] == "—"
    # a method without budgeted runs counts at a budget only if its whole run fitted in it
    assert rows["herding"]["10 s"] == "over budget (30 s)" and rows["herding"]["40 s"] == "56.0 ± 1.0 (30 s)"
    # a run without checkpoint seconds shows its whole distillation time as an upper bound
    assert rows["dc"]["none (full run)"] == "63.0 ± 1.0 (≤50 s)" and rows["dc"]["40 s"] == "—"
    # the best of each budget in bold: dc at 10 s (52 > 51), mtt at 40 s (66 > 61), dm without a budget
    order = [r["method"] for r in table.rows]
    assert table.bold == {(order.index("dc"), "10 s"), (order.index("mtt"), "40 s"),
                          (order.index("dm"), "1e+12 FLOP"), (order.index("dm"), "none (full run)")}
    assert "the expert buffer that mtt train from" in table.notes[-1] and "alpha 75 s" in table.notes[-1]
    png = base64.b64decode(anytime(frame, "t"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    text = write_report(db, tmp_path / "out").leaderboard.read_text()
    assert "### Balanced accuracy at equal distillation budget" in text and "| dm (10 s) " in text
    assert "| dm (1e+12 FLOP) " in text
