"""Equal compute: what each method reaches within a distillation budget.

Cells run with ``--budget-flops``, ``--budget-seconds`` or ``--budget-cpu-seconds`` stop each
iterative method at the first iteration that ends past that much distillation and keep the
checkpoint validation chose so far; their test score (in the report metric) is "what the method
reaches at that budget". The anytime figure draws it against the seconds actually spent (one line
per method through its budgets and its run without a budget, the band is ± the std across seeds);
a method run only without a budget (one-shot selections) is available from the seconds its run
took, random selection everywhere (it costs nothing). The table gives the same numbers, a column
per budget; the expert buffer of trajectory methods, built once per dataset, is named beside it,
not counted in it.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from medbench.analysis.frames import ipc_label
from medbench.analysis.study import METRIC_NAMES
from medbench.distill.budget import KINDS, UNITS, Budget
from medbench.reports.tables import Table, method_order, pm

# What frames.method_variants appends to a budgeted cell's name: " (30 s)", " (1e+12 FLOP)"…
BUDGET_SUFFIX = r" \([0-9.e+-]+ (" + "|".join(UNITS.values()) + r")\)$"
COLUMNS = ["protocol_id", "dataset", "size", "ipc", "method", "budget_kind", "budget", "seed", "score", "seconds",
           "seconds_bound", "expert_seconds"]


def budget_frame(cells: pd.DataFrame, values: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Per seed: the test ``metric`` (mean over its networks, column ``score``), the cell's budget (NaN:
    none) and its distillation seconds, for datasets/IPCs where some cell ran with a budget."""
    acc = values[values.metric == metric]
    if acc.empty:
        return pd.DataFrame(columns=COLUMNS)
    configs = {cid: json.loads(c) for cid, c in zip(cells.cell_id, cells.config, strict=True)}
    infos = {cid: config.get("condensed_info") or {} for cid, config in configs.items()}
    # Distillation seconds as the budget counts them (checkpoint scoring excluded) where the method
    # recorded them, else the cell's whole distillation time (an upper bound: scoring included).
    recorded = {cid: info.get("checkpoints") for cid, info in infos.items()}
    seconds = {cid: recorded[cid][-1][1] if recorded[cid] else total
               for cid, total in zip(cells.cell_id, cells.distill_seconds, strict=True)}
    per_cell = acc.groupby(["cell_id", "protocol_id", "dataset", "size", "ipc", "method", "seed"],
                           dropna=False).value.mean().reset_index()
    budgets = {c: Budget.from_config(configs[c]) for c in per_cell.cell_id}
    per_cell["budget_kind"] = [b.kind if b is not None else None for b in budgets.values()]
    per_cell["budget"] = [b.amount if b is not None else np.nan for b in budgets.values()]
    per_cell["seconds"] = [seconds.get(c, np.nan) for c in per_cell.cell_id]
    per_cell["seconds_bound"] = [not recorded.get(c) for c in per_cell.cell_id]
    # Trajectory methods' expert buffer: built once per dataset, outside any cell's seconds.
    per_cell["expert_seconds"] = [infos[c].get("expert_train_seconds", np.nan) for c in per_cell.cell_id]
    per_cell["method"] = per_cell.method.str.replace(BUDGET_SUFFIX, "", regex=True)  # other variants stay apart
    per_cell = per_cell.rename(columns={"value": "score"})
    keys = ["protocol_id", "dataset", "size", "ipc"]
    has_budget = per_cell.groupby(keys, dropna=False).budget.transform(lambda b: b.notna().any())
    return per_cell[has_budget & per_cell.ipc.notna()][COLUMNS].reset_index(drop=True)


