"""``medbench report``: leaderboard.md, results.csv, predictions.csv.gz and a self-contained
index.html from a results DB, in one report metric (balanced accuracy by default).

Every section is one protocol and opens with its verdicts in words (which methods beat their
matched baseline after correction, per dataset and IPC, then the ranking across datasets); the
tables and figures follow. Random baselines and distilled sets are only compared within one protocol.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medbench.analysis import ddranking
from medbench.analysis.correlation import correlate, correlation_frame, gain_frame, paired_points
from medbench.analysis.frames import describe_protocol, model_scores, protocol_name, protocols, short_protocol
from medbench.analysis.study import DEFAULT_METRIC, METRIC_NAMES, Study, analyse
from medbench.core.errors import MedbenchError
from medbench.core.files import check_writable
from medbench.reports import figures
from medbench.reports.compute import budget_frame, equal_budget_table
from medbench.reports.page import leaderboard_markdown, report_html
from medbench.reports.published import Reference, comparison_table, settings_table
from medbench.reports.section import Section
from medbench.reports.tables import (
    HLR_NOTE,
    Table,
    aggregate,
    chance_note,
    dataset_table,
    duplicates_note,
    failed_notes,
    frame_table,
    method_order,
    n_train,
    protocol_comparison,
    selections,
)
from medbench.reports.tuned import tuned_table
from medbench.reports.verdicts import headline, ranking_table, summary_lines, table_notes
from medbench.storage.condensed_io import locate_condensed
from medbench.storage.store import TRUTH, Store

MAX_GRIDS = 80  # image mosaics per report; beyond this the page gets too heavy to read


@dataclass(frozen=True)
class ReportFiles:
    leaderboard: Path
    results: Path
    html: Path
    predictions: Path | None = None


def tidy_results(store: Store) -> pd.DataFrame:
    """One row per cell, eval model, split and metric with the cell's keys (IPC empty for full)."""
    scores = model_scores(store, split="test")
    val = model_scores(store, split="val")
    frame = pd.concat([scores, val], ignore_index=True)
    columns = ["dataset", "size", "method", "ipc", "seed", "protocol_id", "cell_id", "model_index", "model_seed",
               "split", "metric", "value", "lr", "epochs", "train_seconds"]
    return frame[columns].sort_values(["protocol_id", "dataset", "method", "ipc", "seed", "model_index", "split",
                                       "metric"]).reset_index(drop=True)


DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def tidy_predictions(store: Store) -> pd.DataFrame:
    """One row per cell and evaluation network (model_index −1: the true labels): the class predicted
    for every test image as one base-36 digit per image, in the test split's order. With results.csv
    it reproduces every interval of the report (classes above 36 are written as numbers joined by '.')."""
    rows = []
    for cell_id, arrays in sorted(store.predictions().items()):
        wide = int(arrays.max()) >= len(DIGITS)
        for index, classes in zip([TRUTH, *range(len(arrays) - 1)], arrays, strict=True):
            text = ".".join(map(str, classes)) if wide else "".join(DIGITS[c] for c in classes)
            rows.append({"cell_id": cell_id, "model_index": index, "split": "test", "classes": text})
    return pd.DataFrame(rows, columns=["cell_id", "model_index", "split", "classes"])


def protocols_table(store: Store, metric: str = DEFAULT_METRIC) -> Table | None:
    """:func:`protocol_comparison` over every protocol in ``store``, columns named by protocol."""
    values = model_scores(store, split="test").dropna(subset=["value"])
    settings = protocols(store)
    names = {pid: f"{protocol_name(settings.get(pid, {}))} · {pid[:6]}" for pid in settings}
    return protocol_comparison(aggregate(values[values.metric == metric]), names, metric)


CORR_NOTE = ("One point per dataset: (random subset's score, distilled score) in the report metric, under the same "
             "protocol, dataset, size and IPC (means over seeds). r: Pearson with its Fisher-z 95 % interval; ρ: "
             "Spearman with its exact permutation p. Both scores follow the dataset's difficulty, so r (distilled, "
             "random) is high almost by construction; r (random, gain) asks whether distillation helps more on "
             "easier tasks. '|r| for p < 0.05' is the correlation these few datasets would need to reach "
             "significance: with 5 datasets |r| ≥ 0.88, with 6 ≥ 0.81. Uncorrected; a description, not a verdict.")
GAIN_NOTE = ("Gain over plain random per dataset, in percentage points: the mean of the paired per-seed differences "
             "± its standard error, the 95 % t-interval over seeds and the paired t-test, uncorrected (the "
             "leaderboard above carries the corrected tests and the matched baselines).")


