"""IDM: partitioning and expansion, the model queue, the class-aware term, resume, evaluation."""

from __future__ import annotations

import pytest
import torch
from _synth import make_splits, make_task, without_timings

from medbench.core.errors import MedbenchError
from medbench.distill import partition
from medbench.distill.contract import CondensedSet, get_method
from medbench.evaluation import Protocol
from medbench.evaluation.protocol import evaluate
from medbench.methods.idm import IDMParams, ModelQueue, class_contiguous, initial_tiles

FAST = {"iterations": 4, "eval_every": 2, "eval_epochs": 3, "batch_real": 8, "batch_train": 8,
        "model_train_steps": 2, "net_generate_interval": 2, "net_num": 5}


@pytest.fixture(scope="module")
def splits():
    return make_splits(size=8)


def test_tiles_expand_back_to_their_images():
    g = torch.Generator().manual_seed(0)
    parts = [torch.full((2, 1, 8, 8), float(k)) + 0 * torch.randn(2, 1, 8, 8, generator=g) for k in range(4)]
    stored = partition.tile(parts, 2)
    assert stored.shape == (2, 1, 8, 8)
    # official order: top-left, bottom-left, top-right, bottom-right
    assert stored[0, 0, 0, 0] == 0 and stored[0, 0, 7, 0] == 1 and stored[0, 0, 0, 7] == 2 and stored[0, 0, 7, 7] == 3
    images, labels = partition.expand(stored, torch.tensor([5, 6]), 2)
    assert images.shape == (8, 1, 8, 8) and labels.tolist() == [5, 6] * 4
    for k in range(4):  # tile-major: each tile of every image, upscaled to full size
        assert torch.allclose(images[2 * k: 2 * k + 2], parts[k])
    soft = torch.tensor([[0.2, 0.8], [0.9, 0.1]])
    assert partition.expand(stored, soft, 2)[1].shape == (8, 2)
    assert partition.expand(stored, labels[:2], 1)[0] is stored


def test_class_contiguous_reorders_the_expansion_class_by_class(splits):
    task = make_task(splits, ipc=2)
    images = initial_tiles(task, 2)
    labels = torch.arange(task.num_classes).repeat_interleave(2)
    x, y = class_contiguous(images, labels, task.num_classes, 2)
    assert y.tolist() == torch.arange(task.num_classes).repeat_interleave(8).tolist()
    expanded, expanded_labels = partition.expand(images, labels, 2)
    assert x.shape == expanded.shape
    for c in range(task.num_classes):  # the same images, tile by tile, grouped by class
        assert torch.equal(x[y == c], expanded[expanded_labels == c])


