"""Named evaluation protocols, the official ConvNet shapes, and paired initial subsets."""

from __future__ import annotations

import pytest
import torch
from _synth import make_splits, make_task
from conftest import make_arrays, write_npz

from medbench.cli.main import main
from medbench.core.errors import MedbenchError
from medbench.distill.contract import get_method
from medbench.evaluation import Protocol
from medbench.evaluation.named import PROTOCOLS, changed_fields, named_protocol
from medbench.harness.grid import Cell
from medbench.methods import mtt
from medbench.methods import synthetic as syn
from medbench.nn.models import ModelSpec, architecture
from medbench.nn.models.convnet import ConvNet


def test_the_published_protocols_by_name():
    assert PROTOCOLS.names() == ["dc", "dm", "dsa", "mtt"]
    dc, dsa = named_protocol("dc"), named_protocol("dsa")
    assert (dc.epochs, dc.augment) == (300, "none") and (dsa.epochs, dsa.augment) == (1000, "dsa")
    assert Protocol() == dsa  # the default is the protocol most recent work reports under
    # dsa, dm and mtt name the same settings: one protocol identity, comparable cells
    assert {str(named_protocol(n).identity()) for n in ("dsa", "dm", "mtt")} == {str(dsa.identity())}
    assert dc.identity() != dsa.identity()
    changed = named_protocol("dc", {"width": 32, "eval_models": 3})
    assert changed.name == "dc" and changed_fields(changed.record()) == {"width": 32, "eval_models": 3}


def test_architecture_version_is_part_of_the_protocol_identity():
    record = Protocol().record()
    assert record["architecture"] == architecture("convnet") == "convnet-v2"
    cell = Cell("random", "x", 28, 1, 0, {}, Protocol())
    assert "architecture" in Protocol().identity() and "name" not in Protocol().identity()
    assert cell.protocol_id == Cell("random", "x", 28, 1, 0, {}, named_protocol("mtt")).protocol_id
    assert Protocol.from_record(record) == Protocol()
    assert Protocol.from_record({"epochs": 300}).name == "unnamed"  # stored before names


def test_bf16_precision_is_part_of_the_identity_and_runs_under_autocast(monkeypatch):
    import dataclasses

    from medbench.distill.contract import CondensedSet
    from medbench.evaluation import evaluate
    from medbench.nn import training

    assert "precision" not in Protocol().identity()  # cells stored before it keep their ids
    bf16 = Protocol(precision="bf16")
    assert bf16.identity()["precision"] == "bf16" and Cell("random", "x", 28, 1, 0, {}, bf16).protocol_id != \
        Cell("random", "x", 28, 1, 0, {}, Protocol()).protocol_id
    with pytest.raises(MedbenchError, match="unknown precision 'fp16'"):
        Protocol(precision="fp16")
    splits = make_splits()
    condensed = CondensedSet(splits.train.images[:6].float() / 255, splits.train.labels[:6])
    protocol = Protocol(width=8, depth=2, epochs=2, eval_models=1, augment="none")
    seen = []
    original = training.train_network
    monkeypatch.setattr("medbench.evaluation.protocol.train_network",
                        lambda *a, amp=False, **k: (seen.append(amp), original(*a, amp=amp, **k))[1])
    evaluate(condensed, splits, protocol, seed=0, batching="sequential")
    evaluate(condensed, splits, dataclasses.replace(protocol, precision="bf16"), seed=0, batching="sequential")
    assert seen == [False, True]


