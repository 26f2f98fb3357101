"""MTT: exact memory-efficient gradient, divergence guard, checkpoints/resume, parameter checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_arrays, write_npz

from medbench.core.errors import CellFailed, MedbenchError
from medbench.data import load_dataset
from medbench.distill.contract import DistillTask, get_method
from medbench.methods.mtt import Diverged, MTTParams
from medbench.methods.trajectory import FlatParams, Step, build_seeded, match_recompute, match_unrolled, plan_unroll
from medbench.nn.augment import AugmentConfig, SiameseAugment
from medbench.nn.models import ModelSpec
from medbench.nn.training import loss_fn

SPEC = ModelSpec("convnet", {"width": 4})
LR_IMG = 10.0


pytestmark = pytest.mark.usefixtures("one_thread")


# Tiny everything: 2 experts × 4 epochs, a 3-step unroll, evaluation every 2 iterations.
FAST = {"num_experts": 2, "buffer_epochs": 4, "batch_train": 16, "max_start_epoch": 2, "expert_epochs": 2,
        "syn_steps": 3, "iterations": 4, "eval_every": 2, "eval_epochs": 3, "lr_img": 10.0, "augment": False}


def tiny_problem(dtype=torch.float64, n=6, classes=3):
    net = FlatParams(build_seeded(ModelSpec("convnet", {"width": 4, "depth": 2}), 3, classes, 8, 0,
                                  torch.device("cpu")).to(dtype))
    g = torch.Generator().manual_seed(0)
    start = (torch.randn(net.size, generator=g) * 0.3).to(dtype)
    target = start + 0.05 * torch.randn(net.size, generator=g).to(dtype)
    images = torch.randn(n, 3, 8, 8, generator=g).to(dtype)
    labels = torch.arange(classes).repeat_interleave(n // classes)
    return net, images, labels, start, target


@pytest.mark.parametrize("augmented", [False, True])
@pytest.mark.parametrize("checkpoint_every", [None, 1, 2, 7])
def test_recompute_gradient_equals_unrolled(augmented, checkpoint_every):
    net, images, labels, start, target = tiny_problem()
    augment = SiameseAugment(AugmentConfig(), 3) if augmented else None
    # 7 steps over mini-batches of 4 of 6 images: batches overlap and images recur across steps.
    plan = plan_unroll(len(images), 4, 7, torch.Generator().manual_seed(1), augment, images)
    lr = torch.tensor(0.5, dtype=torch.float64)
    ref = match_unrolled(net, images, labels, lr, start, target, plan, augment)
    got = match_recompute(net, images, labels, lr, start, target, plan, augment, checkpoint_every)
    assert float(got.loss) == pytest.approx(float(ref.loss), rel=1e-12)
    scale = ref.grad_images.abs().max()
    assert scale > 0
    assert torch.allclose(got.grad_images, ref.grad_images, rtol=0, atol=1e-10 * scale)
    assert torch.allclose(got.grad_lr, ref.grad_lr, rtol=1e-10, atol=0)


@pytest.mark.parametrize("soft", [False, True])
def test_blocked_student_steps_give_the_same_gradients(monkeypatch, soft):
    """Cache-sized blocks inside each student step (forced to one image here): the same loss and
    gradients as one pass over the batch, for both implementations, hard and learned soft labels."""
    from medbench.nn import blocking

    net, images, labels, start, target = tiny_problem()
    if soft:
        labels = torch.randn(len(images), 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    augment = SiameseAugment(AugmentConfig(), 3)
    plan = plan_unroll(len(images), 4, 5, torch.Generator().manual_seed(1), augment, images)
    lr = torch.tensor(0.5, dtype=torch.float64)
    whole = [impl(net, images, labels, lr, start, target, plan, augment, learn_labels=soft)
             for impl in (match_unrolled, match_recompute)]
    monkeypatch.setattr(blocking, "BLOCK_BYTES", 1)
    assert blocking.block_size(net.module, images[:4]) == 1
    blocked = [impl(net, images, labels, lr, start, target, plan, augment, learn_labels=soft)
               for impl in (match_unrolled, match_recompute)]
    for ref, got in zip(whole, blocked, strict=True):
        assert float(got.loss) == pytest.approx(float(ref.loss), rel=1e-12)
        assert torch.allclose(got.grad_images, ref.grad_images, rtol=0, atol=1e-10 * ref.grad_images.abs().max())
        assert torch.allclose(got.grad_lr, ref.grad_lr, rtol=1e-10, atol=0)
        if soft:
            assert torch.allclose(got.grad_labels, ref.grad_labels, rtol=0, atol=1e-10 * ref.grad_labels.abs().max())


def test_published_tesla_estimate_is_only_approximate():
    """TESLA's code keeps λ = ∂L/∂θ_J for every step (no Hessian terms): not the exact gradient."""
    net, images, labels, start, target = tiny_problem()
    plan = plan_unroll(len(images), 3, 6, torch.Generator().manual_seed(2))
    alpha = 0.5
    ref = match_unrolled(net, images, labels, torch.tensor(alpha, dtype=torch.float64), start, target, plan)
    thetas, theta = [], start
    for step in plan:
        thetas.append(theta)
        th = theta.clone().requires_grad_(True)
        g = torch.autograd.grad(loss_fn(net(th, images[step.indices]), labels[step.indices]), th)[0]
        theta = theta - alpha * g
    lam = 2 * (theta - target) / (start - target).pow(2).sum()
    approx = torch.zeros_like(images)
    for step, th in zip(plan, thetas, strict=True):
        xb = images[step.indices].clone().requires_grad_(True)
        th = th.clone().requires_grad_(True)
        g = torch.autograd.grad(loss_fn(net(th, xb), labels[step.indices]), th, create_graph=True)[0]
        approx[step.indices] += -alpha * torch.autograd.grad(g, xb, grad_outputs=lam)[0]
    rel = (approx - ref.grad_images).norm() / ref.grad_images.norm()
    assert rel > 1e-3  # a real difference, far above float64 rounding


