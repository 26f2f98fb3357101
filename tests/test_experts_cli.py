"""`medbench experts` builds a buffer that `medbench run --methods mtt` then reuses; a grid
builds each dataset's buffer once, before its cells, from the full splits."""

import math

import pytest
from conftest import FAST

import medbench
import medbench.methods.trajectory.buffer as experts
from medbench.cli.main import main

MTT = {"num_experts": 2, "buffer_epochs": 4, "batch_train": 16, "max_start_epoch": 2, "expert_epochs": 2,
       "syn_steps": 3, "iterations": 2, "eval_every": 2, "eval_epochs": 2, "lr_img": 10.0, "augment": False}


pytestmark = pytest.mark.usefixtures("one_thread")


def _count_training(monkeypatch):
    calls = []
    real = experts._train_expert

    def counted(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(experts, "_train_expert", counted)
    return calls


def _run_mtt(toy_npz, tmp_path, root, ipc=(1,)):
    return medbench.run(methods=["mtt"], datasets=[str(toy_npz)], ipc=list(ipc), db=tmp_path / "r.sqlite",
                        device="cpu", method_args={"mtt": {**MTT, "experts_root": str(root)}}, seeds=[0],
                        matched_baselines=False, **FAST)


def test_experts_command_builds_then_run_reuses(toy_npz, tmp_path, capsys, monkeypatch):
    root = tmp_path / "experts"
    argv = ["experts", "--dataset", str(toy_npz), "--num-experts", "2", "--epochs", "4", "--width", "8",
            "--experts-root", str(root), "--method-args", "mtt:batch_train=16,augment=false", "--device", "cpu",
            "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    facts = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert facts["num_experts"] == "2" and facts["epochs"] == "4" and int(facts["bytes_on_disk"]) > 0
    assert 0 <= float(facts["test_accuracy"]) <= 1  # the experts' own test accuracy is reported
    calls = _count_training(monkeypatch)
    assert main(argv) == 0 and calls == []  # second call: instant reuse
    summary = _run_mtt(toy_npz, tmp_path, root)
    assert calls == [] and list(summary.status) == ["done"]


def test_grid_builds_each_buffer_once_from_full_splits(toy_npz, tmp_path, monkeypatch):
    calls = _count_training(monkeypatch)
    root = tmp_path / "experts"
    summary = _run_mtt(toy_npz, tmp_path, root, ipc=(1, 2))
    assert list(summary.status) == ["done", "done"]
    assert sorted(calls) == [0, 1]  # two experts, trained once for both IPC cells
    (buffer_dir,) = [p for p in root.iterdir() if p.is_dir()]
    assert not math.isnan(experts.ExpertBuffer(buffer_dir).test_accuracy)
