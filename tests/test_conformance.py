"""The conformance kit: every built-in passes; a plug-in broken in one way fails exactly that property,
with one line; exemptions print n/a with their reason; the instruments themselves work."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from medbench.cli.main import main
from medbench.core.errors import CellFailed, MedbenchError
from medbench.distill.contract import METHODS, PROPERTIES, CondensedSet, DistillTask, get_method, register_method
from medbench.methods.dm import DMParams
from medbench.testing import assert_conforms, conform
from medbench.testing.probes import ArmedSpec, Switch, watching

pytestmark = pytest.mark.usefixtures("one_thread")

BUILTINS = ["random", "random_tiled", "herding", "kcenter", "full", "dc", "dsa", "dm", "idm", "mtt", "datm",
            "random_soft", "package"]
DM_TINY = get_method("dm").conform_params
REAL_ROOT = SHARED_DATA / "medmnist"


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_conforms(name, tmp_path):
    outcomes = assert_conforms(name, data_root=REAL_ROOT, workdir=tmp_path)
    assert [o.name for o in outcomes][: len(PROPERTIES)] == list(PROPERTIES)
    for o in outcomes:  # an n/a is either declared (with its reason) or found (no search space, no real image)
        assert o.status in ("pass", "n/a") and o.detail
    if (REAL_ROOT / "breastmnist.npz").is_file():
        assert {"output [breastmnist]", "test-split [breastmnist]"} <= {o.name for o in outcomes}


# --- plug-ins broken one way each: DM with one thing done wrong --------------------------------


@dataclass(frozen=True)
class LeakyParams(DMParams):
    path: str = ""  # the dataset file the plug-in reads its test split from


def _dm(task: DistillTask, params: DMParams) -> CondensedSet:
    plain = DMParams(**{f.name: getattr(params, f.name) for f in dataclasses.fields(DMParams)})
    return get_method("dm").run(task, plain)


def reads_test(task: DistillTask, params: LeakyParams) -> CondensedSet:
    """Nudges its set by the test images' mean, read from the npz on disk."""
    out = _dm(task, params)
    with np.load(params.path) as npz:
        shift = float(npz["test_images"].mean()) / 255.0
    return dataclasses.replace(out, images=out.images + 1e-3 * shift)


def ignores_seed(task: DistillTask, params: DMParams) -> CondensedSet:
    """Always distils with seed 0."""
    return _dm(dataclasses.replace(task, seed=0), params)


def stores_nan(task: DistillTask, params: DMParams) -> CondensedSet:
    """Keeps its initialisation as the result when distillation blows up."""
    try:
        return _dm(task, params)
    except CellFailed:
        return get_method("random").run(task, get_method("random").make_params())


def no_resume(task: DistillTask, params: DMParams) -> CondensedSet:
    """Never saves its state."""
    return _dm(dataclasses.replace(task, checkpoint_dir=None), params)


def overruns(task: DistillTask, params: DMParams) -> CondensedSet:
    """Ignores budget_seconds."""
    return _dm(dataclasses.replace(task, budget=None), params)


def wrong_shape(task: DistillTask, params: DMParams) -> CondensedSet:
    """Crops a pixel off every image."""
    out = _dm(task, params)
    return dataclasses.replace(out, images=out.images[..., :-1, :-1].contiguous())


BROKEN = {"reads_test": (reads_test, LeakyParams, "test-split"), "ignores_seed": (ignores_seed, DMParams, "seed"),
          "stores_nan": (stores_nan, DMParams, "non-finite"), "no_resume": (no_resume, DMParams, "resume"),
          "overruns": (overruns, DMParams, "budget"), "wrong_shape": (wrong_shape, DMParams, "output")}


