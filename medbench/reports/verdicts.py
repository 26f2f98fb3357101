"""The answer first: verdicts in words, the cross-dataset ranking, and the notes every table needs
to be read right (what its seeds can detect, which baseline each method met, what was cut).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from medbench.analysis.frames import base_method
from medbench.analysis.multiplicity import ALPHA, POWER, PRIMARY, SECONDARY
from medbench.analysis.ranking import Ranking
from medbench.analysis.study import METRIC_NAMES, Study
from medbench.analysis.verdicts import TableVerdict
from medbench.core.errors import MedbenchError
from medbench.core.hparams import as_dict
from medbench.distill.contract import get_method
from medbench.reports.tables import Table


def _label(key: tuple) -> str:
    return key[1] + ("" if key[2] is None else f" ({key[2]} px)") + f", IPC {key[3]}"


def _pp(value: float) -> str:
    return f"{100 * value:+.1f}"


def sentence(verdict: TableVerdict) -> str:
    """One line: which methods beat their matched baseline after Holm (or none), and which rows are
    no better than chance."""
    rows = verdict.rows.set_index("method")
    tested = rows[(rows.role == "method") & rows.primary_gain.notna()]
    parts = []
    for m in verdict.winners():
        r = rows.loc[m]
        parts.append(f"**{m}** beats {r.baseline} by {_pp(r.primary_gain)} pp [{_pp(r.primary_low)}, "
                     f"{_pp(r.primary_high)}] (Holm p = {r.primary_p_holm:.2g})")
    worse = [m for m in tested.index if tested.loc[m, "primary_significant"] and tested.loc[m, "primary_gain"] < 0]
    text = f"{_label(verdict.key)}: " + ("; ".join(parts) if parts else
                                          ("no method beats its matched baseline" if len(tested) else
                                           "no method has its matched baseline here"))
    if worse:
        text += f"; worse than their matched baseline: {', '.join(worse)}"
    chance = list(rows[(rows.role != "full") & ~rows.above_chance.astype(bool)].index)
    if chance:
        text += f"; no better than chance: {', '.join(chance)}"
    return text + "."


def ranking_sentence(ranking: Ranking) -> str:
    """The cross-dataset ranking of one protocol and IPC in one line."""
    if ranking.ranks.empty:
        return f"IPC {ranking.ipc}: no method was measured on every dataset."
    order = ", ".join(f"{m} {r:.2f}" for m, r in ranking.ranks.items())
    text = f"IPC {ranking.ipc}, average rank over {len(ranking.datasets)} datasets (1 = best): {order}"
    if np.isfinite(ranking.friedman_p):
        text += f"; Friedman p = {ranking.friedman_p:.2g}"
    different = ranking.different()
    if different:
        text += "; Wilcoxon–Holm separates " + ", ".join(f"{a} > {b}" for a, b in different)
    elif ranking.posthoc is not None:
        text += "; no pair of methods differs after Wilcoxon–Holm"
    if ranking.message:
        text += f" ({ranking.message})"
    if ranking.left_out:
        text += f". Not ranked (missing on some dataset): {', '.join(ranking.left_out)}"
    return text + "."


def ranking_table(rankings: list[Ranking]) -> Table | None:
    """Average ranks per IPC (a column each) with the Friedman p under the table."""
    if not rankings:
        return None
    first = rankings[0].ranks
    methods = sorted({m for r in rankings for m in r.ranks.index}, key=lambda m: (first.get(m, math.inf), m))
    columns = ["method", *[f"IPC {r.ipc}" for r in rankings]]
    rows = [{"method": m, **{f"IPC {r.ipc}": f"{r.ranks[m]:.2f}" if m in r.ranks.index else "—"
                             for r in rankings}} for m in methods]
    table = Table(f"Average rank across datasets ({METRIC_NAMES.get(rankings[0].metric, rankings[0].metric)})",
                  columns, rows)
    table.notes.append("Per dataset, methods are ranked by their mean over seeds (1 = best, ties share the mean rank); "
                       "the column is the average over datasets. IPCs are ranked separately. Friedman test, then "
                       "Wilcoxon signed-rank tests between every pair with Holm's correction (Demšar, JMLR 2006; "
                       "scipy, scikit-posthocs); the critical-difference diagram joins methods no test separates.")
    return table


def power_note(verdict: TableVerdict) -> str:
    if not np.isfinite(verdict.detectable):
        return f"IPC {verdict.key[3]}: with one seed no test is possible: run more seeds."
    return (f"What these seeds can show at IPC {verdict.key[3]}: with {verdict.seeds} seeds and {PRIMARY} over "
            f"{verdict.primary_tests} "
            f"primary test(s), a gain is detected with {POWER:.0%} power only if it is at least "
            f"{verdict.detectable:.1f} standard deviations of its per-seed differences (paired t-test, α = {ALPHA}); "
            "a gain that is not significant is not evidence of no gain.")


def baselines_note(verdict: TableVerdict) -> str:
    rows = verdict.rows[verdict.rows.baseline.fillna("") != ""]
    if rows.empty:
        return ""
    pairs = {}
    for r in rows.itertuples():
        pairs.setdefault(r.baseline, []).append(r.method)
    listed = "; ".join(f"{', '.join(ms)} → {b}" for b, ms in pairs.items())
    return f"Matched baselines at IPC {verdict.key[3]}: {listed}."


def settings_notes(cells: pd.DataFrame) -> list[str]:
    """Per method row: each setting that differs from the method's default (the official code's value
    unless the README's table of differences says otherwise), as ``value [default]``."""
    out = []
    for method, group in cells.groupby("method"):
        config = json.loads(group.iloc[0].config)
        name = str(config.get("method", base_method(method)))
        try:
            defaults = as_dict(get_method(name).make_params())
        except MedbenchError:
            continue
        params = config.get("params") or {}
        changed = [f"{k} {params[k]} [{defaults[k]}]" for k in sorted(params)
                   if k in defaults and json.dumps(params[k], default=str) != json.dumps(defaults[k], default=str)]
        if changed:
            out.append(f"{method}: {', '.join(changed)}")
    return out


