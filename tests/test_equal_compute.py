"""Equal compute: budgets expand into cells of iterative methods only, and the report's equal-budget
table and anytime figure show what each method reached within each budget."""

from __future__ import annotations

import base64

from _records import record, store_with

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
    budgeted = expand(GridSpec(**{**base.__dict__, "budgets": (5.0, 20.0)}))
    assert [(c.method, c.budget) for c in budgeted] == [("random", None), ("dm", 5.0), ("dm", 20.0),
                                                         ("herding", None)]
    assert len({c.cell_id for c in budgeted}) == 4
    ids = {c.method: c.cell_id for c in plain}
    assert {c.cell_id for c in budgeted if c.budget is None} == {ids["random"], ids["herding"]}
    assert ids["dm"] not in {c.cell_id for c in budgeted}  # a budgeted run is not the unlimited one


def _budgeted(method, accs, seed, budget, seconds):
    rec = record(method, "alpha", 10, accs, seed=seed, distill_seconds=(seconds or 49) + 1, params={"tag": budget})
    if budget is not None:
        rec.config["budget_seconds"] = budget
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
                 _budgeted("dc", [0.62 + 0.01 * seed] * 2, seed, None, None)]  # no checkpoint seconds recorded
    db = store_with(tmp_path / "r.sqlite", recs)
    from medbench.analysis.frames import model_scores

    with Store(db, readonly=True) as store:
        frame = budget_frame(store.cells(), model_scores(store))
    assert set(frame.method) == {"random", "dm", "mtt", "herding", "dc"} and len(frame) == 27
    table = equal_budget_table(frame, "p1")
    assert table.columns == ["dataset", "IPC", "method", "10 s", "40 s", "none (full run)"]
    rows = {r["method"]: r for r in table.rows}
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
                          (order.index("dm"), "none (full run)")}
    assert "the expert buffer that mtt train from" in table.notes[-1] and "alpha 75 s" in table.notes[-1]
    png = base64.b64decode(anytime(frame, "t"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    text = write_report(db, tmp_path / "out").leaderboard.read_text()
    assert "### Balanced accuracy at equal distillation budget" in text and "| dm (10 s) " in text