def build_sections(store: Store, *, metric: str = DEFAULT_METRIC, db: Path | None = None,
                   reference: Reference | None = None, study: Study | None = None) -> list[Section]:
    study = study or analyse(store, metric=metric, db=db)
    values = study.values
    agg = aggregate(values[values.metric.isin({"accuracy", study.metric})])
    chosen = selections(study.cells)
    dd = ddranking.scores(study.per_seed, study.metric)
    points = paired_points(values[values.metric == study.metric])
    results = correlate(points)
    settings = protocols(store)
    train = n_train(study.facts)
    cells = store.cells()
    order = list(dict.fromkeys(cells.sort_values("created_at").protocol_id))
    sections = []
    for pid in order:
        if pid not in set(study.cells.protocol_id):
            continue
        caption = short_protocol(settings.get(pid, {}), pid)
        sub = agg[agg.protocol_id == pid]
        tables, published = [], []
        for dataset, size in sorted({(d, s) for d, s in zip(sub.dataset, sub["size"], strict=True)}, key=str):
            key = (dataset, None if pd.isna(size) else int(size))
            table = dataset_table(study, pid, dataset, size, chosen, dd)
            if key in train:
                table.title += f", {train[key]} training images"
            table.notes.insert(0, caption)
            for note in (chance_note(study.facts.get(key, {}), study.metric),
                         duplicates_note(study.facts.get(key, {}))):
                if note:
                    table.notes.append(note)
            verdicts = [v for k, v in sorted(study.tables.items(), key=lambda kv: kv[0][3])
                        if k[:3] == (pid, dataset, key[1])]
            here = study.cells[(study.cells.protocol_id == pid) & (study.cells.dataset == dataset)]
            table.notes += table_notes(study, verdicts, here)
            if any(c.startswith("HLR") for c in table.columns):
                table.notes.append(HLR_NOTE)
            tables.append(table)
            if reference is not None:
                versus = comparison_table(sub, reference, dataset, size)
                versus.notes.insert(1, caption)
                published += [versus, settings_table(cells[cells.protocol_id == pid], reference, dataset)]
        mine = [c for c in results if c.protocol_id == pid]
        corr = frame_table(correlation_frame(mine), f"Distilled vs random across datasets ({METRIC_NAMES[metric]})")
        corr.notes.append(caption)
        if not mine:
            corr.notes.append("no method other than random/full has a random baseline at the same IPC here")
        gains = frame_table(gain_frame(points[points.protocol_id == pid]), "Gain over plain random per dataset")
        gains.notes.append(caption)
        budgets = budget_frame(cells, values[values.protocol_id == pid], study.metric)
        equal = equal_budget_table(budgets, pid, study.metric)
        if equal is not None:
            equal.notes.insert(0, caption)
        versus_default = tuned_table(cells, model_scores(store, split="test").dropna(subset=["value"]),
                                     model_scores(store, split="val").dropna(subset=["value"]), pid)
        if versus_default is not None:
            versus_default.notes.insert(0, caption)
        rankings = [r for r in study.rankings if r.protocol_id == pid]
        sections.append(Section(
            pid, protocol_name(settings.get(pid, {})), describe_protocol(settings.get(pid, {}), pid), caption,
            headline(study), summary_lines(study, pid), tables, corr, CORR_NOTE, gains, GAIN_NOTE, mine, sub,
            failed_notes(store, pid), ranking_table(rankings), published, budgets, equal, versus_default))
    return sections


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
                                 f"{cell.seed}: the same images as {shown[digest]}</div>")
                    continue
                shown[digest] = f"{method} under protocol {protocol_id}"
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


def add_figures(sections: list[Section], study: Study, store: Store, db: Path, per_class: int) -> None:
    """The HTML page's figures and image mosaics for every section."""
    budget = [MAX_GRIDS]
    shown: dict[str, str] = {}
    name = METRIC_NAMES[study.metric]
    for s in sections:
        s.cd_figure = figures.cd_diagram([r for r in study.rankings if r.protocol_id == s.protocol_id],
                                         f"Critical-difference diagram · {s.caption}")
        s.ipc_figure = figures.score_vs_ipc(s.agg, study.metric, f"Test {name} vs IPC · {s.caption}")
        if s.results:
            s.scatter_figure = figures.correlation_scatter(s.results, f"Distilled vs random ({name}) · {s.caption}")
        if s.equal_budget is not None and s.compute is not None:
            s.anytime_figure = figures.anytime(s.compute, f"{name} within a distillation budget · {s.caption}")
        s.grids = image_grids(store, db, s.protocol_id, per_class, budget, shown)


def write_report(db: Path | str, out: Path | str, *, per_class: int = 10, metric: str = DEFAULT_METRIC,
                 reference: Reference | None = None) -> ReportFiles:
    """Write leaderboard.md, results.csv, predictions.csv.gz and index.html for every done cell of
    ``db`` into ``out``, in the report ``metric``; with ``reference``, a paper's numbers and settings
    beside ours."""
    db, out = Path(db), Path(out)
    if not db.is_file():
        raise MedbenchError(f"{db}: no results database here (run `medbench run` first or pass --db)")
    check_writable(out, folder=True, what="report folder")
    with Store(db, readonly=True) as store:
        if store.cells().empty:
            raise MedbenchError(f"{db}: the database holds no results yet")
        study = analyse(store, metric=metric, db=db)
        sections = build_sections(store, metric=metric, db=db, reference=reference, study=study)
        across = protocols_table(store, metric)
        add_figures(sections, study, store, db, per_class)
        out.mkdir(parents=True, exist_ok=True)
        files = ReportFiles(out / "leaderboard.md", out / "results.csv", out / "index.html",
                            out / "predictions.csv.gz")
        files.leaderboard.write_text(leaderboard_markdown(sections, db, metric, across))
        # 7 significant digits: exact for any test-set fraction, and a third fewer bytes than float64's 17.
        tidy_results(store).to_csv(files.results, index=False, float_format="%.7g")
        tidy_predictions(store).to_csv(files.predictions, index=False, compression={"method": "gzip", "mtime": 0})
        files.html.write_text(report_html(sections, db, metric, per_class, across))
    return files
