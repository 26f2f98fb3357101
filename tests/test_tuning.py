"""medbench tune: search spaces, trials on train/val only, stored and resumable searches, run --tuned,
and the distillation budget every iterative method honours."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest
import torch
from _synth import make_splits, make_task
from conftest import make_arrays, write_npz

from medbench.cli.main import main
from medbench.core.errors import MedbenchError
from medbench.distill.budget import Budget
from medbench.distill.contract import get_method, list_methods
from medbench.nn.models import ModelSpec
from medbench.storage.tuning import TuningRecords, cell_key
from medbench.tuning import trial as trial_module
from medbench.tuning.space import Dim, check_space, parse_spaces
from medbench.tuning.trial import TrialContext, run_trial

SPEC = ModelSpec("convnet", {"width": 4, "depth": None, "norm": "instance"})
DM = {"iterations": 4, "eval_every": 2, "eval_epochs": 3, "batch_real": 8}


def test_every_declared_search_space_is_valid_and_spaces_are_checked():
    declared = [n for n in list_methods() if get_method(n).search_space]
    assert {"dc", "dsa", "dm", "idm", "mtt", "datm"} <= set(declared)
    for name in declared:
        check_space(name, get_method(name).search_space, get_method(name).params)
    assert get_method("mtt").search_space["lr_img"].scale == "log"
    with pytest.raises(MedbenchError, match="unknown field 'lr'"):
        check_space("dm", {"lr": Dim(1, 2)}, get_method("dm").params)
    with pytest.raises(MedbenchError, match="below high"):
        check_space("dm", {"lr_img": Dim(2, 2)}, get_method("dm").params)
    spaces = parse_spaces({"dm": {"lr_img": {"low": 1, "high": 10, "scale": "log"}, "init": ["real", "noise"]}}, "f")
    assert spaces["dm"]["lr_img"] == Dim(1, 10, "log") and spaces["dm"]["init"].choices == ("real", "noise")


class Tripwire:
    """A split that fails the moment anything touches it."""

    def __getattr__(self, name):
        raise AssertionError(f"the test split was read during tuning ({name})")


def test_a_trial_never_reads_the_test_split(monkeypatch, tmp_path):
    splits = make_splits(size=8)
    guarded = dataclasses.replace(splits, test=Tripwire())
    with pytest.raises(AssertionError, match="test split was read"):
        guarded.test.images  # noqa: B018  (the tripwire works)
    monkeypatch.setattr(trial_module, "load_dataset", lambda *a, **k: guarded)
    reports = []
    context = TrialContext("dm", "toy", None, 2, 0, DM, SPEC, "balanced_accuracy", str(tmp_path))
    result = run_trial({"lr_img": 3.0}, context, reports.append)
    assert result["status"] == "done" and result["checkpoints"] == 3  # iterations 0, 2, 4
    assert [r["iteration"] for r in reports] == [0, 2, 4]
    best = [r["objective"] for r in reports]
    assert best == sorted(best) and result["objective"] == best[-1]  # best so far, as the method keeps it


def test_an_impossible_configuration_fails_its_trial_not_the_search(tmp_path, monkeypatch):
    monkeypatch.setattr(trial_module, "load_dataset", lambda *a, **k: make_splits(size=8))
    context = TrialContext("dm", "toy", None, 2, 0, DM, SPEC, "accuracy", str(tmp_path))
    result = run_trial({"lr_img": -1.0}, context, lambda r: None)
    assert result["status"] == "failed" and "lr_img must be positive" in result["message"]


@pytest.mark.parametrize("method", ["dm", "mtt"])
def test_budget_seconds_stops_iterative_methods_and_keeps_the_val_choice(method, tmp_path):
    splits = make_splits(size=8, channels=3)
    params = {"dm": DM, "mtt": {"num_experts": 1, "buffer_epochs": 3, "batch_train": 16, "max_start_epoch": 1,
                               "expert_epochs": 2, "syn_steps": 2, "iterations": 50, "eval_every": 25,
                               "eval_epochs": 2, "lr_img": 10.0, "augment": False,
                               "experts_root": str(tmp_path)}}[method]
    seen = []
    task = dataclasses.replace(make_task(splits, ipc=1), budget=Budget("seconds", 1e-9),
                               on_checkpoint=lambda it, s, scores: seen.append((it, s, scores)))
    out = get_method(method).run(task, get_method(method).make_params({**params, "iterations": 50}))
    assert out.info["stopped_by_budget"] == 1  # one iteration spent the budget, then a last checkpoint
    assert [c[0] for c in out.info["checkpoints"]] == [0, 1] == [s[0] for s in seen]
    assert out.info["checkpoints"][1][1] > 0 and set(seen[1][2]) == {"accuracy", "balanced_accuracy"}
    assert out.info["chosen_iteration"] in (0, 1)
    if method == "mtt":  # the expert buffer's training is reported beside, not inside, the budget
        assert out.info["expert_train_seconds"] > 0


def _toy(tmp_path):
    return str(write_npz(tmp_path / "toy.npz", make_arrays(channels=1, size=8)))


def _store_choice(db, toy, config):
    records = TuningRecords(db)
    key = cell_key("dm", toy, None, 1, ["convnet", {"width": 4, "depth": None, "norm": "instance"}])
    records.choose(key, "t0", config, "balanced_accuracy", 0.5, 0.45, {"trials": 7, "seconds": 12.0})


def test_run_tuned_uses_the_stored_choice_and_says_where_there_is_none(tmp_path, capsys):
    toy = _toy(tmp_path)
    db = tmp_path / "r.sqlite"
    argv = ["run", "--methods", "dm,random", "--datasets", toy, "--ipc", "1", "--seeds", "0", "--width", "4",
            "--epochs", "1", "--eval-models", "1", "--db", str(db), "--no-progress", "--method-args",
            "dm:iterations=2,eval_every=1,eval_epochs=1,batch_real=4"]
    assert main(argv) == 0  # defaults first
    _store_choice(db, toy, {"lr_img": 7.5})
    assert main([*argv, "--tuned"]) == 0
    err = capsys.readouterr().err
    assert "no tuned configuration for random · toy.npz · ipc 1" in err and "for dm" not in err
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT method, config FROM cells WHERE method = 'dm'").fetchall()
    conn.close()
    configs = [json.loads(c) for _, c in rows]
    assert len(configs) == 2  # the tuned cell is a new cell beside the default one
    tuned = next(c for c in configs if c.get("tuning"))
    assert tuned["params"]["lr_img"] == 7.5 and tuned["tuning"]["budget"]["trials"] == 7
    from medbench.reports import write_report

    text = write_report(db, tmp_path / "out").leaderboard.read_text()
    assert "dm (tuned)" in text and "| dm " in text  # "dm = dm (tuned)" where both kept their initial set
    section = text.split("### Tuned against default parameters", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| toy.npz") or "| dm " in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "dm" and cells[7] == "50.0" and cells[8] == "45.0"  # search and fresh-seed val
    # Scored in the metric the search maximised, on test as on val.
    with sqlite3.connect(db) as conn:
        balanced = conn.execute("SELECT s.value FROM scores s JOIN cells c ON s.cell_id = c.cell_id WHERE c.method = "
                                "'dm' AND c.config LIKE '%\"tuning\"%' AND s.split = 'test' AND "
                                "s.metric = 'balanced_accuracy'").fetchone()[0]
    conn.close()
    assert cells[3] == "balanced accuracy" and cells[5].startswith(f"{100 * balanced:.1f}")
    assert "7 trials, 12 s" in row and '{"lr_img": 7.5}' in row


@pytest.fixture(scope="module")
def ray_local():
    pytest.importorskip("ray.tune")
    pytest.importorskip("optuna")
    import ray

    yield
    ray.shutdown()


def _tune(db, toy, trials):
    return main(["tune", "--methods", "dm", "--datasets", toy, "--ipc", "1", "--width", "4", "--db", str(db),
                 "--method-args", "dm:iterations=2,eval_every=1,eval_epochs=2,batch_real=4", "--trials", str(trials),
                 "--rescore", "1", "--rescore-seeds", "1", "--device", "cpu"])


def test_tuning_stores_every_trial_is_reproducible_and_resumes(ray_local, tmp_path, capsys):
    toy = _toy(tmp_path)
    assert _tune(tmp_path / "a.sqlite", toy, 3) == 0
    assert _tune(tmp_path / "b.sqlite", toy, 3) == 0
    a, b = TuningRecords(tmp_path / "a.sqlite").trials(), TuningRecords(tmp_path / "b.sqlite").trials()
    assert len(a) == 3 and list(a.trial) == [0, 1, 2]
    assert list(a.config) == list(b.config) and list(a.value) == list(b.value)  # same seeds, same trials
    chosen = TuningRecords(tmp_path / "a.sqlite").all_chosen()
    assert len(chosen) == 1 and json.loads(chosen.config[0]) == json.loads(
        TuningRecords(tmp_path / "b.sqlite").all_chosen().config[0])
    capsys.readouterr()
    assert _tune(tmp_path / "a.sqlite", toy, 5) == 0  # resume: 2 more, the 3 stored kept
    assert "3 of 5 trials stored" in capsys.readouterr().err
    resumed = TuningRecords(tmp_path / "a.sqlite").trials()
    assert len(resumed) == 5 and list(resumed.config[:3]) == list(a.config)
    assert len(set(resumed.config)) == 5  # the resumed sampler does not repeat the stored points
    assert torch.tensor(list(resumed.value)).isfinite().all()


def test_a_search_is_identified_by_its_early_stopping_rule_too():
    from medbench.tuning.search import TuneSettings, tuning_id

    context = TrialContext("dm", "toy", None, 1, 0, dict(DM), SPEC, "accuracy", "/data")
    space = {"lr_img": Dim(0.1, 10.0, "log")}
    base = tuning_id(context, space, TuneSettings())
    assert tuning_id(dataclasses.replace(context, data_root="/elsewhere", device="cuda"), space, TuneSettings()) == base
    assert tuning_id(context, space, TuneSettings(trials=50, workers=2)) == base  # budget and parallelism: no
    assert tuning_id(context, space, TuneSettings(grace_checkpoints=1)) != base
    assert tuning_id(context, space, TuneSettings(reduction_factor=2)) != base
    assert tuning_id(context, space, TuneSettings(rescore_seeds=(7,))) != base


def test_a_relative_data_root_reaches_trials_and_workers_as_an_absolute_path(tmp_path, monkeypatch):
    # Ray trials (and a cluster's workers) do not run in the caller's working directory.
    from medbench.cli.gridargs import grid_spec_from_args
    from medbench.cli.main import build_parser

    monkeypatch.chdir(tmp_path)
    spec = grid_spec_from_args(build_parser().parse_args(["tune", "--methods", "dm", "--data-root", "data"]))
    assert spec.data_root == tmp_path / "data" and spec.data_root.is_absolute()
