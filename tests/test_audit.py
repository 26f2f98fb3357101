"""Privacy audit: exact copies are found, distances and SSIM are right, members are fair."""

from __future__ import annotations

import json

import kornia
import numpy as np
import pytest
import torch
from _sharing_cells import random_cell
from conftest import FAST
from sklearn.metrics import roc_auc_score

import medbench
from medbench.cli.main import main
from medbench.data.splits import Split, Splits
from medbench.sharing.audit import (
    AuditSettings,
    audit_cell,
    member_sets,
    nearest_l2,
    rank_auc,
    ssim_matrix,
)

QUICK = AuditSettings(bootstrap=200, pairs_per_class=200, reference_images=40)


def test_random_cell_is_flagged_as_real_copies(tmp_path, capsys):
    db, cell_id, _ = random_cell(tmp_path)
    out = tmp_path / "audit"
    code = main(["audit", cell_id[:8], "--db", str(db), "--out", str(out), "--data-root", str(tmp_path),
                 "--bootstrap", "200"])
    printed = capsys.readouterr().out
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"audit.md", "audit.json", "neighbours.png"}
    report = json.loads((out / "audit.json").read_text())
    mem = report["memorisation"]
    assert mem["exact_copies"] == 6 and mem["min_distance"] == 0.0
    assert mem["share_closer_than_same_class_median"] == 1.0 and mem["share_near_copies"] == 1.0
    assert report["real_images"]["count"] == 6 and report["real_images"]["nearest_is_the_selected_image"] == 1.0
    assert all(im["l2_neighbours"][0]["distance"] == 0.0 for im in report["images"])
    assert all(im["ssim_nearest"]["ssim"] > 0.999 for im in report["images"])
    assert "IS 6 real training images" in printed and "IS 6 real training images" in (out / "audit.md").read_text()
    mia = report["membership_inference"]
    for side in ("distilled", "random_subset_baseline"):
        attack = mia[side]
        assert 0.0 <= attack["ci_low"] <= attack["auc"] <= attack["ci_high"] <= 1.0
        assert attack["members"] == attack["non_members"] == 6
    assert "test images" in mia["non_members_are"]
    assert "Who counts as a member" in (out / "audit.md").read_text()


def test_synthetic_cell_has_no_copies_and_whole_train_members(tmp_path):
    db, _, data = random_cell(tmp_path)
    df = medbench.run(methods=["dm"], datasets=[str(data)], ipc=[2], db=db, device="cpu",
                      method_args={"dm": {"iterations": 2, "eval_every": 2, "eval_epochs": 2, "init": "noise",
                                          "augment": False}}, seeds=[0], **FAST)
    report = audit_cell(db, str(df.cell_id.iloc[0]), tmp_path / "a", data_root=tmp_path, settings=QUICK)
    assert report["real_images"] is None
    assert report["memorisation"]["exact_copies"] == 0 and report["memorisation"]["min_distance"] > 0
    mia = report["membership_inference"]["distilled"]
    assert "every one took part" in mia["members_are"]
    assert mia["members"] == mia["non_members"] == 20  # the whole (class-matched) test split


def test_nearest_l2_matches_brute_force_and_reads_zero_for_copies():
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(50, 1, 6, 6, generator=g) * 30  # large values: the expansion would not give 0
    queries = torch.cat([pool[[7, 3]], torch.randn(2, 1, 6, 6, generator=g)])
    d, i = nearest_l2(queries, pool, k=3, chunk=16)
    brute = torch.cdist(queries.flatten(1).double(), pool.flatten(1).double())
    expect_d, expect_i = brute.topk(3, largest=False)
    assert torch.equal(i, expect_i)
    assert torch.allclose(d, expect_d, atol=1e-9)
    assert d[0, 0] == 0.0 and d[1, 0] == 0.0 and i[0, 0] == 7


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matrix_equals_kornia(channels):
    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, channels, 16, 16, generator=g)
    b = torch.rand(4, channels, 16, 16, generator=g)
    b[0] = a[1]
    ours = ssim_matrix(a, b)
    for i in range(3):
        for j in range(4):
            ref = kornia.metrics.ssim(a[i : i + 1], b[j : j + 1], 11, padding="valid").mean()
            assert float(ours[i, j]) == pytest.approx(float(ref), abs=1e-5)
    assert float(ours[1, 0]) == pytest.approx(1.0, abs=1e-6)


def test_rank_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    m, n = rng.integers(0, 4, 30).astype(float), rng.integers(0, 4, 45).astype(float)
    expected = roc_auc_score(np.r_[np.ones(30), np.zeros(45)], np.r_[m, n])
    assert rank_auc(m, n)[0] == pytest.approx(expected)


def _splits() -> Splits:
    def split(labels):
        labels = torch.tensor(labels)
        return Split(torch.zeros(len(labels), 1, 4, 4, dtype=torch.uint8), labels)

    return Splits("s", split([0] * 30 + [1] * 10), split([0] * 4 + [1] * 4), split([0] * 6 + [1] * 3), 2,
                  (0.5,), (0.25,))


def test_member_sets_are_class_matched_and_from_test_only():
    splits, g = _splits(), torch.Generator().manual_seed(0)
    members, non = member_sets(splits, None, AuditSettings(), g)
    assert torch.bincount(splits.train.labels[members]).tolist() == [6, 3]
    assert torch.bincount(splits.test.labels[non]).tolist() == [6, 3]
    selected = torch.tensor([0, 1, 30, 31])  # two per class, as a random IPC-2 set
    members, non = member_sets(splits, selected, AuditSettings(), g)
    assert set(members.tolist()) == set(selected.tolist())
    assert torch.bincount(splits.test.labels[non]).tolist() == [2, 2]