def test_unknown_protocol_is_one_line_and_writes_nothing(tmp_path, capsys):
    db = tmp_path / "out" / "r.sqlite"
    npz = write_npz(tmp_path / "toy.npz", make_arrays())
    code = main(["run", "--datasets", str(npz), "--protocol", "dcc", "--db", str(db), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "unknown protocol 'dcc'; available: dc, dm, dsa, mtt" in err
    assert not (tmp_path / "out").exists()
    grid = tmp_path / "g.yaml"
    grid.write_text(f"datasets: [{npz}]\nprotocol: [dc]\ndb: {db}\n")
    assert main(["run", str(grid), "--no-progress"]) == 2
    assert "protocol must be the name" in capsys.readouterr().err and not (tmp_path / "out").exists()
    with pytest.raises(MedbenchError, match="epochs must be at least 1"):
        named_protocol("dc", {"epochs": 0})


def test_grid_file_names_a_protocol_and_options_override_it(tmp_path):
    from medbench.cli.gridargs import grid_spec_from_args
    from medbench.cli.main import build_parser

    grid = tmp_path / "g.yaml"
    grid.write_text("datasets: [breastmnist]\nprotocol: dc\neval: {width: 32}\n")
    spec = grid_spec_from_args(build_parser().parse_args(["run", str(grid), "--epochs", "50"]))
    assert (spec.protocol.name, spec.protocol.width, spec.protocol.epochs, spec.protocol.augment) == \
        ("dc", 32, 50, "none")
    spec = grid_spec_from_args(build_parser().parse_args(["run", str(grid), "--protocol", "mtt"]))
    assert (spec.protocol.name, spec.protocol.epochs, spec.protocol.augment) == ("mtt", 1000, "dsa")
    assert spec.seeds == (0, 1, 2)  # seeds are the unit of replication


@pytest.mark.parametrize(("size", "channels", "classes", "depth", "params", "embed"), [
    # official ConvNet (width 128, instance norm): hand counts of conv + GroupNorm + linear parameters
    (32, 3, 10, 3, 3584 + 2 * 147584 + 3 * 256 + 2048 * 10 + 10, 2048),  # CIFAR-10: 320,010
    (28, 1, 10, 3, 1280 + 2 * 147584 + 3 * 256 + 2048 * 10 + 10, 2048),  # MNIST: 317,706 (28 px as 32)
    (28, 3, 8, 3, 3584 + 2 * 147584 + 3 * 256 + 2048 * 8 + 8, 2048),  # 28 px RGB: the 32 px network
    (64, 3, 200, 4, 3584 + 3 * 147584 + 4 * 256 + 2048 * 200 + 200, 2048),  # Tiny ImageNet: 857,160
])
def test_convnet_matches_the_official_shapes(size, channels, classes, depth, params, embed):
    net = ConvNet(channels, classes, size, width=128)
    assert sum(p.numel() for p in net.parameters()) == params
    x = torch.zeros(2, channels, size, size)
    assert net.embed(x).shape == (2, embed) and net(x).shape == (2, classes)
    assert len([m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]) == depth
    if size == 28:
        first = net.features[0]
        assert first.padding == (3, 3)  # 28 → 32 → 16 → 8 → 4: nothing dropped by the last pooling


def test_methods_that_start_from_real_images_start_from_randoms_subset():
    splits = make_splits(num_classes=3, per_class=30)
    for seed in (0, 1):
        task = make_task(splits, ipc=4, seed=seed)
        chosen = get_method("random").run(task, get_method("random").make_params()).images
        dc_dm, _ = syn.initial_set(task, "real")  # DC, DSA and DM start here
        mtt_init = mtt._init_images(task, get_method("mtt").make_params(), torch.Generator().manual_seed(seed), None)
        assert torch.equal(chosen, dc_dm) and torch.equal(chosen, mtt_init)
    other = get_method("random").run(make_task(splits, ipc=4, seed=1), get_method("random").make_params()).images
    assert not torch.equal(other, get_method("random").run(make_task(splits, ipc=4, seed=0),
                                                           get_method("random").make_params()).images)


def test_random_with_candidates_is_the_matched_baseline():
    splits = make_splits(num_classes=3, per_class=30)
    task = make_task(splits, ipc=2, seed=0)
    method = get_method("random")
    plain = method.run(task, method.make_params())
    best = method.run(task, method.make_params({"candidates": 4, "eval_epochs": 5}))
    assert best.info["candidates"] == 4 and len(best.info["val_history"]) == 4
    scores = [acc for _, acc in best.info["val_history"]]
    assert best.info["chosen_candidate"] == scores.index(max(scores))
    if best.info["chosen_candidate"] == 0:  # subset 0 is the plain random subset of the seed
        assert torch.equal(best.images, plain.images)
    else:
        assert not torch.equal(best.images, plain.images)
    assert plain.info == {"chosen_candidate": 0, "candidates": 1, "val_history": []}
    with pytest.raises(MedbenchError, match="candidates must be at least 1"):
        method.make_params({"candidates": 0})


def test_stored_model_spec_depends_on_protocol_not_name():
    assert named_protocol("dc").model_spec() == named_protocol("dsa").model_spec() == ModelSpec(
        "convnet", {"width": 128, "depth": None, "norm": "instance"})