def table_notes(study: Study, verdicts: list[TableVerdict], cells: pd.DataFrame) -> list[str]:
    """The notes under one dataset's table (its IPCs' verdicts share them)."""
    notes = []
    if verdicts:
        interval = ("over seeds and over test images (seed spread and a bootstrap of the test images, added in "
                    "quadrature)" if all(v.test_bootstrap for v in verdicts) else
                    "over seeds only (no per-image test predictions are stored for some cells)")
        notes.append(f"{METRIC_NAMES[study.metric]} % (the report metric): mean over seeds [95 % interval {interval}]; "
                     f"⚠: no better than chance (the interval reaches the chance level); † one seed. Bold: the "
                     f"best row and every row not significantly worse than it ({SECONDARY}). Vs matched baseline: the "
                     f"primary family, paired per seed, '*' significant after {PRIMARY} (α = {ALPHA}); zero spread: "
                     f"the same difference on every seed (identical sets), never tested. Vs random, rank and beats: "
                     f"the secondary family (every pair of rows, {SECONDARY}); '= matched' where the matched "
                     "baseline is plain random.")
        notes += list(dict.fromkeys(n for n in (baselines_note(v) for v in verdicts) if n))
        notes += list(dict.fromkeys(power_note(v) for v in verdicts))
        if any((v.rows.n < 2).any() for v in verdicts):
            notes.append("† one seed: no spread over seeds to test against; its interval (where shown) is over test "
                         "images only. Run more seeds (--seeds 0,1,2,3,4) before reading a verdict.")
        full = [v.rows[v.rows.role == "full"] for v in verdicts]
        if any(len(f) and int(f.n.iloc[0]) < 3 for f in full):
            notes.append("The full-data row has fewer than 3 seeds: HLR's interval needs at least 3 (run full with "
                         "--seeds 0,1,2).")
    settings = settings_notes(cells)
    if settings:
        notes.append("Settings changed from each method's default (value [default]): " + "; ".join(settings) + ".")
    if cells.method.str.contains("(accuracy-selected)", regex=False).any():
        notes.append("accuracy-selected: cells that chose their checkpoint (or subset) by val accuracy, the rule "
                     "before balanced accuracy became the selection metric; never pooled with new cells.")
    if cells.method.str.contains(" = ", regex=False).any():
        notes.append("a = b: rows whose condensed sets are identical on every seed, shown and ranked once.")
    return notes


def summary_lines(study: Study, protocol_id: str) -> list[str]:
    """The verdicts of a protocol's tables in words, then its rankings."""
    lines = [sentence(v) for k, v in sorted(study.tables.items(), key=lambda kv: (kv[0][1], str(kv[0][2]), kv[0][3]))
             if k[0] == protocol_id]
    lines += [ranking_sentence(r) for r in study.rankings if r.protocol_id == protocol_id]
    return lines


def headline(study: Study) -> str:
    return (f"Verdicts in {METRIC_NAMES[study.metric]} (test): each method against its matched baseline, paired over "
            f"seeds, {PRIMARY}-corrected within each dataset and IPC (α = {ALPHA}).")