@pytest.fixture
def broken():
    names = []
    for name, (fn, params, _) in BROKEN.items():
        register_method(f"broken_{name}", params=params, conform_params=DM_TINY)(fn)
        names.append(f"broken_{name}")
    yield
    for name in names:
        METHODS._items.pop(name, None)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_plugin_broken_one_way_fails_exactly_that_property(name, broken, tmp_path):
    _, _, breaks = BROKEN[name]
    overrides = {"path": str(tmp_path / "data" / "generated.npz")} if name == "reads_test" else None
    outcomes = conform(f"broken_{name}", overrides, real=False, workdir=tmp_path)
    failed = [o for o in outcomes if o.failed]
    assert [o.name for o in failed] == [breaks], [o.line() for o in outcomes]
    line = failed[0].line()
    assert line.startswith(f"FAIL  {breaks}: ") and "\n" not in line


def test_the_failures_say_what_went_wrong(broken, tmp_path):
    def failure(name, overrides=None):
        folder = tmp_path / name
        return next(o.detail for o in conform(f"broken_{name}", overrides, real=False, workdir=folder) if o.failed)

    assert "opened the dataset file" in failure("reads_test", {"path": str(tmp_path / "reads_test/data/generated.npz")})
    assert "seeds 0 and 1 gave the same set" in failure("ignores_seed")
    assert "returned a finite set as done" in failure("stores_nan")
    assert "left nothing in task.checkpoint_dir" in failure("no_resume")
    assert "ran all 6 iterations" in failure("overruns")
    assert "images (6, 1, 11, 11), expected N×1×12×12" in failure("wrong_shape")


def test_a_plugin_that_reads_test_in_another_process_is_caught_by_the_poisoned_split(tmp_path):
    """A worker process reads the file: the tripwire (an audit hook of this process) sees nothing, the
    poisoned test split does."""
    path = tmp_path / "data" / "generated.npz"
    code = f"import numpy as np; print(np.load({str(path)!r})['test_images'].mean() / 255)"

    def in_worker(task: DistillTask, params: DMParams) -> CondensedSet:
        """Reads the test split's mean in a worker process."""
        out = _dm(task, params)
        mean = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        return dataclasses.replace(out, images=out.images + 1e-3 * mean)

    register_method("broken_in_worker", params=DMParams, conform_params=DM_TINY)(in_worker)
    try:
        outcomes = {o.name: o for o in conform("broken_in_worker", real=False, workdir=tmp_path)}
    finally:
        METHODS._items.pop("broken_in_worker", None)
    assert outcomes["test-split"].failed, outcomes["test-split"].line()
    assert "changed when the test split was replaced" in outcomes["test-split"].detail


# --- declared exemptions, undeclared capabilities ---------------------------------------------


def first(task: DistillTask, params) -> CondensedSet:
    """The first IPC training images of every class."""
    idx = torch.cat([pool[: task.ipc] for pool in task.class_indices])
    return CondensedSet(task.real(idx), task.train.labels[idx], extras={"train_indices": idx.cpu()})


def test_an_undeclared_capability_is_checked_and_an_exempt_one_is_na(tmp_path):
    register_method("toy_first", selects=False)(first)
    register_method("toy_first_declared", selects=False, exempt={
        "seed": "the first images, whatever the seed", "checkpoints": "one pass", "resume": "one pass",
        "budget": "one pass", "non-finite": "no loss"})(first)
    try:
        undeclared = {o.name: o for o in conform("toy_first", real=False, workdir=tmp_path / "a")}
        declared = {o.name: o for o in conform("toy_first_declared", real=False, workdir=tmp_path / "b")}
    finally:
        METHODS._items.pop("toy_first", None)
        METHODS._items.pop("toy_first_declared", None)
    assert {n for n, o in undeclared.items() if o.failed} == {"seed", "checkpoints", "resume", "budget", "non-finite"}
    assert "recorded no checkpoint" in undeclared["checkpoints"].detail
    assert "could not inject a non-finite loss" in undeclared["non-finite"].detail
    assert not any(o.failed for o in declared.values())
    assert declared["resume"].status == "n/a" and declared["resume"].detail == "one pass"
    assert declared["provenance"].status == "pass"


