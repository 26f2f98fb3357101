"""``medbench report``: the three files, their tables and figures, and protocols kept apart."""

from __future__ import annotations

import base64
import re

import pandas as pd
import pytest
from _records import record, store_with, write_condensed_npz

from medbench.cli.main import main
from medbench.reports import write_report


@pytest.fixture
def report_db(tmp_path):
    """Three datasets × (random, dm) × IPC 1/10 plus full, one condensed file per dataset."""
    recs = []
    for i, name in enumerate(["alpha", "beta", "gamma"]):
        base = 0.4 + 0.1 * i
        for ipc, bump in ((1, 0.0), (10, 0.15)):
            path = write_condensed_npz(tmp_path / "condensed" / f"{name}{ipc}.npz", classes=3, ipc=ipc,
                                       channels=3 if name == "beta" else 1, seed=i)
            recs.append(record("random", name, ipc, [base + bump - 0.01, base + bump + 0.01], classes=3,
                               condensed_path=path))
            distilled = write_condensed_npz(tmp_path / "condensed" / f"{name}{ipc}dm.npz", classes=3, ipc=ipc,
                                            channels=3 if name == "beta" else 1, seed=10 + i)
            recs.append(record("dm", name, ipc, [base + bump + 0.05, base + bump + 0.07], classes=3,
                               condensed_path=distilled))
        recs.append(record("full", name, None, [0.9, 0.92], classes=3))
    recs.append(record("dc", "alpha", 1, [], status="failed"))
    return store_with(tmp_path / "results.sqlite", recs)


def test_report_writes_its_files_with_verdicts_tables_and_embedded_figures(report_db, tmp_path):
    files = write_report(report_db, tmp_path / "out")
    md = files.leaderboard.read_text()
    page = files.html.read_text()
    # The answer first: verdicts in words, then the ranking across datasets, then the tables.
    assert md.index("### Verdicts") < md.index("### Average rank across datasets") < md.index("### alpha (28 px)")
    assert "- alpha (28 px), IPC 1: no method beats its matched baseline" in md  # one seed: nothing testable
    assert "IPC 1, average rank over 3 datasets (1 = best): dm 1.00, random 2.00 (a Friedman test needs" in md
    # Markdown: per dataset table in the report metric (balanced accuracy = accuracy − 5 here) with accuracy beside
    assert md.count("### alpha (28 px), 1000 training images") == 1
    assert "balanced accuracy % [95 % CI]" in md and "**41.0 †**" in md  # dm at IPC 1 on alpha, one seed
    assert "† one seed" in md
    assert re.search(r"\| full\s+\| full\s+\| 86\.0 †\s+\| 91\.0", md)
    assert "r (distilled, random)" in md and "needs at least 3 datasets" not in md
    assert md.count("convnet width 8 depth auto · 4 epochs (full 2) · lr 0.01 · aug none · 3 eval models") == 5
    assert "failed: dc · alpha · IPC 1 · seed 0: diverged" in md
    # HTML: self-contained, tables and figures inline, the protocol headed by name
    assert "<table>" in page and "r (distilled, random)" in page and "<b>41.0 †</b>" in page
    assert "<h2>unnamed (stored before named protocols) <code>protocol p1</code></h2>" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 3 + 6  # CD diagram, score vs IPC, scatter, and one mosaic per (dataset, IPC, method)
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert "src=\"http" not in page and "<link" not in page
    assert '<th class="name">method</th>' in page and '<td class="name">dm</td>' in page  # names read as text
    # CSV: tidy, one row per eval model × split × metric of every done cell
    csv = pd.read_csv(files.results)
    assert {"dataset", "method", "ipc", "seed", "protocol_id", "model_index", "split", "metric", "value"} <= set(csv)
    assert len(csv) == (3 * 5) * 2 * 2 * 4  # 15 done cells × 2 models × 2 splits × 4 metrics
    row = csv[(csv.dataset == "gamma") & (csv.method == "dm") & (csv.ipc == 10) & (csv.split == "test")
              & (csv.metric == "accuracy")]
    assert sorted(row.value) == pytest.approx([0.80, 0.82])  # 0.6 + 0.15 + 0.05 ± 0.01
    assert not re.search(r"\d\.\d{8,}", files.results.read_text())  # 7 significant digits, not float64 noise
    assert pd.read_csv(files.predictions).empty  # these hand-made cells stored no per-image predictions


