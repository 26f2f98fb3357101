"""Leaderboard tables: per protocol, per dataset, every method at every IPC next to random and full.

Tables are built as plain rows first (numbers plus a "best" flag) and rendered to Markdown or
HTML afterwards, so both outputs always show the same numbers and the same bold cells. Cells of
different protocols land in different sections: a column never mixes protocols.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tabulate import tabulate

from medbench.analysis.frames import ipc_label, is_baseline
from medbench.analysis.multiplicity import ALPHA
from medbench.analysis.seeds import across_seeds, seed_means
from medbench.analysis.study import METRIC_NAMES, Study, test_counts
from medbench.analysis.testset import chance_level
from medbench.analysis.verdicts import PLAIN
from medbench.storage.store import Store

ACC = "accuracy %"


def method_order(methods: list[str]) -> list[str]:
    """random first (the yardstick), then its matched variants and the other random baselines, then
    the distillation methods, full (upper bound) last."""
    unique = set(methods)
    baselines = sorted(m for m in unique if is_baseline(m) and m != "random")
    rest = sorted(m for m in unique if not is_baseline(m) and m != "full")
    return [m for m in ("random",) if m in unique] + baselines + rest + [m for m in ("full",) if m in unique]


@dataclass
class Table:
    """One rendered-later table: a title, column names and rows of display strings."""

    title: str
    columns: list[str]
    rows: list[dict[str, str]]
    bold: set[tuple[int, str]] = field(default_factory=set)  # (row index, column)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        rows = [[f"**{r.get(c, '')}**" if (i, c) in self.bold else r.get(c, "") for c in self.columns]
                for i, r in enumerate(self.rows)]
        return tabulate(rows, headers=self.columns, tablefmt="github", disable_numparse=True)

    def html(self, wrap: set[str] | frozenset[str] = frozenset()) -> str:
        # The method column reads as text (left-aligned); numbers align right; ``wrap`` columns of words wrap.
        attr = {c: ' class="name"' if c == "method" else ' class="wrap"' if c in wrap else "" for c in self.columns}
        head = "".join(f"<th{attr[c]}>{html.escape(c)}</th>" for c in self.columns)
        body = []
        for i, r in enumerate(self.rows):
            first = i > 0 and r.get("IPC") is not None and r.get("IPC") != self.rows[i - 1].get("IPC")
            cls = ' class="full"' if r.get("method") == "full" else ' class="group"' if first else ""
            cells = "".join(
                f"<td class=\"best\"><b>{html.escape(str(r.get(c, '')))}</b></td>" if (i, c) in self.bold
                else f"<td{attr[c]}>{html.escape(str(r.get(c, '')))}</td>" for c in self.columns)
            body.append(f"<tr{cls}>{cells}</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def pm(mean: float, std: float) -> str:
    """Percent mean ± std (std omitted when undefined, e.g. one network)."""
    if mean is None or not np.isfinite(mean):
        return "—"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if std is not None and np.isfinite(std) else f"{100 * mean:.1f}"


def aggregate(values: pd.DataFrame) -> pd.DataFrame:
    """Per (protocol, dataset, size, method, IPC, metric): mean ± std across seeds of the per-seed
    means (:mod:`medbench.analysis.seeds`; ``spread`` says "networks" where one seed leaves only the
    network spread), ``count`` networks in all, ``seeds``, and the condensed set's size."""
    keys = ["protocol_id", "dataset", "size", "method", "ipc", "metric"]
    out = across_seeds(seed_means(values)).rename(columns={"networks": "count"})
    extra = values.groupby(keys, dropna=False).agg(ratio=("compression_ratio", "mean"),
                                                   images=("condensed_images", "mean")).reset_index()
    return out.merge(extra, on=keys)