def test_unroll_plan_is_reproducible_and_cycles_through_images():
    plan = plan_unroll(10, 4, 5, torch.Generator().manual_seed(0))
    again = plan_unroll(10, 4, 5, torch.Generator().manual_seed(0))
    assert all(torch.equal(a.indices, b.indices) for a, b in zip(plan, again, strict=True))
    assert [len(s.indices) for s in plan] == [4, 4, 2, 4, 4]
    assert sorted(torch.cat([s.indices for s in plan[:3]]).tolist()) == list(range(10))


def test_matching_loss_decreases_under_image_updates():
    net, images, labels, start, _ = tiny_problem(torch.float32, n=9)
    plan = [Step(torch.arange(9), None)] * 4
    lr = torch.tensor(0.1)
    # A reachable target: where the same steps on other images lead.
    theta = start
    for _ in plan:
        th = theta.clone().requires_grad_(True)
        theta = theta - lr * torch.autograd.grad(loss_fn(net(th, images), labels), th)[0]
    x = images + torch.randn(images.shape, generator=torch.Generator().manual_seed(5))
    losses = []
    for _ in range(10):
        out = match_recompute(net, x, labels, lr, start, theta.detach(), plan)
        losses.append(float(out.loss))
        x = x - LR_IMG * out.grad_images
    assert losses[-1] < 0.5 * losses[0]


@pytest.fixture(scope="module")
def experts_root(tmp_path_factory):
    return tmp_path_factory.mktemp("experts")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtt")
    splits = load_dataset(str(write_npz(root / "toy.npz", make_arrays(channels=3, size=8))))
    return DistillTask(train=splits.train, val=splits.val, num_classes=splits.num_classes, ipc=2, seed=0,
                       device=torch.device("cpu"), normalize=splits.normalize, model=SPEC)


def run(task, root, **overrides):
    method = get_method("mtt")
    params = method.make_params({**FAST, "experts_root": str(root), **overrides})
    return method.run(task, params)


def test_end_to_end_records_choice_and_learned_lr(task, experts_root):
    out = run(task, experts_root)
    assert out.images.shape == (6, 3, 8, 8) and out.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert out.lr is not None and out.lr > 0
    info = out.info
    assert info["chosen_iteration"] in (0, 2, 4) and 0.0 <= info["val_score"] <= 1.0
    assert info["learned_lr"] == out.lr and info["status"] == "ok"
    again = run(task, experts_root)  # the buffer is reused; the run is deterministic
    assert torch.equal(again.images, out.images) and again.lr == out.lr


@pytest.mark.parametrize("metric, chosen", [("balanced_accuracy", 4), ("accuracy", 0)])
def test_checkpoints_are_chosen_by_the_selection_metric(task, experts_root, monkeypatch, metric, chosen):
    import dataclasses

    import medbench.methods.trajectory.distill as loop

    scores = iter([(0.9, 0.5), (0.6, 0.55), (0.7, 0.8)])  # iterations 0, 2, 4: majority first, balanced last
    monkeypatch.setattr(loop, "val_scores", lambda *a, **k: dict(zip(("accuracy", "balanced_accuracy"),
                                                                      next(scores), strict=True)))
    out = run(dataclasses.replace(task, selection_metric=metric), experts_root)
    assert out.info["chosen_iteration"] == chosen and out.info["selection_metric"] == metric


def test_implementations_agree_end_to_end(task, experts_root):
    a = run(task, experts_root, implementation="tesla", eval_every=100)
    b = run(task, experts_root, implementation="unrolled", eval_every=100)
    assert torch.allclose(a.images, b.images, atol=1e-4)