def test_initial_tiles_start_from_randoms_subset(splits):
    task = make_task(splits, ipc=2)
    stored = initial_tiles(task, 2)
    first, _ = partition.expand(stored, torch.zeros(len(stored)), 2)
    real = task.real(task.initial_indices())
    downscaled = torch.nn.functional.interpolate(real, size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(stored[..., :4, :4], downscaled)
    assert first.shape == (4 * len(real), *real.shape[1:])


def _params(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_model_queue_grows_trains_caps_and_replays(splits):
    task = make_task(splits, ipc=1)
    params = IDMParams(**FAST)
    queue = ModelQueue(task, params)
    assert len(queue.nets) == 3 and all(q.accuracy is None for q in queue.nets)
    sizes, trained = [], []
    for it in range(8):
        chosen = queue.before(it)
        assert len(chosen) == params.train_net_num
        before = [_params(q.net) for q in queue.nets]
        queue.after(it)
        trained.append(sum(not torch.equal(b, _params(q.net)) for b, q in zip(before, queue.nets, strict=True)))
        sizes.append(len(queue.nets))
    assert sizes == [4, 4, 5, 5, 5, 5, 5, 5]  # a new network every 2 iterations, at most net_num = 5
    assert trained == [params.fetch_net_num] * 8  # fetch_net_num networks advance each iteration
    assert queue.created == 7 and any(q.accuracy is not None for q in queue.nets)
    replay = ModelQueue(task, params)
    replay.advance(8)
    assert all(torch.equal(_params(a.net), _params(b.net)) for a, b in zip(queue.nets, replay.nets, strict=True))
    assert [a.accuracy for a in queue.nets] == [b.accuracy for b in replay.nets]


def test_idm_end_to_end_resume_and_evaluation_on_the_expansion(splits, tmp_path):
    method = get_method("idm")
    params = method.make_params(FAST)
    whole = method.run(make_task(splits, ipc=2), params)
    assert whole.images.shape == (8, 1, 8, 8) and int(whole.extras["partition"]) == 2
    images, labels = whole.training_set()
    assert images.shape == (32, 1, 8, 8) and labels.bincount().tolist() == [8, 8, 8, 8]
    assert whole.info["networks_created"] == 3 + 2  # pushes at iterations 0 and 2

    def stop(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        method.run(make_task(splits, ipc=2, checkpoint_dir=tmp_path, progress=stop), params)
    assert (tmp_path / "idm_queue.pt").is_file()  # the queue of the last checkpoint, saved beside it
    resumed = method.run(make_task(splits, ipc=2, checkpoint_dir=tmp_path), params)
    assert torch.equal(resumed.images, whole.images) and without_timings(resumed.info) == without_timings(whole.info)
    # The protocol trains on the expansion: a 4-image set evaluates like its 16 expanded images.
    protocol = Protocol(width=8, depth=2, epochs=2, eval_models=1, augment="none")
    stored = evaluate(whole, splits, protocol, seed=0)
    expanded = evaluate(CondensedSet(images, labels), splits, protocol, seed=0)
    assert stored[0].test == expanded[0].test


def test_class_aware_term_weighs_in_once_the_queue_has_trained(splits):
    method = get_method("idm")
    one = {**FAST, "iterations": 1, "eval_every": 1}
    # Iteration 0 matches under networks that never trained: their accuracy weight is 0, no CE term.
    first_on = method.run(make_task(splits, ipc=1), method.make_params({**one, "ce_weight": 5.0}))
    first_off = method.run(make_task(splits, ipc=1), method.make_params({**one, "ce_weight": 0.0}))
    assert first_on.info["matching_loss"] == first_off.info["matching_loss"]
    on = method.run(make_task(splits, ipc=1), method.make_params({**FAST, "ce_weight": 5.0}))
    off = method.run(make_task(splits, ipc=1), method.make_params({**FAST, "ce_weight": 0.0}))
    assert on.info["matching_loss"][-1][1] > off.info["matching_loss"][-1][1]


@pytest.mark.parametrize("values", [{"partition": 0}, {"net_num": 0}, {"lr_net": -1.0}, {"ce_weight": -0.1},
                                    {"model_train_steps": -1}])
def test_bad_settings_are_refused(values):
    with pytest.raises(MedbenchError):
        get_method("idm").make_params(values)


def test_expansion_equals_the_official_number_sign_augment():
    """The official IDM code (dc_utils.number_sign_augment): quadrants top-left, bottom-left, top-right,
    bottom-right of every image, each upsampled ×2 bilinearly, concatenated, labels repeated 4 times."""
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2])
    h = 4
    quads = [x[:, :, :h, :h], x[:, :, h:, :h], x[:, :, :h, h:], x[:, :, h:, h:]]
    official = torch.cat([torch.nn.functional.interpolate(q, scale_factor=2, mode="bilinear") for q in quads])
    images, labels = partition.expand(x, y, 2)
    assert torch.allclose(images, official) and labels.tolist() == y.repeat(4).tolist()


@pytest.mark.parametrize("queue_file", ["saved", "stale", "missing"])
def test_resume_loads_the_saved_queue_and_replays_without_it(splits, tmp_path, monkeypatch, queue_file):
    method = get_method("idm")
    params = method.make_params(FAST)
    whole = method.run(make_task(splits, ipc=2), params)

    def stop(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        method.run(make_task(splits, ipc=2, checkpoint_dir=tmp_path, progress=stop), params)
    path = tmp_path / "idm_queue.pt"
    if queue_file == "stale":  # a crash between the queue's write and the state's: another iteration
        payload = torch.load(path, weights_only=True)
        torch.save({**payload, "iteration": payload["iteration"] + 1}, path)
    elif queue_file == "missing":
        path.unlink()
    replays = []
    original = ModelQueue.advance
    monkeypatch.setattr(ModelQueue, "advance", lambda self, it: (replays.append(it), original(self, it)))
    resumed = method.run(make_task(splits, ipc=2, checkpoint_dir=tmp_path), params)
    assert torch.equal(resumed.images, whole.images)
    assert (replays == []) if queue_file == "saved" else (replays == [2])
