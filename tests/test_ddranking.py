"""Soft-label evaluation and DD-Ranking's HLR / IOR: learned by a network, computed as by hand, shown
in the leaderboard with soft-label rows marked."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from _records import record, store_with
from _synth import make_splits

from medbench.analysis import ddranking
from medbench.core.errors import MedbenchError
from medbench.distill.contract import CondensedSet
from medbench.evaluation import Protocol
from medbench.evaluation.protocol import HARD_LABELS, evaluate
from medbench.reports import write_report
from medbench.storage.store import ModelRow


def test_soft_label_evaluation_learns_a_separable_problem_and_also_scores_hard_labels():
    splits = make_splits(num_classes=3, size=8, signal=60.0, noise=20.0)
    picks = torch.cat([torch.nonzero(splits.train.labels == c).flatten()[:4] for c in range(3)])
    classes = splits.train.labels[picks]
    # Soft labels that put 0.7 on the true class: a network trained on them must still separate the classes.
    soft = torch.full((len(picks), 3), 0.15).scatter_(1, classes.view(-1, 1), 0.7)
    condensed = CondensedSet(splits.normalize(splits.train.images[picks]), soft,
                             extras={"hard_labels": classes})
    protocol = Protocol(width=8, depth=2, epochs=60, eval_models=2, augment="none")
    scores = evaluate(condensed, splits, protocol, seed=0)
    assert all(s.test["accuracy"] > 0.9 for s in scores)
    assert all(s.test[HARD_LABELS + "accuracy"] > 0.9 for s in scores)
    # The hard-label evaluation uses the image classes: with wrong classes it collapses, with the soft
    # labels untouched (so the soft evaluation is unchanged).
    wrong = dataclasses.replace(condensed, extras={"hard_labels": (classes + 1) % 3})
    rescored = evaluate(wrong, splits, protocol, seed=0)
    assert [s.test["accuracy"] for s in rescored] == [s.test["accuracy"] for s in scores]
    assert all(s.test[HARD_LABELS + "accuracy"] < 0.1 for s in rescored)
    # A hard-label set is evaluated once: no hard_labels_ metrics.
    once = evaluate(dataclasses.replace(condensed, labels=classes, extras={}), splits, protocol, seed=0)
    assert not any(k.startswith(HARD_LABELS) for k in once[0].test)


def test_the_soft_label_loss_is_recorded_without_changing_existing_protocol_ids():
    protocol = Protocol()
    assert protocol.record()["soft_label_loss"] == "soft_ce"
    assert "soft_label_loss" not in protocol.identity()  # stored cells keep their ids
    assert Protocol.from_record(protocol.record()) == protocol
    with pytest.raises(MedbenchError, match="soft-label loss"):
        Protocol(soft_label_loss="kl")


def _per_seed(rows: list[tuple[str, str, int | None, list[float]]]) -> pd.DataFrame:
    out = []
    for method, metric, ipc, values in rows:
        for seed, v in enumerate(values):
            out.append({"protocol_id": "p", "dataset": "d", "size": 28, "method": method, "ipc": ipc,
                        "metric": metric, "seed": seed, "value": v, "network_std": 0.0, "networks": 3})
    frame = pd.DataFrame(out)
    frame["ipc"] = frame.ipc.astype("Int64")
    return frame


def test_hlr_and_ior_by_hand():
    frame = _per_seed([
        ("full", "accuracy", None, [0.88, 0.92]),
        ("random", "accuracy", 10, [0.50, 0.55, 0.60]),
        ("dm", "accuracy", 10, [0.60, 0.70, 0.65]),
        ("random_soft", "accuracy", 10, [0.70, 0.75, 0.80]),
        ("random_soft", HARD_LABELS + "accuracy", 10, [0.50, 0.55, 0.60]),
        ("datm", "accuracy", 10, [0.80, 0.82, 0.84]),
        ("datm", HARD_LABELS + "accuracy", 10, [0.55, 0.60, 0.65]),
    ])
    dd = ddranking.scores(frame).set_index("method")
    assert dd.loc["dm", "hlr"] == pytest.approx(0.90 - 0.65)
    assert dd.loc["datm", "hlr"] == pytest.approx(0.90 - 0.60)  # hard labels, not the soft-label 0.82
    assert dd.loc["dm", "ior"] == pytest.approx(0.10) and dd.loc["dm", "ior_baseline"] == "random"
    assert dd.loc["datm", "ior"] == pytest.approx(0.07) and dd.loc["datm", "ior_baseline"] == "random_soft"
    # differences 0.10, 0.07, 0.04: sd 0.03, se 0.03/√3, t(0.975, 2) = 4.3027
    half = 4.302653 * 0.03 / 3 ** 0.5
    assert dd.loc["datm", "ior_low"] == pytest.approx(0.07 - half, abs=1e-6)
    assert dd.loc["datm", "ior_high"] == pytest.approx(0.07 + half, abs=1e-6)
    assert bool(dd.loc["datm", "soft"]) and not bool(dd.loc["dm", "soft"])
    assert pd.isna(dd.loc["random", "ior"]) and pd.isna(dd.loc["random_soft", "ior"])
    assert "full" not in dd.index
    no_full = ddranking.scores(frame[frame.method != "full"]).set_index("method")
    assert pd.isna(no_full.loc["dm", "hlr"]) and no_full.loc["dm", "ior"] == pytest.approx(0.10)


def _soft(rec, hard: list[float]):
    models = [ModelRow(m.index, m.seed, m.lr, m.epochs, m.train_seconds,
                       {split: {**s, HARD_LABELS + "accuracy": h} for split, s in m.scores.items()})
              for m, h in zip(rec.models, hard, strict=True)]
    return dataclasses.replace(rec, models=models)


def test_leaderboard_shows_hlr_and_compares_soft_labels_with_random_soft(tmp_path):
    recs = [record("full", "alpha", None, [0.90, 0.90])]
    for seed, bump in enumerate((0.0, 0.02, 0.04)):
        recs += [record("random", "alpha", 10, [0.50 + bump] * 2, seed=seed),
                 record("dm", "alpha", 10, [0.60 + bump] * 2, seed=seed),
                 _soft(record("random_soft", "alpha", 10, [0.70 + bump] * 2, seed=seed), [0.50 + bump] * 2),
                 _soft(record("datm", "alpha", 10, [0.75 + 1.5 * bump] * 2, seed=seed), [0.55 + bump] * 2)]
    text = write_report(store_with(tmp_path / "r.sqlite", recs), tmp_path / "out",
                        metric="accuracy").leaderboard.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| IPC"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    rows = {c[1]: c for line in text.splitlines() if line.startswith("| 10 ")
            for c in [[x.strip() for x in line.strip("|").split("|")]]}
    hlr, matched, gain = (cols.index("HLR (pp) [95 % CI]"), cols.index("vs matched baseline (pp) [95 % CI]"),
                          cols.index("vs random (pp) [95 % CI]"))
    assert rows["dm"][hlr] == "28.0" and rows["dm"][matched].startswith("+10.0")  # one full seed: no interval
    assert rows["datm"][hlr] == "33.0" and rows["datm"][matched].startswith("+6.0")  # vs random_soft, not random
    assert rows["datm"][gain].endswith("‡") and rows["dm"][gain] == "= matched"
    assert "‡ soft labels" in text and "datm → random_soft" in text