@pytest.mark.parametrize(("budget", "chosen"), [(2**40, "unrolled"), (1, "tesla")])
def test_auto_unrolls_when_the_graph_fits_the_memory_budget(task, experts_root, budget, chosen):
    out = run(dataclasses.replace(task, memory_budget=budget), experts_root, eval_every=100)
    assert out.info["implementation"] == chosen
    counted = out.info["implementation_chosen_by"]
    assert counted["memory_budget"] == budget and counted["unrolled_bytes"] > 0
    same = run(task, experts_root, implementation=chosen, eval_every=100)
    assert torch.equal(out.images, same.images)  # auto is the chosen implementation, nothing else


def test_the_implementations_are_one_cell():
    from medbench.evaluation import Protocol
    from medbench.harness.grid import Cell

    def cell_id(**values):
        return Cell("mtt", "x", 28, 1, 0, dataclasses.asdict(MTTParams(**values)), Protocol()).cell_id

    assert cell_id() == cell_id(implementation="tesla") == cell_id(implementation="unrolled")
    assert cell_id() != cell_id(syn_steps=10)


def test_counted_graph_grows_with_the_unroll():
    from medbench.methods.trajectory.unroll import unrolled_bytes

    net, images, labels, start, _ = tiny_problem(torch.float32)
    lr = torch.tensor(0.1)
    sizes = [unrolled_bytes(net, images, labels, lr, start, plan_unroll(len(images), 4, j, torch.Generator()))
             for j in (1, 2, 8)]
    assert sizes[0] > 4 * images.numel() and sizes[1] == 2 * sizes[0] and sizes[2] == 8 * sizes[0]


def test_resume_after_interruption_matches_uninterrupted(task, experts_root, tmp_path):
    full = run(task, experts_root, iterations=6, eval_every=2, **{"lr_img": 100.0})

    class Stop(Exception):
        pass

    def stop_at_5(done, total):
        if done == 5:
            raise Stop

    ckpt = tmp_path / "ckpt"
    interrupted = dataclasses.replace(task, checkpoint_dir=ckpt, progress=stop_at_5)
    with pytest.raises(Stop):
        run(interrupted, experts_root, iterations=6, eval_every=2, lr_img=100.0)
    assert (ckpt / "mtt_state.safetensors").is_file()
    resumed_task = dataclasses.replace(interrupted, progress=None)
    resumed = run(resumed_task, experts_root, iterations=6, eval_every=2, lr_img=100.0)
    assert torch.equal(resumed.images, full.images) and resumed.lr == full.lr
    assert resumed.info["chosen_iteration"] == full.info["chosen_iteration"]


def test_huge_image_lr_diverges_with_last_good_set(task, experts_root):
    with pytest.raises(Diverged, match=r"diverged at iteration \d+") as info:
        run(task, experts_root, lr_img=1e30, lr_lr=1e10, iterations=20)
    assert isinstance(info.value, CellFailed)  # the harness stores a failed cell and goes on
    last = info.value.condensed
    assert last is not None and torch.isfinite(last.images).all()


def test_zca_run_ships_transform_for_evaluation(task, experts_root):
    out = run(task, experts_root, zca=True, iterations=2)
    assert set(out.extras) == {"zca_mean", "zca_matrix"} and out.info["zca"] is True
    assert out.extras["zca_matrix"].shape == (3 * 8 * 8, 3 * 8 * 8)


@pytest.mark.parametrize("values", [
    {"syn_steps": 0}, {"lr_img": -1}, {"max_start_epoch": 50}, {"implementation": "fast"},
    {"init": "zeros"}, {"batch_syn": 0}, {"momentum": 1.0}, {"eval_every": 0},
])
def test_bad_params(values):
    with pytest.raises(MedbenchError):
        get_method("mtt").make_params(values)


def test_buffer_for_another_model_is_refused(task, experts_root, tmp_path):
    from medbench.methods.trajectory import build_buffer

    other = build_buffer(task, MTTParams(**FAST).expert_config(), tmp_path,
                         model=ModelSpec("convnet", {"width": 5}), log=None)
    with pytest.raises(MedbenchError, match="parameters"):
        run(task, experts_root, buffer_dir=str(other.path))


def test_ipc_larger_than_class_is_refused(task, experts_root):
    big = dataclasses.replace(task, ipc=1000)
    with pytest.raises(MedbenchError, match="IPC"):
        run(big, experts_root)


def test_default_params_use_the_default_buffer():
    """`medbench experts` with its defaults builds exactly the buffer a default MTT run looks for."""
    from medbench.methods.trajectory import ExpertConfig

    assert MTTParams().expert_config() == ExpertConfig()


def test_learning_log_alpha_keeps_the_lr_positive_where_alpha_itself_turns_negative(task, experts_root):
    # A learning rate for α large enough to push it below zero in one step.
    with pytest.raises(Diverged, match="learned lr -"):
        run(task, experts_root, lr_lr=1.0, lr_space="linear")
    out = run(task, experts_root, lr_lr=1.0, lr_space="log")
    assert out.lr > 0 and out.info["status"] == "ok"
    assert [c[0] for c in out.info["checkpoints"]] == [0, 2, 4]
