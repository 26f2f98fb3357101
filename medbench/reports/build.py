"""``medbench report``: leaderboard.md, results.csv and a self-contained index.html from a results DB.

Every table is made per protocol (protocol_id) and says which settings produced it; random
baselines and distilled sets are only compared within one protocol.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from medbench.analysis import ddranking
from medbench.analysis import seeds as seed_stats
from medbench.analysis.correlation import Correlation, correlate, correlation_frame, gain_frame, paired_points
from medbench.analysis.frames import describe_protocol, model_scores, protocol_name, protocols, short_protocol
from medbench.analysis.seeds import TEST_NAME, seed_means
from medbench.errors import MedbenchError
from medbench.evaluation.protocol import HARD_LABELS
from medbench.reports import figures
from medbench.reports.compute import budget_frame, equal_budget_table
from medbench.reports.published import Reference, comparison_table, settings_table
from medbench.reports.tables import (
    ACC as ACC_COLUMN,
)
from medbench.reports.tables import (
    HLR_NOTE,
    Comparisons,
    Table,
    aggregate,
    dataset_facts,
    dataset_table,
    failed_notes,
    frame_table,
    majority_notes,
    method_order,
    n_train,
    protocol_comparison,
    selections,
)
from medbench.reports.tuned import tuned_table
from medbench.storage.condensed_io import locate_condensed
from medbench.storage.store import Store

MAX_GRIDS = 80  # image mosaics per report; beyond this the page gets too heavy to read


@dataclass(frozen=True)
class ReportFiles:
    leaderboard: Path
    results: Path
    html: Path


@dataclass
class Section:
    """Everything shown for one protocol."""

    protocol_id: str
    description: str
    caption: str
    datasets: list[Table]
    correlation: Table
    gains: Table
    results: list[Correlation]
    agg: pd.DataFrame
    notes: list[str]
    published: list[Table] = field(default_factory=list)  # with --reference: the paper's numbers beside ours
    compute: pd.DataFrame | None = None  # per-seed accuracy within distillation budgets (reports.compute)
    equal_budget: Table | None = None
    tuned: Table | None = None  # tuned against default rows (reports.tuned)


def tidy_results(store: Store) -> pd.DataFrame:
    """One row per cell, eval model, split and metric with the cell's keys (IPC empty for full)."""
    scores = model_scores(store, split="test")
    val = model_scores(store, split="val")
    frame = pd.concat([scores, val], ignore_index=True)
    columns = ["dataset", "size", "method", "ipc", "seed", "protocol_id", "cell_id", "model_index", "model_seed",
               "split", "metric", "value", "lr", "epochs", "train_seconds"]
    return frame[columns].sort_values(["protocol_id", "dataset", "method", "ipc", "seed", "model_index", "split",
                                       "metric"]).reset_index(drop=True)


def protocols_table(store: Store) -> Table | None:
    """:func:`protocol_comparison` over every protocol in ``store``, columns named by protocol."""
    values = model_scores(store, split="test").dropna(subset=["value"])
    settings = protocols(store)
    names = {pid: f"{protocol_name(settings.get(pid, {}))} · {pid[:6]}" for pid in settings}
    return protocol_comparison(aggregate(values[values.metric == "accuracy"]), names)


def build_sections(store: Store, *, n_boot: int = 2000, seed: int = 0,
                   reference: Reference | None = None) -> list[Section]:
    values = model_scores(store, split="test").dropna(subset=["value"])
    values = values[values.metric.isin(["accuracy", "balanced_accuracy", HARD_LABELS + "accuracy"])]
    val_values = model_scores(store, split="val").dropna(subset=["value"])
    agg = aggregate(values)
    per_seed = seed_means(values)
    comparisons = Comparisons(seed_stats.gains(per_seed), seed_stats.ranks(per_seed), selections(store),
                              ddranking.scores(per_seed))
    points = paired_points(values[values.metric == "accuracy"])
    results = correlate(points, n_boot=n_boot, seed=seed)
    settings = protocols(store)
    facts = dataset_facts(store)
    train, majority = n_train(facts), majority_notes(facts)
    cells = store.cells()
    order = list(dict.fromkeys(cells.sort_values("created_at").protocol_id))
    sections = []
    for pid in order:
        caption = short_protocol(settings.get(pid, {}), pid)
        sub = agg[agg.protocol_id == pid]
        tables, published = [], []
        for dataset, size in sorted({(d, s) for d, s in zip(sub.dataset, sub["size"], strict=True)}, key=str):
            key = (dataset, None if pd.isna(size) else int(size))
            table = dataset_table(agg, pid, dataset, size, train.get(key), comparisons)
            table.notes.append(caption)
            if any(" †" in row.get(ACC_COLUMN, "") for row in table.rows):
                table.notes.append("† one seed only: its ± is the spread over the evaluation networks trained on one "
                                   "set, not over sets (subsets or distillation runs); for a selected or distilled "
                                   "set, run more seeds (--seeds 0,1,2). The full-data row has only one set: more "
                                   "seeds would only vary its networks.")
            if key in majority:
                table.notes.append(majority[key])
            tables.append(table)
            if reference is not None:
                versus = comparison_table(sub, reference, dataset, size)
                versus.notes.insert(1, caption)
                published += [versus, settings_table(cells[cells.protocol_id == pid], reference, dataset)]
        mine = [c for c in results if c.protocol_id == pid]
        corr = frame_table(correlation_frame(mine), "Distilled vs random accuracy across datasets")
        corr.notes.append(caption)
        if not mine:
            corr.notes.append("no method other than random/full has a random baseline at the same IPC here")
        gains = frame_table(gain_frame(points[points.protocol_id == pid]), "Gain over random per dataset")
        gains.notes.append(caption)
        budgets = budget_frame(cells, values[values.protocol_id == pid])
        equal = equal_budget_table(budgets, pid)
        if equal is not None:
            equal.notes.insert(0, caption)
        versus_default = tuned_table(cells, values, val_values, pid)
        if versus_default is not None:
            versus_default.notes.insert(0, caption)
        sections.append(Section(pid, describe_protocol(settings.get(pid, {}), pid), caption, tables, corr, gains,
                                mine, sub, failed_notes(store, pid), published, budgets, equal, versus_default))
    return sections


