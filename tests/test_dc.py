"""DC and DSA: matching distance, gradient flow, the IPC rule, improvement, resume, errors."""

from __future__ import annotations

import pytest
import torch
from _synth import held_out_accuracy, make_splits, make_task, without_timings

from medbench.core.errors import MedbenchError
from medbench.distill.contract import get_method
from medbench.methods import synthetic as syn
from medbench.methods.dc import DISTANCES, gradient_loss, loop_schedule, matching_loss
from medbench.nn.models import ModelSpec


@pytest.fixture(scope="module")
def splits():
    return make_splits()


@pytest.fixture(scope="module")
def distilled(splits):
    task = make_task(splits, ipc=1)
    method = get_method("dc")
    params = method.make_params({"iterations": 20, "eval_every": 20, "eval_epochs": 50, "lr_img": 1.0})
    before = task.train.images.clone()
    result = method.run(task, params)
    return task, params, result, before


@pytest.mark.parametrize("metric", sorted(DISTANCES))
def test_distance_zero_for_identical_positive_otherwise(metric: str) -> None:
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 4, 2, 3, 3, generator=g), torch.randn(3, 4, generator=g), torch.randn(3, 5, 4, generator=g)]
    other = [t + torch.randn(t.shape, generator=g) for t in grads]
    distance = DISTANCES[metric]
    assert abs(float(distance(grads, grads))) < 1e-4
    assert float(distance(grads, other)) > 0.1


def test_ours_ignores_one_dimensional_parameters() -> None:
    w = torch.randn(2, 4, 3)
    assert float(DISTANCES["ours"]([w, torch.ones(2, 4)], [w, -torch.ones(2, 4)])) < 1e-4


def test_ipc_rule() -> None:
    table = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
    for ipc, loops in table.items():
        assert loop_schedule(ipc) == loops
    derived = {2: (2, 50), 3: (3, 50), 5: (5, 50), 15: (15, 50), 25: (25, 25), 35: (35, 20), 45: (45, 15),
               100: (50, 10)}
    for ipc, loops in derived.items():
        assert loop_schedule(ipc) == loops


def test_gradients_reach_only_the_synthetic_images(splits) -> None:
    task = make_task(splits, ipc=2)
    before = task.train.images.clone()
    images, _ = syn.initial_set(task, "real")
    images.requires_grad_(True)
    generator = torch.Generator().manual_seed(0)
    net = syn.fresh_model(task, generator)
    loss = gradient_loss(net, task, images, generator, batch_real=16, distance=DISTANCES["ours"], augment=None)
    loss.backward()
    assert images.grad is not None and float(images.grad.abs().sum()) > 0
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(task.train.images, before)


def test_dc_lowers_matching_loss_and_beats_random(splits, distilled) -> None:
    task, params, result, before = distilled
    assert torch.equal(task.train.images, before)  # real images never modified
    init, _ = syn.initial_set(task, "real")

    def mean_loss(images: torch.Tensor) -> float:
        return sum(float(matching_loss(task, images, torch.Generator().manual_seed(100 + k), params))
                   for k in range(4)) / 4

    assert mean_loss(result.images) < 0.9 * mean_loss(init)
    random_set = get_method("random").run(task, get_method("random").make_params())
    assert held_out_accuracy(splits, result) > held_out_accuracy(splits, random_set) + 0.08
    assert result.info["chosen_iteration"] in (0, 20) and result.info["val_history"][0][0] == 0
    assert result.images.shape == (4, 1, 12, 12) and result.labels.tolist() == [0, 1, 2, 3]


def test_resume_matches_uninterrupted(splits, tmp_path) -> None:
    method = get_method("dsa")
    params = method.make_params({"iterations": 4, "eval_every": 2, "eval_epochs": 3, "outer_loop": 2,
                                 "inner_loop": 2, "batch_real": 16})
    whole = method.run(make_task(splits, ipc=2), params)

    def stop_at_three(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        method.run(make_task(splits, ipc=2, checkpoint_dir=tmp_path, progress=stop_at_three), params)
    assert torch.load(tmp_path / "dsa.pt", weights_only=True)["iteration"] == 2
    resumed = method.run(make_task(splits, ipc=2, checkpoint_dir=tmp_path), params)
    assert torch.equal(resumed.images, whole.images)
    assert without_timings(resumed.info) == without_timings(whole.info)
    assert [p.name for p in tmp_path.iterdir()] == ["dsa.pt"]  # no temporary file left behind
    other = method.make_params({"iterations": 5, "eval_every": 2, "eval_epochs": 3})
    with pytest.raises(MedbenchError):
        method.run(make_task(splits, ipc=2, checkpoint_dir=tmp_path), other)


@pytest.mark.parametrize("values", [{"lr_img": 0}, {"lr_net": -0.1}, {"init": "zeros"}, {"dis_metric": "l1"},
                                    {"iterations": 0}, {"outer_loop": 0}, {"batch_real": 0}])
def test_bad_params_are_user_errors(values) -> None:
    with pytest.raises(MedbenchError):
        get_method("dc").make_params(values)


def test_ipc_above_smallest_class_is_a_user_error(splits) -> None:
    with pytest.raises(MedbenchError, match="IPC"):
        get_method("dc").run(make_task(splits, ipc=65), get_method("dc").make_params())


@pytest.mark.parametrize("name", ["dc", "dsa"])
def test_batchnorm_models_run(splits, name: str) -> None:
    """Batch norm is frozen after a mixed real batch, so the vmapped per-class gradients work."""
    model = ModelSpec("convnet", {"width": 8, "depth": 2, "norm": "batch"})
    method = get_method(name)
    params = method.make_params({"iterations": 2, "eval_every": 2, "eval_epochs": 2, "batch_real": 16,
                                 "outer_loop": 2, "inner_loop": 1})
    result = method.run(make_task(splits, ipc=2, model=model), params)
    assert torch.isfinite(result.images).all() and result.info["iterations"] == 2


def test_a_candidate_set_whose_network_diverges_scores_zero_on_val() -> None:
    task = make_task(make_splits(), ipc=1, model=ModelSpec("convnet", {"width": 4, "depth": 2}))
    images, labels = syn.initial_set(task, "real")
    assert syn.val_score(task, images, labels, epochs=20, lr=1e30, augment=None) == 0.0
    assert syn.val_score(task, images, labels, epochs=2, lr=0.01, augment=None) > 0.0