def selections(cells: pd.DataFrame) -> dict[tuple, str]:
    """(protocol_id, dataset, size, row, IPC) -> which checkpoint val chose, per seed, and among how
    many candidates: "100, 0 (init), 100 of 3". Random with candidates > 1 shows the chosen subset.
    ``cells``: done cells with their rows' display names (:class:`medbench.analysis.study.Study`)."""
    if cells.empty:
        return {}
    out = {}
    for key, group in cells.groupby(["protocol_id", "dataset", "size", "method", "ipc"], dropna=False):
        chosen, counts = [], set()
        for config in group.sort_values("seed").config:
            info = json.loads(config).get("condensed_info") or {}
            pick = info.get("chosen_iteration", info.get("iteration", info.get("chosen_candidate")))
            if pick is None or not info.get("candidates", 2 if "iteration" in info else 1) > 1:
                continue
            initial = pick == 0 and "chosen_candidate" not in info
            chosen.append(f"{pick} (init)" if initial else str(pick))
            counts.add(info.get("candidates"))
        if chosen:
            of = "/".join(str(c) for c in sorted(c for c in counts if c)) or "?"
            noun = "subsets" if "random" in str(key[3]) else "checkpoints"
            size = None if pd.isna(key[2]) else int(key[2])
            out[(key[0], key[1], size, key[3], None if pd.isna(key[4]) else int(key[4]))] = (
                f"{', '.join(chosen)} of {of} {noun}")
    return out


def n_train(facts: dict[tuple[str, object], dict]) -> dict[tuple[str, object], int]:
    """(dataset, size) -> training images, from the dataset facts."""
    return {key: int(f["n_train"]) for key, f in facts.items() if "n_train" in f}


def chance_note(facts: dict, metric: str) -> str:
    """What guessing scores on this test split: the majority-class rate and the chance level of the
    report metric, so a number at or below them is seen for what it is."""
    counts = test_counts(facts)
    if not counts or not sum(counts):
        return ""
    share = max(counts) / sum(counts)
    return (f"Test split: {sum(counts)} images, classes {counts}. Always predicting the majority class scores "
            f"{100 * share:.1f} % accuracy and {100 / len(counts):.1f} % balanced accuracy; a classifier "
            f"without skill scores {100 * chance_level(metric, counts):.1f} % {METRIC_NAMES[metric]} "
            "(the chance level the ⚠ flag compares with).")


def duplicates_note(facts: dict) -> str:
    """The dataset's exact duplicates across and within splits (cells stored before they were
    counted: none), and whether this dataset's val and test had them removed."""
    found = facts.get("duplicates")
    if not found:
        return ""
    dropped = facts.get("duplicates_dropped_from")
    across = found["val_in_train"] + found["test_in_train"] + found["test_in_val"]
    within = {s: found[f"within_{s}"] for s in ("train", "val", "test") if found.get(f"within_{s}")}
    text = (f"Exact duplicates: {found['test_in_train']} test and {found['val_in_train']} val images are also training "
            f"images, {found['test_in_val']} test images also val images"
            + (f"; within splits {', '.join(f'{n} in {s}' for s, n in within.items())}" if within else ""))
    if dropped:
        return text + f". Removed here from val ({dropped['val']}) and test ({dropped['test']}): --drop-duplicates."
    return text + (". Scored as unseen here (medbench run --drop-duplicates removes them)." if across else ".")


MATCHED = "vs matched baseline (pp) [95 % CI]"
RANDOM = "vs random (pp) [95 % CI]"
HLR = "HLR (pp) [95 % CI]"
SOFT_MARK = " ‡"
SOFT_NOTE = ("‡ soft labels: the gain over plain random compares a soft-label set with hard-label random; its "
             "matched baseline is random_soft (random's subset with the same teacher's soft labels, evaluated "
             "the same way).")
HLR_NOTE = ("HLR (hard-label recovery, DD-Ranking; lower is better): the full training set's score minus the set's "
            "score with hard labels (a soft-label set's images trained with each image's class), with a Welch "
            "95 % interval over the seeds of both.")
CHANCE_MARK = " ⚠"


def _ci(mean: float, low: float, high: float, signed: bool = False) -> str:
    if not np.isfinite(mean):
        return ""
    fmt = "+.1f" if signed else ".1f"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{100 * mean:{fmt}}"
    return f"{100 * mean:{fmt}} [{100 * low:{fmt}}, {100 * high:{fmt}}]"


