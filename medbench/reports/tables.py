"""Leaderboard tables: per protocol, per dataset, every method at every IPC next to random and full.

Tables are built as plain rows first (numbers plus a "best" flag) and rendered to Markdown or
HTML afterwards, so both outputs always show the same numbers and the same bold cells. Cells of
different protocols land in different sections: a column never mixes protocols.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tabulate import tabulate

from medbench.analysis import ddranking
from medbench.analysis.frames import ipc_label, method_variants
from medbench.analysis.seeds import across_seeds, seed_means
from medbench.storage.store import Store

ACC = "accuracy %"
BAL = "balanced acc %"


def method_order(methods: list[str]) -> list[str]:
    """random first (the yardstick), then the distillation methods, full (upper bound) last."""
    rest = sorted(m for m in set(methods) if m not in ("random", "full"))
    return [m for m in ("random",) if m in methods] + rest + [m for m in ("full",) if m in methods]


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

    def html(self) -> str:
        # The method column reads as text (left-aligned); numbers align right.
        attr = {c: ' class="name"' if c == "method" else "" for c in self.columns}
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


def selections(store: Store) -> dict[tuple, str]:
    """(protocol_id, dataset, size, method, IPC) -> which checkpoint val chose, per seed, and among how
    many candidates: "100, 0 (init), 100 of 3". Random with candidates > 1 shows the chosen subset."""
    cells = store.cells()
    cells = cells[cells.status == "done"].copy()
    if cells.empty:
        return {}
    cells["method"] = cells.cell_id.map(method_variants(cells))
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
            out[key] = f"{', '.join(chosen)} of {of} {noun}"
    return out


@dataclass
class Comparisons:
    """Seed-level comparisons (every protocol; looked up per protocol): gains over random, ranks,
    checkpoint choices."""

    gains: pd.DataFrame  # medbench.analysis.seeds.gains
    ranks: pd.DataFrame  # medbench.analysis.seeds.ranks
    chosen: dict[tuple, str]
    dd: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ddranking.COLUMNS))  # HLR, IOR

    def lookup(self, frame: pd.DataFrame, protocol_id: str, dataset: str, size: object, method: str,
               ipc: int) -> pd.Series | None:
        hit = frame[(frame.protocol_id == protocol_id) & (frame.dataset == dataset) & (frame.method == method)
                    & (frame.ipc == ipc)
                    & ((frame["size"] == size) if not pd.isna(size) else frame["size"].isna())]
        return None if hit.empty else hit.iloc[0]


def dataset_facts(store: Store) -> dict[tuple[str, object], dict]:
    """(dataset, size) -> the dataset facts stored with its cells, merged over cells (older cells
    lack facts that later versions store, such as class counts)."""
    out: dict[tuple[str, object], dict] = {}
    for _, c in store.cells().iterrows():
        key = (c.dataset, None if pd.isna(c["size"]) else int(c["size"]))
        out.setdefault(key, {}).update(json.loads(c.config).get("dataset") or {})
    return out


def n_train(facts: dict[tuple[str, object], dict]) -> dict[tuple[str, object], int]:
    """(dataset, size) -> training images, from :func:`dataset_facts`."""
    return {key: int(f["n_train"]) for key, f in facts.items() if "n_train" in f}


def majority_notes(facts: dict[tuple[str, object], dict]) -> dict[tuple[str, object], str]:
    """(dataset, size) -> what a constant guess of the test split's majority class scores, so an
    accuracy below it is seen for what it is (cells stored before class counts were kept: none)."""
    out = {}
    for key, f in facts.items():
        counts = (f.get("class_counts") or {}).get("test")
        if counts and sum(counts):
            share = max(counts) / sum(counts)
            out[key] = (f"Always predicting the majority class scores {100 * share:.1f} % accuracy on this test "
                        f"set ({len(counts)} classes, balanced accuracy {100 / len(counts):.1f} %).")
    return out


GAIN = "gain vs random (pp) [95 % CI]"
HLR = "HLR (pp)"
IOR = "IOR (pp) [95 % CI]"
SOFT_MARK = " ‡"
SOFT_NOTE = ("‡ soft labels: its gain compares a soft-label set with hard-label random; IOR compares it with "
             "random_soft (random's subset with the same teacher's soft labels, same soft-label evaluation).")
HLR_NOTE = ("HLR (hard-label recovery, lower is better): full-data accuracy minus the set's accuracy with hard labels "
            "(a soft-label set's images trained with each image's class). IOR (improvement over random): paired "
            "per-seed difference from random, or from random_soft for a soft-label set (DD-Ranking's scores).")


def _dd_text(d: pd.Series | None) -> tuple[str, str]:
    """(HLR, IOR [CI]) of one row of :func:`ddranking.scores`; empty where undefined."""
    if d is None:
        return "", ""
    hlr = f"{100 * d['hlr']:.1f}" if np.isfinite(d["hlr"]) else ""
    if not np.isfinite(d["ior"]):
        return hlr, ""
    ci = f" [{100 * d['ior_low']:+.1f}, {100 * d['ior_high']:+.1f}]" if np.isfinite(d["ior_low"]) else " (1 seed)"
    return hlr, f"{100 * d['ior']:+.1f}{ci}" + (" *" if np.isfinite(d["ior_p"]) and d["ior_p"] < 0.05 else "")


def _gain_text(g: pd.Series | None) -> tuple[str, str]:
    """(gain [CI], p) of a paired comparison with random; '*' marks p < 0.05."""
    if g is None or not np.isfinite(g["gain"]):
        return "", ""
    if not np.isfinite(g["low"]):
        return f"{100 * g['gain']:+.1f} (1 seed)", ""
    p = f"{g['p']:.2g}" + (" *" if g["significant"] else "")
    return f"{100 * g['gain']:+.1f} [{100 * g['low']:+.1f}, {100 * g['high']:+.1f}]", p


def _spread(row: pd.Series) -> str:
    """mean ± std, with † where the std is over the networks of a single seed."""
    return pm(row["mean"], row["std"]) + (" †" if row.get("spread") == "networks" else "")


def dataset_table(agg: pd.DataFrame, protocol_id: str, dataset: str, size: object,
                  train_images: int | None, comparisons: Comparisons | None = None) -> Table:
    """Rows grouped by IPC (random, methods), then the full-data row; best per IPC group in bold.
    Spreads are across seeds; gains are paired per seed with random (t-interval, paired t-test)."""
    sub = agg[(agg.protocol_id == protocol_id) & (agg.dataset == dataset)
              & ((agg["size"] == size) if not pd.isna(size) else agg["size"].isna())]
    acc = sub[sub.metric == "accuracy"].set_index(["method", "ipc"])
    bal = sub[sub.metric == "balanced_accuracy"].set_index(["method", "ipc"])
    empty = pd.DataFrame(columns=["protocol_id", "dataset", "size", "method", "ipc"])
    comparisons = comparisons or Comparisons(empty, empty, {})
    columns = ["IPC", "images", "ratio", "method", ACC, BAL, GAIN, "p", HLR, IOR, "rank", "beats", "chosen (val)",
               "seeds × networks"]
    rows: list[dict[str, str]] = []
    bold: set[tuple[int, str]] = set()
    ipcs = sorted({int(i) for i in acc.index.get_level_values("ipc").dropna()})
    for ipc in ipcs:
        group = [m for m in method_order(list(acc.index.get_level_values("method")))
                 if (m, ipc) in acc.index and m != "full"]
        start = len(rows)
        for m in group:
            a = acc.loc[(m, ipc)]
            b = bal.loc[(m, ipc)] if (m, ipc) in bal.index else None
            gain, p = _gain_text(comparisons.lookup(comparisons.gains, protocol_id, dataset, size, m, ipc))
            dd = comparisons.lookup(comparisons.dd, protocol_id, dataset, size, m, ipc)
            hlr, ior = _dd_text(dd)
            soft = dd is not None and bool(dd["soft"])
            if soft and gain:
                gain += SOFT_MARK
            rank = comparisons.lookup(comparisons.ranks, protocol_id, dataset, size, m, ipc)
            size_key = None if pd.isna(size) else int(size)
            rows.append({"IPC": str(ipc), "images": f"{a['images']:.0f}",
                         "ratio": f"{100 * a['ratio']:.3g} %" if np.isfinite(a["ratio"]) else "—", "method": m,
                         ACC: _spread(a),
                         BAL: _spread(b) if b is not None else "—", GAIN: gain, "p": p, HLR: hlr, IOR: ior,
                         "rank": "" if rank is None else str(int(rank["rank"])),
                         "beats": "" if rank is None else rank["beats"],
                         "chosen (val)": comparisons.chosen.get((protocol_id, dataset, size_key, m, ipc), ""),
                         "seeds × networks": f"{int(a['seeds'])} × {int(a['count'] // max(a['seeds'], 1))}"})
        if len(group) > 1:
            for column, frame in ((ACC, acc), (BAL, bal)):
                means = [frame.loc[(m, ipc), "mean"] if (m, ipc) in frame.index else -np.inf for m in group]
                best = max(means)
                bold.update((start + j, column) for j, v in enumerate(means) if v == best and np.isfinite(v))
    full_keys = [k for k in acc.index if k[0] == "full"]
    for key in full_keys:
        a = acc.loc[key]
        b = bal.loc[key] if key in bal.index else None
        rows.append({"IPC": "full", "images": f"{train_images or a['images']:.0f}", "ratio": "100 %",
                     "method": "full", ACC: _spread(a), BAL: _spread(b) if b is not None else "—",
                     "seeds × networks": f"{int(a['seeds'])} × {int(a['count'] // max(a['seeds'], 1))}"})
    title = f"{dataset}" + ("" if pd.isna(size) else f" ({int(size)} px)")
    if train_images:
        title += f", {train_images} training images"
    table = Table(title, columns, rows, bold)
    if any(row.get(GAIN, "").endswith(SOFT_MARK) for row in rows):
        table.notes.append(SOFT_NOTE)
    return table


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


def protocol_comparison(agg: pd.DataFrame, names: dict[str, str]) -> Table | None:
    """The same (dataset, size, method, IPC) cells evaluated under several protocols, side by side:
    what the evaluation protocol alone changes. ``names``: protocol_id -> a short name. None when no
    cell key was evaluated under more than one protocol."""
    acc = agg[agg.metric == "accuracy"].copy()
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
    table.notes.append("Test accuracy, mean ± std across seeds; each column is one protocol (its settings are in its "
                       "section). Distillation does not depend on the protocol, so each row's sets are the same; "
                       "only how the evaluation networks are trained on them differs.")
    return table