def test_mixed_protocols_get_separate_sections(tmp_path, capsys):
    other = {"model": "convnet", "width": 64, "depth": 3, "epochs": 50, "full_epochs": 10, "lr": 0.05,
             "augment": "dsa", "eval_models": 2}
    recs = [record("random", "alpha", 10, [0.50, 0.50]), record("dm", "alpha", 10, [0.60, 0.60]),
            record("random", "alpha", 10, [0.70, 0.70], protocol_id="p2", protocol=other),
            record("dm", "alpha", 10, [0.25, 0.25], protocol_id="p2", protocol=other)]
    db = store_with(tmp_path / "mixed.sqlite", recs)
    assert main(["report", "--db", str(db), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "leaderboard.md").read_text()
    assert "several evaluation protocols" in md
    first, second, across = re.split(r"## unnamed \(stored before named protocols\) \(protocol `p[12]`\)|"
                                     r"## The same cells", md)[1:]
    # the one place both protocols meet: the table of what the protocol alone changes
    assert "under different evaluation protocols" in across and "+20.0" in across
    assert "50.0" in first and "60.0" in first and "70.0" not in first and "25.0" not in first
    assert "70.0" in second and "25.0" in second and "50.0" not in second
    assert "convnet width 64 depth 3 · 50 epochs (full 10) · lr 0.05 · aug dsa · 2 eval models" in second
    assert "+10.0" in first and "-45.0" in second  # gain vs random: within each protocol only
    assert "needs at least 3 datasets (has 1)" in first
    page = (tmp_path / "r" / "index.html").read_text()
    assert page.count('<section class="protocol"') == 3  # the protocol comparison, then one per protocol


def test_report_cli_rejects_a_missing_database(tmp_path, capsys):
    assert main(["report", "--db", str(tmp_path / "nope.sqlite"), "--out", str(tmp_path / "r")]) == 2
    assert "no results database" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


REFERENCE = """
dataset: paperset
accuracy:
  mtt: {1: 50.0, 10: 80.0}
  full: 90.0
settings:
  - {label: classes, stored: dataset.num_classes, paper: 4}
  - {label: width, stored: protocol.width, paper: 128}
  - {label: experts, stored: params.num_experts, method: mtt, paper: 100}
  - {label: original size, paper: 299}
  - {label: images, stored: dataset.n_train+dataset.num_classes, paper: 1000}
notes: [a free-text difference]
"""


def test_report_puts_published_numbers_beside_ours(tmp_path, capsys):
    db = store_with(tmp_path / "r.sqlite", [
        record("random", "mine", 1, [0.40, 0.50]),
        record("mtt", "mine", 1, [0.55, 0.65], params={"num_experts": 2}),
        record("full", "mine", None, [0.85, 0.87]),
    ])
    ref = tmp_path / "paper.reference.yaml"
    ref.write_text(REFERENCE)
    assert main(["report", "--db", str(db), "--out", str(tmp_path / "out"), "--reference", str(ref)]) == 0
    text = (tmp_path / "out" / "leaderboard.md").read_text()
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:3]): line for line in text.splitlines()
            if line.startswith("|")}
    # mtt at IPC 1: ours 60.0 ± 7.1 against the paper's 50.0 -> +10.0 pp over 2 networks
    mtt1 = rows[("mtt", "1", "50.0")]
    assert "60.0 ± 7.1" in mtt1 and "+10.0" in mtt1
    assert "not run" in rows[("mtt", "10", "80.0")]  # published, not measured: shown, not hidden
    assert "+-4.0" not in text and "-4.0" in rows[("full", "full", "90.0")]  # 86.0 vs 90.0
    assert "| random" in rows[("random", "1", "—")]
    settings = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 4 " in settings["classes"] and "same" in settings["classes"]
    assert "| 128 " in settings["width"] and "| 8 " in settings["width"] and "same" not in settings["width"]
    assert "| 2 " in settings["experts"]
    assert "not stored" in settings["original size"]
    assert "| 1004 " in settings["images"]  # a sum of stored numbers (n_train 1000 + 4 classes)
    assert "Different data" in text and "a free-text difference" in text
    assert "Published numbers" in (tmp_path / "out" / "index.html").read_text()