ACC_NOTE = ("Test accuracy and balanced accuracy in %: mean ± std across seeds of the per-seed means (a seed is one "
            "random subset or one distillation run; its networks are one measurement). Bold: best per IPC (the "
            "full-data row is the upper bound). Gain: paired per-seed difference from random (every method that "
            f"starts from real images starts from random's subset of the same seed), mean [95 % t-interval]; p: "
            f"{TEST_NAME}, '*' significant. Rank: 1 + the methods that beat it significantly (ties where "
            "differences are not significant); beats: the methods it beats significantly (same test). Chosen "
            "(val): the checkpoint validation accuracy chose, per seed, and how many it chose among; '(init)' "
            "means the untouched real initialisation was kept. " + HLR_NOTE)
CORR_NOTE = ("One point per dataset: (random-subset accuracy, distilled accuracy) under the same protocol, "
             "dataset, size and IPC. r: Pearson, with a bootstrap 95 % CI over datasets; ρ: Spearman (exact "
             "permutation p-value up to 8 datasets); the line is least squares (slope, intercept, R²).")
GAIN_NOTE = ("Gain = distilled − random accuracy in percentage points: the mean of the paired per-seed differences, "
             f"± its standard error, with the 95 % t-interval over seeds and the {TEST_NAME}.")


def _md_table(table: Table, note: str = "", heading: str = "###") -> str:
    parts = [f"{heading} {table.title}", "", f"_{table.notes[0]}_" if table.notes else "", ""]
    if note:
        parts += [note, ""]
    parts.append(table.markdown() if table.rows else "_no rows_")
    parts += ["", *(f"- {n}" for n in table.notes[1:])]
    return "\n".join(parts).rstrip() + "\n"


