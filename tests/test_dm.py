"""DM: gradient flow, improvement over random selection, resume, errors."""

from __future__ import annotations

import pytest
import torch
from _synth import held_out_accuracy, make_splits, make_task, without_timings

from medbench.core.errors import MedbenchError
from medbench.distill.contract import get_method
from medbench.methods import synthetic as syn
from medbench.methods.dm import matching_loss
from medbench.nn.augment import AugmentConfig, SiameseAugment


@pytest.fixture(scope="module")
def splits():
    return make_splits()


def test_gradients_reach_only_the_synthetic_images(splits) -> None:
    task = make_task(splits, ipc=2)
    before = task.train.images.clone()
    images, _ = syn.initial_set(task, "real")
    images.requires_grad_(True)
    augment = SiameseAugment(AugmentConfig(), task.channels)
    loss = matching_loss(task, images, torch.Generator().manual_seed(0), batch_real=16, augment=augment)
    loss.backward()
    assert images.grad is not None and float(images.grad.abs().sum()) > 0
    assert torch.equal(task.train.images, before)


def test_dm_lowers_matching_loss_and_beats_random(splits) -> None:
    task = make_task(splits, ipc=1)
    before = task.train.images.clone()
    method = get_method("dm")
    params = method.make_params({"iterations": 60, "eval_every": 60, "eval_epochs": 50, "lr_img": 10.0})
    result = method.run(task, params)
    assert torch.equal(task.train.images, before)
    init, _ = syn.initial_set(task, "real")

    def mean_loss(images: torch.Tensor) -> float:
        return sum(float(matching_loss(task, images, torch.Generator().manual_seed(100 + k), batch_real=256,
                                       augment=None)) for k in range(4)) / 4

    assert mean_loss(result.images) < 0.8 * mean_loss(init)
    random_set = get_method("random").run(task, get_method("random").make_params())
    assert held_out_accuracy(splits, result) > held_out_accuracy(splits, random_set) + 0.08
    assert result.info["chosen_iteration"] in (0, 60) and len(result.info["val_history"]) == 2


def test_resume_matches_uninterrupted(splits, tmp_path) -> None:
    method = get_method("dm")
    params = method.make_params({"iterations": 6, "eval_every": 3, "eval_epochs": 3, "batch_real": 16})
    whole = method.run(make_task(splits, ipc=2), params)

    def stop(done: int, total: int) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        method.run(make_task(splits, ipc=2, checkpoint_dir=tmp_path, progress=stop), params)
    resumed = method.run(make_task(splits, ipc=2, checkpoint_dir=tmp_path), params)
    assert torch.equal(resumed.images, whole.images)
    assert without_timings(resumed.info) == without_timings(whole.info)
    again = method.run(make_task(splits, ipc=2, checkpoint_dir=tmp_path), params)  # finished: just reloads
    assert torch.equal(again.images, whole.images)


def test_noise_init_and_no_augmentation_run(splits) -> None:
    method = get_method("dm")
    params = method.make_params({"iterations": 2, "eval_every": 1, "eval_epochs": 2, "init": "noise",
                                 "augment": False})
    result = method.run(make_task(splits, ipc=3), params)
    assert result.images.shape == (12, 1, 12, 12) and torch.isfinite(result.images).all()
    assert [it for it, _ in result.info["val_history"]] == [0, 1, 2]


@pytest.mark.parametrize("values", [{"lr_img": -1}, {"init": "zeros"}, {"iterations": 0}, {"eval_every": 0},
                                    {"momentum_img": 1.0}])
def test_bad_params_are_user_errors(values) -> None:
    with pytest.raises(MedbenchError):
        get_method("dm").make_params(values)


def test_ipc_above_smallest_class_is_a_user_error(splits) -> None:
    with pytest.raises(MedbenchError, match="IPC"):
        get_method("dm").run(make_task(splits, ipc=100), get_method("dm").make_params())
