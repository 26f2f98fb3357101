"""Cross-architecture networks and the crossarch entry point (store, resume, drop table)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _sharing_cells import random_cell
from torch import nn

from medbench.cli.main import main
from medbench.harness import crossarch
from medbench.nn.models import ModelSpec
from medbench.storage.store import Store


@pytest.mark.parametrize("name", ["resnet18", "vgg11", "alexnet", "convnet_bn"])
@pytest.mark.parametrize(("size", "channels"), [(28, 1), (64, 3)])  # both sizes and both channel counts
def test_models_forward_backward(name, size, channels):
    torch.manual_seed(0)
    model = ModelSpec(name).build(channels, 5, size)
    x = torch.randn(2, channels, size, size)
    logits = model(x)
    assert logits.shape == (2, 5)
    logits.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_small_inputs_adapt_the_imagenet_parts():
    resnet = ModelSpec("resnet18").build(1, 2, 28)
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1)
    assert isinstance(resnet.maxpool, nn.Identity)
    assert ModelSpec("resnet18").build(3, 2, 128).conv1.stride == (2, 2)
    vgg = ModelSpec("vgg11").build(1, 2, 28)
    pools = [m for m in vgg.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3  # 28 → 14 → 7 → 3; the last two would go below 2 px
    assert any(isinstance(m, nn.GroupNorm) for m in vgg.features)  # instance norm by default
    assert any(isinstance(m, nn.BatchNorm2d) for m in ModelSpec("vgg11", {"norm": "batch"}).build(1, 2, 28).features)
    assert any(isinstance(m, nn.BatchNorm2d) for m in ModelSpec("convnet_bn").build(1, 2, 28).modules())


def test_crossarch_stores_new_cells_and_resumes(tmp_path, capsys, monkeypatch):
    db, cell_id, _ = random_cell(tmp_path)
    code = main(["crossarch", "--db", str(db), "--archs", "convnet,convnet_bn,vgg11", "--data-root",
                 str(tmp_path), "--device", "cpu", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    with Store(db) as store:
        cells = store.cells()
        source = cells[cells.cell_id == cell_id].iloc[0]
        new = cells[cells.cell_id != cell_id]
        assert len(new) == 2  # convnet is the source's own network: not evaluated again
        assert (new.status == "done").all()
        assert set(new.protocol_id).isdisjoint({source.protocol_id}) and new.protocol_id.nunique() == 2
        assert (new.method == "random").all() and (new.ipc == source.ipc).all() and (new.seed == source.seed).all()
        assert (new.condensed_path == source.condensed_path).all()
        table = crossarch.crossarch_table(store)
    assert set(table.arch) == {"convnet_bn", "vgg11"}
    assert table.drop_pp.to_numpy() == pytest.approx(100 * (table.source_acc - table.arch_acc).to_numpy())
    assert table.bal_drop_pp.to_numpy() == pytest.approx(100 * (table.source_bal - table.arch_bal).to_numpy())
    assert "vgg11 % (drop pp)" in printed and "convnet_bn % (drop pp)" in printed
    assert "source acc %" in printed and "source bal acc %" in printed

    def must_not_run(*args, **kwargs):
        raise AssertionError("a stored cell was evaluated again")

    monkeypatch.setattr(crossarch, "evaluate", must_not_run)
    ids = crossarch.run_crossarch(db, ["convnet_bn", "vgg11"], data_root=tmp_path, device="cpu")
    assert set(ids) == set(new.cell_id)


def test_crossarch_bad_input_is_one_line(tmp_path, capsys):
    db, _, _ = random_cell(tmp_path)
    code = main(["crossarch", "--db", str(db), "--archs", "nonet", "--data-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown model nonet" in err and len(err.strip().splitlines()) == 1
    code = main(["crossarch", "--db", str(db), "--methods", "dc", "--data-root", str(tmp_path)])
    assert code == 2 and "no done cell" in capsys.readouterr().err


def test_a_failed_architecture_reads_failed_not_blank():
    table = pd.DataFrame([
        {"dataset": "d", "method": "dm", "ipc": "1", "source_model": "convnet", "arch": "alexnet",
         "source_acc": 0.8, "arch_acc": np.nan, "source_bal": 0.7, "arch_bal": np.nan, "seeds": 1, "failed": 1,
         "drop_pp": np.nan, "bal_drop_pp": np.nan},
        {"dataset": "d", "method": "dm", "ipc": "1", "source_model": "convnet", "arch": "vgg11",
         "source_acc": 0.8, "arch_acc": 0.75, "source_bal": 0.7, "arch_bal": 0.6, "seeds": 1, "failed": 0,
         "drop_pp": 5.0, "bal_drop_pp": 10.0},
    ])
    text = crossarch.format_crossarch(table)
    assert "failed" in text and "75.0 (+5.0)" in text
    assert "60.0 (+10.0)" in crossarch.format_crossarch(table, "balanced_accuracy")


def test_failed_results_are_kept_unless_retried(tmp_path, monkeypatch):
    """As in `medbench run`: a failed (diverged) evaluation is a stored result, not a gap to fill."""
    from medbench.core.errors import CellFailed

    db, _, _ = random_cell(tmp_path)
    calls = []

    def diverge(*args, **kwargs):
        calls.append(1)
        raise CellFailed("evaluation network 0 diverged")

    monkeypatch.setattr(crossarch, "evaluate", diverge)
    [target] = crossarch.run_crossarch(db, ["convnet_bn"], data_root=tmp_path, device="cpu")
    with Store(db) as store:
        assert store.status(target) == "failed"
    crossarch.run_crossarch(db, ["convnet_bn"], data_root=tmp_path, device="cpu")
    assert len(calls) == 1
    crossarch.run_crossarch(db, ["convnet_bn"], data_root=tmp_path, device="cpu", retry_failed=True)
    assert len(calls) == 2