def test_report_rejects_an_unknown_reference(report_db, tmp_path, capsys):
    assert main(["report", "--db", str(report_db), "--out", str(tmp_path / "o"), "--reference", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "covid19-mtt" in err
    assert not (tmp_path / "o").exists()


def test_leaderboard_says_what_guessing_scores_and_flags_rows_no_better_than_chance(tmp_path):
    cell = record("random", "skewed", 1, [0.60, 0.62], balanced=[0.45, 0.55])
    cell.config["dataset"]["class_counts"] = {"train": [90, 10], "val": [9, 1], "test": [70, 30]}
    db = store_with(tmp_path / "r.sqlite", [cell, record("random", "old", 1, [0.5, 0.5])])
    files = write_report(db, tmp_path / "out")
    text = files.leaderboard.read_text()
    assert "Always predicting the majority class scores 70.0 % accuracy and 50.0 % balanced accuracy" in text
    assert text.count("Always predicting") == 1  # cells stored without class counts get no such line
    files = write_report(db, tmp_path / "acc", metric="accuracy")
    text = files.leaderboard.read_text()
    assert "a classifier without skill scores 70.0 % accuracy" in text
    assert "61.0 †" in text  # below the 70 % a constant majority guess scores


def test_two_configurations_of_a_method_are_not_pooled(tmp_path):
    """MTT run at 100 and at 200 iterations on the same dataset and IPC: two rows named by the
    parameter that differs, not one row of "1 × 4" networks; IPC 10 (one configuration) is named
    the same way so a method's rows read alike. A method with one configuration keeps its name."""
    db = store_with(tmp_path / "r.sqlite", [
        record("random", "alpha", 1, [0.30, 0.32]),
        record("mtt", "alpha", 1, [0.40, 0.42], params={"iterations": 100, "lr_img": 100}),
        record("mtt", "alpha", 1, [0.50, 0.52], params={"iterations": 200, "lr_img": 100}),
        record("mtt", "alpha", 10, [0.70, 0.72], params={"iterations": 100, "lr_img": 100}),
        record("dc", "alpha", 1, [0.60, 0.62], params={"iterations": 100}),
        record("dc", "alpha", 10, [0.80, 0.82], params={"iterations": 50}),  # differs only across IPCs
    ])
    text = write_report(db, tmp_path / "out", metric="accuracy").leaderboard.read_text()
    rows = {cells[2].strip(): cells[3].strip() for line in text.splitlines()
            if line.startswith("| 1 ") and len(cells := line.split("|")) > 8}
    assert rows["mtt (iterations=100)"].strip("*").startswith("41.0 †")  # one seed: no test, all tie
    assert rows["mtt (iterations=200)"].strip("*").startswith("51.0 †")
    assert "| mtt (iterations=100) " in text.split("| 10 ", 1)[1]
    assert rows["dc"].startswith("**61.0") and "dc (" not in text


def test_published_numbers_stand_beside_each_variant_of_a_method(tmp_path, capsys):
    """Two MTT configurations at IPC 1: the paper's 50.0 % is compared with each, and no third,
    paper-only "mtt" row appears; at IPC 10 (not run) the paper's row still shows."""
    db = store_with(tmp_path / "r.sqlite", [
        record("mtt", "mine", 1, [0.55, 0.65], params={"iterations": 100}),
        record("mtt", "mine", 1, [0.45, 0.55], params={"iterations": 200}),
    ])
    ref = tmp_path / "paper.reference.yaml"
    ref.write_text(REFERENCE)
    assert main(["report", "--db", str(db), "--out", str(tmp_path / "out"), "--reference", str(ref)]) == 0
    text = (tmp_path / "out" / "leaderboard.md").read_text()
    versus = text.split("next to the published numbers", 1)[1].split("###", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in versus.splitlines()
            if line.startswith("| mtt")]
    assert [(r[0], r[1], r[2], r[5]) for r in rows] == [
        ("mtt (iterations=100)", "1", "50.0", "+10.0"),
        ("mtt (iterations=200)", "1", "50.0", "+0.0"),
        ("mtt", "10", "80.0", "—"),
    ]


def test_a_set_evaluated_under_two_protocols_is_drawn_once(tmp_path):
    path = write_condensed_npz(tmp_path / "condensed" / "same.npz", classes=3, ipc=2)
    recs = [record("random", "alpha", 2, [0.5, 0.6], classes=3, condensed_path=path),
            record("random", "alpha", 2, [0.4, 0.5], classes=3, condensed_path=path, protocol_id="p2",
                   protocol={"name": "dc", "epochs": 300, "augment": "none"})]
    page = write_report(store_with(tmp_path / "r.sqlite", recs), tmp_path / "out").html.read_text()
    assert page.count("data:image/png;base64") - page.count('class="figure"') == 1  # one mosaic, not two
    assert "the same images as random under protocol p1" in page