def _p(value: float) -> str:
    return "" if not np.isfinite(value) else (f"{value:.2g}" if value >= 1e-4 else "<1e-4")


def _gain(row: pd.Series, prefix: str, adjusted: str) -> str:
    """A gain with its interval; '*' where significant after its family's correction; 'zero spread'
    where every seed's difference is the same (never starred)."""
    gain = row.get(f"{prefix}_gain", math.nan)
    if not np.isfinite(gain):
        return ""
    if bool(row.get(f"{prefix}_zero_spread", False)):
        return f"{100 * gain:+.1f} (zero spread)"
    text = _ci(gain, row[f"{prefix}_low"], row[f"{prefix}_high"], signed=True)
    p = row.get(adjusted, math.nan)
    return text + (" *" if np.isfinite(p) and p < ALPHA else "")


def dataset_table(study: Study, protocol_id: str, dataset: str, size: object, chosen: dict[tuple, str],
                  dd: pd.DataFrame | None = None) -> Table:
    """One dataset under one protocol: IPC groups of rows (baselines first, then methods), the
    full-data row last; in the study's report metric with accuracy beside it."""
    size_key = None if pd.isna(size) else int(size)
    verdicts = sorted(((k, v) for k, v in study.tables.items() if k[:3] == (protocol_id, dataset, size_key)),
                      key=lambda kv: kv[0][3])
    accuracy = study.per_seed[study.per_seed.metric == "accuracy"]
    metric_col = f"{METRIC_NAMES[study.metric]} % [95 % CI]"
    columns = ["IPC", "method", metric_col, ACC, MATCHED, "p (Holm)", RANDOM, "rank", "beats", "chosen (val)",
               "seeds × networks"]
    has_full = any((v.rows.role == "full").any() for _, v in verdicts)
    if has_full and dd is not None and not dd.empty:
        columns.append(HLR)
    rows: list[dict[str, str]] = []
    bold: set[tuple[int, str]] = set()
    full_row: dict[str, str] | None = None
    for key, verdict in verdicts:
        frame = verdict.rows.set_index("method")
        for method in method_order(list(frame.index)):
            r = frame.loc[method]
            acc = accuracy[(accuracy.protocol_id == protocol_id) & (accuracy.dataset == dataset)
                           & (accuracy.method == method)
                           & ((accuracy.ipc.isna()) if method == "full" else (accuracy.ipc == key[3]))
                           & ((accuracy["size"].isna()) if size_key is None else (accuracy["size"] == size_key))]
            networks = int(acc.networks.max()) if len(acc) else 0
            seeds = int(r["n"])
            row = {"IPC": "full" if method == "full" else str(key[3]), "method": method,
                   metric_col: _ci(r["mean"], r["low"], r["high"]) + (" †" if seeds < 2 else "")
                   + ("" if r["above_chance"] else CHANCE_MARK),
                   ACC: pm(acc.value.mean(), acc.value.std(ddof=1) if len(acc) > 1 else math.nan),
                   "seeds × networks": f"{seeds} × {networks}" if seeds else ""}
            if method == "full":
                full_row = row
                continue
            soft = dd is not None and _dd(dd, key, method) is not None and bool(_dd(dd, key, method)["soft"])
            row.update({MATCHED: _gain(r, "primary", "primary_p_holm") if r["role"] == "method" else
                        ("baseline" if r["role"] == "baseline" else ""),
                        "p (Holm)": _p(r.get("primary_p_holm", math.nan)) if r["role"] == "method" else "",
                        RANDOM: ("= matched" if r.get("baseline") == PLAIN else
                                 _gain(r, "random", "random_p_bh") + (SOFT_MARK if soft else "")),
                        "rank": "" if not np.isfinite(r["rank"]) else str(int(r["rank"])),
                        "beats": r["beats"] or "",
                        "chosen (val)": chosen.get((protocol_id, dataset, size_key, method, key[3]), "")})
            if HLR in columns:
                row[HLR] = _hlr(_dd(dd, key, method))
            if bool(r["tied_best"]):
                bold.add((len(rows), metric_col))
            rows.append(row)
    if full_row is not None:
        rows.append(full_row)
    title = f"{dataset}" + ("" if size_key is None else f" ({size_key} px)")
    table = Table(title, columns, rows, bold)
    if any(r.get(RANDOM, "").endswith(SOFT_MARK) for r in rows):
        table.notes.append(SOFT_NOTE)
    return table