def leaderboard_markdown(sections: list[Section], db: Path, across: Table | None = None) -> str:
    lines = ["# medbench leaderboard", "", f"Results database: `{db}` · generated "
             f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {len(sections)} evaluation protocol(s).", ""]
    if len(sections) > 1:
        lines += ["> These results were made under several evaluation protocols. Each protocol has its own "
                  "section; numbers are never compared across sections (except in the protocol table below, "
                  "which shows what the protocol changes).", ""]
    if across is not None:
        lines.append(_md_table(across, heading="##"))
    for s in sections:
        lines += [f"## Protocol `{s.protocol_id}`", "", s.description, ""]
        for t in s.datasets:
            lines.append(_md_table(t, ACC_NOTE, "###"))
        for t in s.published:
            lines.append(_md_table(t, heading="###"))
        lines += [_md_table(s.correlation, CORR_NOTE, "###"), _md_table(s.gains, GAIN_NOTE, "###")]
        lines += [_md_table(t, heading="###") for t in (s.equal_budget, s.tuned) if t is not None]
        lines += [f"- {n}" for n in s.notes]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"



def image_grids(store: Store, db: Path, protocol_id: str, per_class: int, budget: list[int],
                shown: dict[str, str]) -> list[str]:
    """HTML blocks of condensed-set mosaics (first seed of each cell key), dataset by dataset. A set
    already drawn under another protocol (``shown``: pixel digest -> protocol id; distillation does
    not depend on the protocol) is named, not drawn again."""
    cells = store.cells()
    cells = cells[(cells.protocol_id == protocol_id) & (cells.status == "done") & cells.condensed_path.notna()]
    blocks = []
    for (dataset, size), group in cells.groupby(["dataset", "size"], dropna=False):
        rows = []
        for ipc, at_ipc in group.groupby("ipc"):
            tiles = []
            for method in method_order(list(at_ipc.method.unique())):
                cell = at_ipc[at_ipc.method == method].sort_values("seed").iloc[0]
                if budget[0] <= 0:
                    break
                path = locate_condensed(cell.condensed_path, db)
                loaded = figures.load_images(path) if path else None
                if loaded is None:
                    tiles.append(f'<div class="tile missing">{html.escape(method)}: condensed set not found</div>')
                    continue
                digest = hashlib.sha256(loaded[0].tobytes() + loaded[1].tobytes()).hexdigest()
                if digest in shown:
                    tiles.append(f'<div class="tile missing">{html.escape(method)} · IPC {int(ipc)} · seed '
                                 f"{cell.seed}: the same images as under protocol {shown[digest]}</div>")
                    continue
                shown[digest] = protocol_id
                budget[0] -= 1
                pixels, classes, by_row = figures.mosaic(*loaded, per_class)
                # small sets enlarged (pixels kept sharp), large ones kept within a tile
                zoom = max(1.0, min(3.0, 330 / pixels.shape[1], 330 / pixels.shape[0]))
                tiles.append(
                    f'<figure class="tile"><img alt="{html.escape(method)} IPC {int(ipc)}" '
                    f'width="{round(zoom * pixels.shape[1])}" src="data:image/png;base64,{figures.png_base64(pixels)}">'
                    f"<figcaption><b>{html.escape(method)}</b> · IPC {int(ipc)} · seed {cell.seed} · "
                    f"{'rows' if by_row else 'columns'}: classes {classes[0]}–{classes[-1]}</figcaption></figure>")
            rows.append(f'<div class="tiles">{"".join(tiles)}</div>')
        title = f"{dataset}" + ("" if pd.isna(size) else f" · {int(size)} px")
        blocks.append(f"<h4>{html.escape(title)}</h4>{''.join(rows)}")
    return blocks


CSS = """
:root{--fg:#1d2330;--muted:#5b6474;--line:#e3e7ee;--accent:#2f6fdf;--bg:#f6f8fb}
*{box-sizing:border-box}
body{font:14px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);
background:var(--bg);margin:0}
header{background:#1d2a44;color:#fff;padding:22px 40px}
header h1{margin:0 0 4px;font-size:24px;font-weight:600}
header p{margin:0;color:#c6d0e3}
nav{padding:8px 40px;background:#fff;border-bottom:1px solid var(--line);position:sticky;top:0;z-index:2}
nav a{margin-right:18px;color:var(--accent);text-decoration:none;font-weight:500}
main{max-width:1480px;margin:0 auto;padding:10px 40px 60px}
section.protocol{background:#fff;border:1px solid var(--line);border-radius:10px;padding:6px 26px 22px;
margin:22px 0;box-shadow:0 1px 3px rgba(20,30,60,.05);overflow-x:auto}
h2{font-size:20px;margin:18px 0 6px}
h3{font-size:16px;margin:26px 0 6px;padding-top:8px;border-top:1px solid var(--line)}
h4{font-size:14px;margin:18px 0 4px}
.protocol-line{background:#eef3fc;border-left:4px solid var(--accent);padding:8px 12px;border-radius:4px;
font-size:13px}
.caption{color:var(--muted);font-size:12px;margin:2px 0 6px}
.note{color:var(--muted);font-size:12.5px;margin:4px 0 8px}
.warning{background:#fff6e0;border-left:4px solid #e0a100;padding:8px 12px;border-radius:4px}
table{border-collapse:collapse;margin:6px 0 14px;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:5px 12px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{background:#f1f4f9;font-weight:600;color:#374151}
td.name,th.name{text-align:left}
tr:hover td{background:#fafbfd}
td.best{color:#0b5d1e;background:#e9f7ee}
tr.group td{border-top:2px solid #c9d1de}
tr.full td{color:var(--muted);font-style:italic;border-top:2px solid var(--line)}
img.figure{max-width:100%;display:block;margin:8px 0}
.tiles{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start;margin:6px 0}
.tile{margin:0;max-width:360px;background:#fff;border:1px solid var(--line);border-radius:6px;padding:4px}
.tile img{display:block;image-rendering:pixelated;max-width:100%}
.tile figcaption{font-size:11.5px;color:var(--muted);padding:3px 2px 0}
.tile.missing{color:var(--muted);font-size:12px;padding:10px}
ul.failed{color:#a12a2a;font-size:12.5px}
footer{color:var(--muted);font-size:12px;text-align:center;padding:20px}
"""


def _html_table(table: Table, note: str = "", heading: str = "h4") -> str:
    caption = f'<p class="caption">{html.escape(table.notes[0])}</p>' if table.notes else ""
    extra = "".join(f'<p class="note">{html.escape(n)}</p>' for n in table.notes[1:])
    body = table.html() if table.rows else '<p class="note">no rows</p>'
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f"<{heading}>{html.escape(table.title)}</{heading}>{caption}{note_html}{body}{extra}"


def _img(b64: str | None, alt: str) -> str:
    return f'<img class="figure" alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">' if b64 else ""


def report_html(sections: list[Section], store: Store, db: Path, per_class: int, across: Table | None = None) -> str:
    parts = [f'<section class="protocol">{_html_table(across, heading="h2")}</section>'] if across is not None else []
    budget = [MAX_GRIDS]
    shown: dict[str, str] = {}
    for i, s in enumerate(sections, 1):
        out = [f'<section class="protocol" id="p{i}"><h2>Protocol <code>{s.protocol_id}</code></h2>',
               f'<div class="protocol-line">{html.escape(s.description)}</div>', "<h3>Leaderboard</h3>",
               f'<p class="note">{html.escape(ACC_NOTE)}</p>']
        out += [_html_table(t) for t in s.datasets]
        if s.published:
            out.append("<h3>Published numbers</h3>")
            out += [_html_table(t) for t in s.published]
        out.append(_img(figures.accuracy_vs_ipc(s.agg, f"Test accuracy vs IPC · {s.caption}"), "accuracy vs IPC"))
        out.append(_html_table(s.correlation, CORR_NOTE, heading="h3"))
        if s.results:
            out.append(_img(figures.correlation_scatter(s.results, f"Distilled vs random · {s.caption}"),
                            "distilled vs random"))
        out.append(_html_table(s.gains, GAIN_NOTE, heading="h3"))
        if s.tuned is not None:
            out.append(_html_table(s.tuned, heading="h3"))
        if s.equal_budget is not None and s.compute is not None:
            out.append(_html_table(s.equal_budget, heading="h3"))
            out.append(_img(figures.anytime(s.compute, f"Accuracy within a distillation budget · {s.caption}"),
                            "accuracy against distillation seconds"))
        grids = image_grids(store, db, s.protocol_id, per_class, budget, shown)
        if grids:
            out.append("<h3>Condensed sets</h3><p class=\"note\">One row (below 3 images per class: one column) "
                       f"per class, at most {per_class} images each, first seed. The random method's images are "
                       "real training images.</p>" + "".join(grids))
        if s.notes:
            out.append('<ul class="failed">' + "".join(f"<li>{html.escape(n)}</li>" for n in s.notes) + "</ul>")
        out.append("</section>")
        parts.append("".join(out))
    warning = ('<p class="warning">These results were made under several evaluation protocols. Each has its own '
               "section; numbers are never compared across sections, except in the table of the same cells "
               "under different protocols, which shows what the protocol changes.</p>") if len(sections) > 1 else ""
    nav = "".join(f'<a href="#p{i}">{s.protocol_id}</a>' for i, s in enumerate(sections, 1))
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>medbench report</title>"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{CSS}</style></head>"
            f"<body><header><h1>medbench report</h1><p>{html.escape(str(db))} · generated {when} · "
            f"{len(sections)} protocol(s)</p></header><nav>Protocols: {nav}</nav><main>{warning}"
            f"{''.join(parts)}</main><footer>medbench · dataset distillation on medical images</footer>"
            "</body></html>")


def write_report(db: Path | str, out: Path | str, *, per_class: int = 10, n_boot: int = 2000,
                 reference: Reference | None = None) -> ReportFiles:
    """Write leaderboard.md, results.csv and index.html for every done cell of ``db`` into ``out``;
    with ``reference``, a paper's numbers and settings beside ours."""
    db, out = Path(db), Path(out)
    if not db.is_file():
        raise MedbenchError(f"{db}: no results database here (run `medbench run` first or pass --db)")
    with Store(db, readonly=True) as store:
        if store.cells().empty:
            raise MedbenchError(f"{db}: the database holds no results yet")
        sections = build_sections(store, n_boot=n_boot, reference=reference)
        across = protocols_table(store)
        out.mkdir(parents=True, exist_ok=True)
        files = ReportFiles(out / "leaderboard.md", out / "results.csv", out / "index.html")
        files.leaderboard.write_text(leaderboard_markdown(sections, db, across))
        # 7 significant digits: exact for any test-set fraction, and a third fewer bytes than float64's 17.
        tidy_results(store).to_csv(files.results, index=False, float_format="%.7g")
        files.html.write_text(report_html(sections, store, db, per_class, across))
    return files
