"""DATM and random_soft: label gradients through the exact unroll, the difficulty-aligned range
schedule, soft labels learned and carried, the teacher's labels, resume."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_arrays, write_npz
from safetensors.torch import load_file
from test_mtt import tiny_problem

from medbench.core.errors import MedbenchError
from medbench.data import load_dataset
from medbench.distill.contract import DistillTask, get_method
from medbench.methods.datm import DATMParams, teacher_start, upper_bound
from medbench.methods.trajectory import (
    Matching,
    match_recompute,
    match_trajectories,
    match_unrolled,
    open_buffer,
    plan_unroll,
)
from medbench.nn.augment import AugmentConfig, SiameseAugment
from medbench.nn.models import ModelSpec

SPEC = ModelSpec("convnet", {"width": 4})
BUFFER = {"num_experts": 2, "buffer_epochs": 4, "batch_train": 16, "augment": False}
FAST = {**BUFFER, "expert_epochs": 2, "max_start_epoch": 3, "current_max_start_epoch": 1, "expansion_end": 2,
        "syn_steps": 3, "iterations": 4, "eval_every": 2, "eval_epochs": 3, "lr_img": 10.0, "threshold": 1e9}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def experts_root(tmp_path_factory):
    return tmp_path_factory.mktemp("experts")


def make_task(root, checkpoint_dir=None, progress=None) -> DistillTask:
    splits = load_dataset(str(write_npz(root / "toy.npz", make_arrays(channels=3, size=8))))
    return DistillTask(train=splits.train, val=splits.val, num_classes=splits.num_classes, ipc=2, seed=0,
                       device=torch.device("cpu"), normalize=splits.normalize, model=SPEC,
                       checkpoint_dir=checkpoint_dir, progress=progress)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return make_task(tmp_path_factory.mktemp("datm"))


@pytest.mark.parametrize("augmented", [False, True])
def test_label_gradient_of_the_recompute_unroll_equals_the_unrolled_graph(augmented):
    net, images, labels, start, target = tiny_problem()
    logits = torch.randn(len(labels), 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    augment = SiameseAugment(AugmentConfig(), 3) if augmented else None
    plan = plan_unroll(len(images), 4, 7, torch.Generator().manual_seed(1), augment, images)
    lr = torch.tensor(0.5, dtype=torch.float64)
    ref = match_unrolled(net, images, logits, lr, start, target, plan, augment, learn_labels=True)
    got = match_recompute(net, images, logits, lr, start, target, plan, augment, 2, learn_labels=True)
    scale = ref.grad_labels.abs().max()
    assert scale > 0  # the labels do receive a gradient
    assert torch.allclose(got.grad_labels, ref.grad_labels, rtol=0, atol=1e-10 * scale)
    assert torch.allclose(got.grad_images, ref.grad_images, rtol=0, atol=1e-10 * ref.grad_images.abs().max())
    assert float(got.grad_lr) == pytest.approx(float(ref.grad_lr), rel=1e-10)
    # and it is the gradient: a small step along it changes the loss by ⟨grad, step⟩
    eps = 1e-6 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    moved = match_unrolled(net, images, logits + eps, lr, start, target, plan, augment)
    assert float(moved.loss - ref.loss) == pytest.approx(float((ref.grad_labels * eps).sum()), rel=1e-4)


def test_matching_range_follows_ipc_and_widens_linearly():
    p = DATMParams()
    assert p.matching_range(1) == (0, 4, 4, 0)  # official CIFAR-10 IPC 1: [0, 4), fixed
    assert p.matching_range(10) == (0, 10, 20, 1000)  # IPC 10: [0, 10) widening to [0, 20) over 1000
    assert p.matching_range(50) == (0, 20, 40, 2000)
    assert [upper_bound(it, 10, 20, 1000) for it in (0, 99, 100, 500, 999, 1000, 5000)] == [10, 10, 11, 15, 19, 20, 20]
    assert upper_bound(7, 4, 4, 0) == 4
    assert DATMParams(max_start_epoch=30, current_max_start_epoch=5).matching_range(10) == (0, 5, 30, 1000)
    with pytest.raises(MedbenchError, match="min_start_epoch"):
        DATMParams(min_start_epoch=12).matching_range(10)
    with pytest.raises(MedbenchError, match="lr_labels"):
        get_method("datm").make_params({"lr_labels": 0})


def test_the_loop_draws_start_epochs_from_the_range_of_each_iteration(task, experts_root):
    params = get_method("datm").make_params({**FAST, "experts_root": str(experts_root)})
    buffer = open_buffer(task, params)
    seen: list[int] = []

    def start_range(it: int) -> tuple[int, int]:
        seen.append(it)
        return (it % 2, it % 2 + 1)  # a one-epoch range: the start epoch is forced

    labels = torch.arange(3).repeat_interleave(2)
    calls: list[list[int]] = []
    original = buffer.snapshots
    buffer.snapshots = lambda e, epochs: calls.append(list(epochs)) or original(e, epochs)
    match_trajectories(task, params, buffer, Matching("probe", task.real(task.initial_indices()), labels, start_range))
    assert seen == [0, 1, 2, 3]
    assert calls == [[0, 2], [1, 3], [0, 2], [1, 3]]


def test_datm_learns_soft_labels_and_carries_each_image_class(task, experts_root, tmp_path):
    method = get_method("datm")
    params = method.make_params({**FAST, "experts_root": str(experts_root), "lr_labels": 50.0})
    checkpointed = make_task(tmp_path, checkpoint_dir=tmp_path / "ck")
    out = method.run(checkpointed, params)
    assert out.labels.dtype == torch.float32 and out.labels.shape == (6, 3)
    assert torch.allclose(out.labels.sum(1), torch.ones(6))
    assert out.extras["hard_labels"].tolist() == [0, 0, 1, 1, 2, 2]
    assert out.info["matching_range"] == [0, 1, 3, 2] and out.info["skipped_updates"] == 0
    # The labels moved from the teacher's initial logits (they were learned, not only carried).
    _, logits, _ = teacher_start(checkpointed, open_buffer(checkpointed, params), correct_only=True)
    state = load_file(str(tmp_path / "ck" / "datm_state.safetensors"))
    assert (state["labels"] - logits).abs().max() > 1e-3
    # Deterministic, and a run interrupted after iteration 3 resumes to the same result.
    assert torch.equal(method.run(task, params).images, out.images)

    def stop(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        method.run(make_task(tmp_path / "b", checkpoint_dir=tmp_path / "ck2", progress=stop), params)
    resumed = method.run(make_task(tmp_path / "c", checkpoint_dir=tmp_path / "ck2"), params)
    assert torch.equal(resumed.images, out.images) and torch.equal(resumed.labels, out.labels)


def test_threshold_skips_every_update_it_exceeds(task, experts_root):
    method = get_method("datm")
    params = method.make_params({**FAST, "experts_root": str(experts_root), "threshold": 1e-9})
    out = method.run(task, params)
    assert out.info["skipped_updates"] == 4 and out.info["learned_lr"] == pytest.approx(0.01)


def test_datm_starts_from_images_the_first_expert_classifies_correctly(task, experts_root):
    params = get_method("datm").make_params({**FAST, "experts_root": str(experts_root)})
    buffer = open_buffer(task, params)
    random_indices = task.initial_indices()
    indices, _, wrong = teacher_start(task, buffer, correct_only=True)
    kept, _, wrong_random = teacher_start(task, buffer, correct_only=False)
    assert torch.equal(kept, random_indices)  # random_soft: random's subset untouched
    assert torch.equal(task.train.labels[indices], task.train.labels[random_indices])  # classes kept
    first = buffer.snapshots(0, [buffer.num_epochs])[0]
    from medbench.methods.trajectory import FlatParams, build_seeded
    net = FlatParams(build_seeded(task.model, 3, 3, 8, 0, torch.device("cpu")))
    net.module.eval()
    with torch.no_grad():
        predicted = net(first, task.real(indices)).argmax(1)
    right = predicted == task.train.labels[indices]
    assert int((~right).sum()) == wrong <= wrong_random
    # replaced slots only where random's image was misclassified
    with torch.no_grad():
        random_right = net(first, task.real(random_indices)).argmax(1) == task.train.labels[random_indices]
    assert torch.equal(indices[random_right], random_indices[random_right])


def test_random_soft_is_randoms_subset_with_the_teachers_labels(task, experts_root):
    method = get_method("random_soft")
    out = method.run(task, method.make_params({**BUFFER, "experts_root": str(experts_root)}))
    random_set = get_method("random").run(task, get_method("random").make_params())
    assert torch.equal(out.images, random_set.images)
    assert torch.equal(out.extras["train_indices"], random_set.extras["train_indices"])
    assert torch.equal(out.extras["hard_labels"], random_set.labels)
    _, logits, _ = teacher_start(task, open_buffer(task, method.make_params(
        {**BUFFER, "experts_root": str(experts_root)})), correct_only=False)
    assert torch.allclose(out.labels, logits.softmax(1))
    assert dataclasses.replace(out, labels=out.hard_labels()).labels.tolist() == random_set.labels.tolist()
    buffer = open_buffer(task, method.make_params({**BUFFER, "experts_root": str(experts_root)}))
    assert out.info["expert_train_seconds"] == buffer.train_seconds > 0  # its cost beyond the cell


def test_student_loss_equals_the_official_soft_cross_entropy():
    """DATM's SoftCrossEntropy: sum(−log_softmax(x) · softmax(y)) / batch, y the label logits."""
    from medbench.methods.trajectory.unroll import targets
    from medbench.nn.training import loss_fn

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    official = torch.sum(-torch.log_softmax(x, dim=1) * torch.softmax(y, dim=1)) / x.shape[0]
    assert torch.allclose(loss_fn(x, targets(y)), official)