def equal_budget_table(frame: pd.DataFrame, protocol_id: str, metric: str = "accuracy") -> Table | None:
    """Rows: dataset, IPC, method; columns: each budget and the run without one (the test ``metric``,
    mean ± std across seeds; the best of each dataset and budget in bold)."""
    sub = frame[frame.protocol_id == protocol_id]
    if sub.empty:
        return None
    given = {(k, a) for k, a in zip(sub.budget_kind, sub.budget, strict=True) if isinstance(k, str)}
    budgets: list[Budget | None] = [*(Budget(k, a) for k, a in sorted(given, key=lambda b: (KINDS.index(b[0]), b[1]))),
                                    None]
    names = {b: b.label if b is not None else "none (full run)" for b in budgets}
    rows, bold = [], set()
    for (dataset, _size, ipc), group in sub.groupby(["dataset", "size", "ipc"], dropna=False, sort=True):
        best: dict[Budget | None, tuple[float, int]] = {}
        for m in method_order(list(group.method.unique())):
            row = {"dataset": dataset, "IPC": str(ipc_label(ipc)), "method": m}
            for b in budgets:
                row[names[b]], mean = _at_budget(group[group.method == m], b)
                if mean is not None and mean > best.get(b, (-np.inf, 0))[0]:
                    best[b] = (mean, len(rows))
            rows.append(row)
        bold |= {(i, names[b]) for b, (_, i) in best.items()}
    name = METRIC_NAMES.get(metric, metric)
    table = Table(f"{name[0].upper()}{name[1:]} at equal distillation budget",
                  ["dataset", "IPC", "method", *names.values()], rows, bold=bold)
    table.notes.append(
        f"Test {name} %, mean ± std across seeds, of the checkpoint each method's validation score chose within the "
        "budget (bold: the best of its dataset and budget); in brackets the mean seconds of distillation actually "
        "spent (checkpoint scoring excluded): a method stops at the first iteration that ends past the budget, so it "
        "can overrun it by up to one iteration; '≤': that run recorded no checkpoint seconds, so its whole "
        "distillation time, scoring included, stands there. 'none': the run without a budget. A method run only "
        "without a budget (a one-shot selection such as herding, or an iterative method left out of the budget "
        "grid) counts at a seconds budget only if its whole run fitted in it, else 'over budget'; at a FLOP or "
        "CPU-seconds budget it is 'not metered'. random distils nothing (no seconds shown under 0.5 s). FLOPs: "
        "convolutions and matrix products (FlopCounterMode), the same on any machine and load.")
    experts = sub.dropna(subset=["expert_seconds"])
    if len(experts):
        costs = experts.groupby("dataset").expert_seconds.max()
        users = ", ".join(method_order(list(experts.method.unique())))
        table.notes.append(f"Not in these seconds: the expert buffer that {users} train from, built once per dataset "
                           "and shared by their cells: " + ", ".join(f"{d} {s:.0f} s" for d, s in costs.items())
                           + " of expert training.")
    return table


def _at_budget(cells: pd.DataFrame, budget: Budget | None) -> tuple[str, float | None]:
    """One method's cell of the equal-budget table, "mean ± std (seconds spent)", and its mean."""
    one_shot = cells.budget.isna().all()  # run only without a budget
    if budget is None or one_shot:
        pick = cells[cells.budget.isna()]
    else:
        pick = cells[(cells.budget_kind == budget.kind) & (cells.budget == budget.amount)]
    if pick.empty:
        return "—", None
    seconds = pick.seconds.mean()
    bound = "≤" if pick.seconds_bound.any() and not one_shot else ""
    spent = f" ({bound}{seconds:.0f} s)" if seconds >= 0.5 else ""
    if budget is not None and one_shot and seconds >= 0.5 and budget.kind != "seconds":
        return f"not metered{spent}", None  # a one-shot selection counts no CPU seconds or FLOPs
    if budget is not None and one_shot and seconds > budget.amount:
        return f"over budget{spent}", None
    acc = pick.score
    return pm(acc.mean(), acc.std(ddof=1) if len(acc) > 1 else np.nan) + spent, float(acc.mean())