def test_exempting_an_unknown_property_or_without_a_reason_is_refused():
    with pytest.raises(MedbenchError, match="unknown properties resumes"):
        register_method("toy_bad_exempt", exempt={"resumes": "typo"})
    with pytest.raises(MedbenchError, match="exempt resume without a reason"):
        register_method("toy_bad_exempt", exempt={"resume": " "})


def test_provenance_catches_real_images_without_their_indices(tmp_path):
    def unnamed(task, params):
        """Real images, indices dropped."""
        return dataclasses.replace(first(task, params), extras={})

    register_method("toy_unnamed", selects=False)(unnamed)
    try:
        outcome = next(o for o in conform("toy_unnamed", real=False, workdir=tmp_path) if o.name == "provenance")
    finally:
        METHODS._items.pop("toy_unnamed", None)
    assert outcome.failed and "extras['train_indices'] is missing" in outcome.detail


# --- the command ------------------------------------------------------------------------------


def test_conform_command_prints_one_line_per_property_and_exits_1_on_a_failure(broken, capsys):
    assert main(["conform", "random", "--no-real"]) == 0
    out = capsys.readouterr().out
    assert "pass  output:" in out and "n/a   resume: one pass, nothing to resume" in out
    assert "every property holds or is n/a" in out
    assert main(["conform", "broken_ignores_seed", "--no-real"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  seed: seeds 0 and 1 gave the same set" in out and "1 failed: broken_ignores_seed seed" in out


@pytest.mark.parametrize("argv, message", [
    (["conform"], "name a method"),
    (["conform", "nosuch"], "unknown method 'nosuch'"),
    (["conform", "dm", "--method-args", "lr_imgg=1"], "unknown setting lr_imgg"),
    (["conform", "dm", "--method-args", "dc:lr_img=1"], "names dc, which is not checked here"),
    (["conform", "package", "--method-args", "paht=x"], "method package: unknown setting paht"),
])
def test_conform_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# --- the instruments --------------------------------------------------------------------------


def test_the_tripwire_records_only_watched_files_and_only_inside_the_block(tmp_path):
    watched, other = tmp_path / "a.npz", tmp_path / "b.npz"
    for p in (watched, other):
        np.savez(p, x=np.zeros(1))
    with watching([watched]) as opened:
        np.load(other)
        assert opened == []
        with open(watched, "rb"):
            pass
    assert opened == [str(watched.resolve())]
    with watching([other]) as later:
        np.load(watched)
    assert later == []


def test_an_armed_network_outputs_nan_only_while_armed():
    switch = Switch()
    net = ArmedSpec("convnet", {"width": 4, "depth": 1}, switch).build(1, 3, 8)
    x = torch.randn(2, 1, 8, 8)
    assert torch.isfinite(net(x)).all() and switch.fired == 0
    switch.armed = True
    assert torch.isnan(net(x)).all() and switch.fired > 0
    assert torch.isnan(net.embed(x)).all()  # DM's embedding passes the hooked layers too


def test_a_plugins_own_pytest_sees_every_failed_property_at_once(tmp_path):
    register_method("toy_first_again", selects=False)(first)
    try:
        with pytest.raises(AssertionError) as info:
            assert_conforms("toy_first_again", real=False, workdir=tmp_path)
    finally:
        METHODS._items.pop("toy_first_again", None)
    text = str(info.value)
    assert "toy_first_again fails 5 conformance properties" in text
    assert text.count("FAIL") == 5 and "FAIL  resume:" in text


def test_real_data_is_used_from_the_data_root_when_present(tmp_path):
    if not (REAL_ROOT / "breastmnist.npz").is_file():
        pytest.skip("BreastMNIST not under the shared data root")
    names = [o.name for o in conform("random", data_root=REAL_ROOT, workdir=tmp_path)]
    assert names[-2:] == ["output [breastmnist]", "test-split [breastmnist]"]
    assert [o.name for o in conform("random", data_root=tmp_path / "empty", workdir=tmp_path / "b")][-1] == \
        "non-finite"
    assert Path(tmp_path / "data" / "breastmnist.npz").is_file()  # the kit poisons its copy, never the original