def _dd(dd: pd.DataFrame, key: tuple, method: str) -> pd.Series | None:
    hit = dd[(dd.protocol_id == key[0]) & (dd.dataset == key[1]) & (dd.ipc == key[3]) & (dd.method == method)]
    return None if hit.empty else hit.iloc[0]


def _hlr(d: pd.Series | None) -> str:
    if d is None or not np.isfinite(d["hlr"]):
        return ""
    return _ci(d["hlr"], d["hlr_low"], d["hlr_high"])


def failed_notes(store: Store, protocol_id: str) -> list[str]:
    cells = store.cells()
    failed = cells[(cells.status == "failed") & (cells.protocol_id == protocol_id)]
    return [f"failed: {r.method} · {r.dataset} · IPC {ipc_label(r.ipc)} · seed {r.seed}: {r.message}"
            for r in failed.itertuples()]


def frame_table(frame: pd.DataFrame, title: str, drop: tuple[str, ...] = ("protocol",)) -> Table:
    """A display DataFrame (all strings) as a :class:`Table`."""
    frame = frame.drop(columns=[c for c in drop if c in frame.columns])
    return Table(title, [str(c) for c in frame.columns],
                 [{str(k): str(v) for k, v in row.items()} for row in frame.to_dict("records")])


def _spread(row: pd.Series) -> str:
    """mean ± std, with † where the std is over the networks of a single seed."""
    return pm(row["mean"], row["std"]) + (" †" if row.get("spread") == "networks" else "")


def protocol_comparison(agg: pd.DataFrame, names: dict[str, str], metric: str = "accuracy") -> Table | None:
    """The same (dataset, size, method, IPC) cells evaluated under several protocols, side by side:
    what the evaluation protocol alone changes, in ``metric``. ``names``: protocol_id -> a short name.
    None when no cell key was evaluated under more than one protocol."""
    acc = agg[agg.metric == metric].copy()
    acc["size"] = acc["size"].astype(object).where(acc["size"].notna(), None)
    acc["ipc"] = acc.ipc.map(ipc_label)
    keys = ["dataset", "size", "method", "ipc"]
    counts = acc.groupby(keys, dropna=False).protocol_id.transform("nunique")
    acc = acc[counts > 1]
    if acc.empty:
        return None
    pids = list(dict.fromkeys(acc.protocol_id))
    columns = ["dataset", "IPC", "method", *[f"{names.get(p, p)} %" for p in pids]]
    difference = "right − left (pp)"
    columns += [difference] if len(pids) == 2 else []
    order = {m: i for i, m in enumerate(method_order(list(acc.method)))}
    rows = []
    for (dataset, size, ipc), group in acc.groupby(["dataset", "size", "ipc"], dropna=False, sort=False):
        for method, sub in sorted(group.groupby("method"), key=lambda kv: order[kv[0]]):
            sub = sub.set_index("protocol_id")
            row = {"dataset": dataset + ("" if size is None or pd.isna(size) else f" ({int(size)} px)"),
                   "IPC": str(ipc), "method": method}
            row.update({f"{names.get(p, p)} %": _spread(sub.loc[p]) if p in sub.index else "—" for p in pids})
            if len(pids) == 2 and all(p in sub.index for p in pids):
                row[difference] = f"{100 * (sub.loc[pids[1], 'mean'] - sub.loc[pids[0], 'mean']):+.1f}"
            rows.append(row)
    table = Table("The same cells under different evaluation protocols", columns, rows)
    table.notes.append(f"Test {METRIC_NAMES[metric]}, mean ± std across seeds; each column is one protocol (its "
                       "settings are in its "
                       "section). Distillation does not depend on the protocol, so each row's sets are the same; "
                       "only how the evaluation networks are trained on them differs.")
    return table
