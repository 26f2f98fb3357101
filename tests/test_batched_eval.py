"""Batched evaluation (vmap, grouped) equals K one-at-a-time runs.

Tolerance: the batched paths run other kernels (a vmapped / grouped convolution instead of K
plain ones, one reduction over K·B losses), so sums are rounded in another order; float32
rounding of ~1e-7 per step then drifts slowly through SGD. Measured after 60 steps (20 epochs): ≤ 3e-7
relative. The tests allow 1e-4 relative to each model's largest parameter, far below any
difference a wrong seed, data order, augmentation draw or optimizer update would make (those
give O(1) relative differences, which the last test checks is detected).
"""

from __future__ import annotations

import functools

import pytest
import torch

from medbench.core.errors import MedbenchError
from medbench.data import load_dataset
from medbench.distill.contract import CondensedSet
from medbench.evaluation import Protocol, evaluate, model_seeds
from medbench.evaluation.protocol import train_models
from medbench.nn.augment import AugmentConfig, SiameseAugment
from medbench.nn.batched import (
    SMALL_STEP_IMAGES,
    EvalOptions,
    MeanPool2x2,
    augment_stacked,
    build_ensemble,
    choose_batching,
    per_model_loss,
)
from medbench.nn.models import ModelSpec
from medbench.nn.training import TrainingDiverged

RTOL = 1e-4
CPU = torch.device("cpu")


def _problem(soft: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(12, 3, 16, 16, generator=g)
    labels = torch.arange(4).repeat_interleave(3)
    if soft:
        labels = torch.softmax(torch.randn(12, 4, generator=g) * 2, dim=1)
    return images, labels


@functools.cache  # each sequential reference is trained once per session
def _flat_params(batching: str, *, augment: bool = False, norm: str = "instance", soft: bool = False,
                 epochs: int = 6, seeds: tuple[int, ...] | None = None) -> list[torch.Tensor]:
    images, labels = _problem(soft)
    trained = train_models(
        images, labels, list(seeds or model_seeds(0, 3)),
        spec=ModelSpec("convnet", {"width": 8, "depth": 2, "norm": norm}), channels=3,
        num_classes=4, size=16, epochs=epochs, lr=0.05, batch_size=5,
        augment=SiameseAugment(AugmentConfig(), 3) if augment else None, batching=batching,
    )
    assert trained.mode == batching
    if trained.ensemble is not None:
        trained.ensemble.unstack(trained.models)
    return [torch.cat([t.detach().flatten().float() for t in [*m.parameters(), *m.buffers()]])
            for m in trained.models]


def _assert_close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x - y).abs().max() <= RTOL * x.abs().max(), float((x - y).abs().max() / x.abs().max())


@pytest.mark.parametrize("batching", ["vmap", "grouped"])
@pytest.mark.parametrize("augment", [False, True], ids=["plain", "dsa"])
def test_batched_training_equals_sequential(batching: str, augment: bool) -> None:
    """Same init, data order, DSA draws and SGD (momentum, weight decay, lr step at half): the
    trained parameters agree to float rounding after 6 epochs × 3 steps (a ragged last batch)."""
    _assert_close(_flat_params("sequential", augment=augment), _flat_params(batching, augment=augment))


@pytest.mark.parametrize("batching", ["vmap", "grouped"])
def test_batch_norm_and_soft_labels(batching: str) -> None:
    """Batch-norm running statistics (buffers) and soft (probability) labels go through too."""
    _assert_close(_flat_params("sequential", norm="batch", soft=True, epochs=4),
                  _flat_params(batching, norm="batch", soft=True, epochs=4))


def test_the_comparison_would_see_a_wrong_seed() -> None:
    """The tolerance is meaningful: another model seed is far outside it."""
    a = _flat_params("grouped", epochs=2, seeds=(1, 2))
    b = _flat_params("sequential", epochs=2, seeds=(1, 3))
    assert (a[1] - b[1]).abs().max() > 100 * RTOL * a[1].abs().max()


def test_one_sgd_over_stacked_tensors_is_k_separate_sgds() -> None:
    """Momentum, weight decay and the lr change are element-wise: bitwise the same updates."""
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(5, 3, generator=g) for _ in range(3)]
    grads = [[torch.randn(5, 3, generator=g) for _ in range(3)] for _ in range(4)]
    separate = [p.clone().requires_grad_(True) for p in parts]
    stacked = torch.stack(parts).requires_grad_(True)
    opts = [torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=5e-4) for p in separate]
    opt = torch.optim.SGD([stacked], lr=0.1, momentum=0.9, weight_decay=5e-4)
    for step, gs in enumerate(grads):
        for p, o, gk in zip(separate, opts, gs, strict=True):
            p.grad = gk.clone()
            o.step()
        stacked.grad = torch.stack(gs)
        opt.step()
        if step == 1:
            for o in [*opts, opt]:
                o.param_groups[0]["lr"] = 0.01
    assert torch.equal(torch.stack([p.detach() for p in separate]), stacked.detach())


def test_per_model_loss_is_each_models_own_mean() -> None:
    logits, labels = torch.randn(3, 5, 4), torch.randint(4, (3, 5))
    expected = torch.stack([torch.nn.functional.cross_entropy(logits[k], labels[k]) for k in range(3)])
    assert torch.allclose(per_model_loss(logits, labels), expected, atol=1e-6)


def test_stacked_augmentation_makes_each_models_own_draws() -> None:
    """Model k's images get exactly the draws ``augment(x_k, generator_k)`` would make, also when
    the models' batches activate different ops (then applied model by model)."""
    aug = SiameseAugment(AugmentConfig(), 3)
    x = torch.randn(3, 4, 3, 16, 16)
    for batch in (4, 1):  # 4 images: the same ops active everywhere; 1: usually not
        xs = x[:, :batch]
        seeds = [11, 12, 13]
        stacked = augment_stacked(aug, xs, [torch.Generator().manual_seed(s) for s in seeds])
        one_by_one = torch.stack([aug(xs[k], torch.Generator().manual_seed(s)) for k, s in enumerate(seeds)])
        assert torch.allclose(stacked, one_by_one, atol=1e-5)
    # A plain callable is applied model by model with its own generator.
    noisy = augment_stacked(lambda t, g: t + torch.randn(t.shape, generator=g), x,
                            [torch.Generator().manual_seed(s) for s in (1, 1, 2)])
    assert torch.allclose(noisy[0] - x[0], noisy[1] - x[1], atol=1e-5)
    assert not torch.allclose(noisy[0] - x[0], noisy[2] - x[2], atol=1e-1)


@pytest.mark.parametrize("batching", ["vmap", "grouped"])
def test_evaluate_scores_equal_sequential(toy_npz, batching: str) -> None:
    splits = load_dataset(str(toy_npz))
    condensed = CondensedSet(splits.normalize(splits.train.images[:9]), splits.train.labels[:9])
    protocol = Protocol(width=4, epochs=6, eval_models=3, batch_size=4, augment="dsa")
    progress: list[tuple[int, int]] = []
    seq = evaluate(condensed, splits, protocol, seed=5, batching="sequential")
    bat = evaluate(condensed, splits, protocol, seed=5, batching=batching,
                   on_epoch=lambda d, t: progress.append((d, t)))
    assert [s.seed for s in seq] == [s.seed for s in bat]
    for a, b in zip(seq, bat, strict=True):
        for split in ("val", "test"):
            assert getattr(a, split).keys() == getattr(b, split).keys()
            for metric, value in getattr(a, split).items():
                assert getattr(b, split)[metric] == pytest.approx(value, abs=1e-4, nan_ok=True), (split, metric)
    assert progress[-1] == (18, 18) and all(s.train_seconds > 0 for s in bat)


def test_batched_reads_val_then_test_once_after_training(toy_npz, monkeypatch) -> None:
    import medbench.evaluation.protocol as protocol_module

    splits = load_dataset(str(toy_npz))
    log: list[str] = []
    real = protocol_module.train_stacked

    def logged(*args, **kwargs):
        log.append("train")
        return real(*args, **kwargs)

    class Recorder:
        def __init__(self, split, name):
            self.split, self.name = split, name

        def __getattr__(self, item):
            if item == "images":
                log.append(self.name)
            return getattr(self.split, item)

    monkeypatch.setattr(protocol_module, "train_stacked", logged)
    object.__setattr__(splits, "test", Recorder(splits.test, "test"))
    object.__setattr__(splits, "val", Recorder(splits.val, "val"))
    condensed = CondensedSet(splits.normalize(splits.train.images[:6]), splits.train.labels[:6])
    evaluate(condensed, splits, Protocol(width=4, epochs=2, eval_models=3), seed=1, batching="grouped")
    assert log == ["train", "val", "test"]


def test_auto_rule() -> None:
    convnet, resnet, cuda = ModelSpec("convnet"), ModelSpec("resnet18"), torch.device("cuda")
    assert choose_batching("auto", device=CPU, model=convnet, models=5, images_per_step=8) == "sequential"
    assert choose_batching("auto", device=cuda, model=convnet, models=5, images_per_step=80) == "grouped"
    assert choose_batching("auto", device=cuda, model=convnet, models=5,
                           images_per_step=SMALL_STEP_IMAGES) == "grouped"
    assert choose_batching("auto", device=cuda, model=convnet, models=5, images_per_step=256) == "sequential"
    assert choose_batching("auto", device=cuda, model=convnet, models=1, images_per_step=8) == "sequential"
    assert choose_batching("auto", device=cuda, model=resnet, models=5, images_per_step=8) == "sequential"
    assert choose_batching("vmap", device=CPU, model=resnet, models=5, images_per_step=8) == "vmap"
    with pytest.raises(MedbenchError, match="grouped"):
        choose_batching("grouped", device=CPU, model=resnet, models=5, images_per_step=8)
    with pytest.raises(MedbenchError, match="unknown eval batching"):
        choose_batching("parallel", device=CPU, model=convnet, models=5, images_per_step=8)


@pytest.mark.parametrize("side", [8, 7])  # 7: AvgPool2d floors, dropping the last row and column
def test_mean_pool_is_avg_pool(side: int) -> None:
    """The grouped trainer's pooling (faster backward on CUDA) gives AvgPool2d's outputs and gradients."""
    x = torch.randn(3, 5, side, side, generator=torch.Generator().manual_seed(0), requires_grad=True)
    w = torch.randn(3, 5, side // 2, side // 2)
    ref, = torch.autograd.grad((torch.nn.AvgPool2d(2)(x) * w).sum(), x)
    out = MeanPool2x2()(x)
    got, = torch.autograd.grad((out * w).sum(), x)
    assert torch.allclose(out, torch.nn.AvgPool2d(2)(x), atol=1e-6) and torch.allclose(got, ref, atol=1e-6)
    assert MeanPool2x2.replaces(torch.nn.AvgPool2d(2))
    assert not MeanPool2x2.replaces(torch.nn.AvgPool2d(3)) and not MeanPool2x2.replaces(torch.nn.AvgPool2d(2, 1))
    assert not MeanPool2x2.replaces(torch.nn.AvgPool2d(2, ceil_mode=True))


def test_grouped_refuses_other_models() -> None:
    with pytest.raises(MedbenchError):
        build_ensemble("grouped", [torch.nn.Linear(2, 2)])


@pytest.mark.parametrize("batching", ["sequential", "grouped", "vmap"])
def test_speed_options_run_on_cpu(batching: str) -> None:
    """bf16 autocast, channels-last and torch.compile (eager backend: no compiler needed) run on
    every path; channels-last alone changes nothing but memory layout. Their speed is a GPU
    question (reports/bench)."""
    images, labels = _problem()
    spec = ModelSpec("convnet", {"width": 8, "depth": 2})
    common = dict(spec=spec, channels=3, num_classes=4, size=16, epochs=2, lr=0.05, batch_size=6, batching=batching)
    base = train_models(images, labels, [1, 2], **common)
    fast = train_models(images, labels, [1, 2], options=EvalOptions(channels_last=True, cudnn_benchmark=True),
                        **common)
    assert torch.allclose(base.predict_proba(images), fast.predict_proba(images), atol=1e-4)
    amp = train_models(images, labels, [1, 2], options=EvalOptions(amp=True, compile="eager"), **common)
    probs = amp.predict_proba(images)
    assert probs.shape == (2, 12, 4) and torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(-1), torch.ones(2, 12), atol=1e-3)
    assert not torch.backends.cudnn.benchmark  # the process-wide flag is restored


@pytest.mark.parametrize("batching", ["sequential", "grouped", "vmap"])
def test_bf16_training_learns_what_float32_learns(batching: str) -> None:
    """bf16 autocast rounds the forward passes and nothing else, so the networks end close to their
    float32 twins. (The sequential path once ran the whole loop in one autocast region, which reuses
    its bf16 copy of the initial weights at every step: on an H200 its networks scored 12 % where
    float32 scored 74 %, and this test failed on it.)"""
    images, labels = _problem()
    common = dict(spec=ModelSpec("convnet", {"width": 8, "depth": 2}), channels=3, num_classes=4, size=16,
                  epochs=12, lr=0.05, batch_size=12, batching=batching)
    f32 = train_models(images, labels, [1, 2], **common).predict_proba(images)
    bf16 = train_models(images, labels, [1, 2], options=EvalOptions(amp=True), **common).predict_proba(images)
    init = train_models(images, labels, [1, 2], **{**common, "epochs": 0}).predict_proba(images)
    assert (f32 - init).abs().max() > 0.3  # training moved the outputs far ...
    assert (bf16 - f32).abs().max() < 0.05  # ... and bf16 followed


@pytest.mark.parametrize("batching", ["sequential", "vmap", "grouped"])
def test_divergence_stops_training_and_names_the_network(batching: str) -> None:
    """At an absurd lr the loss goes non-finite; every trainer stops at a check (not at the last
    epoch) and says which network, so a cell can fail with that reason."""
    images, labels = _problem(False)
    with pytest.raises(TrainingDiverged) as info:
        train_models(images, labels, list(model_seeds(0, 2)),
                     spec=ModelSpec("convnet", {"width": 8, "depth": 2}), channels=3, num_classes=4, size=16,
                     epochs=40, lr=1e30, batch_size=12, batching=batching)
    assert info.value.model == 0 and info.value.epoch < 40
    assert f"network 0 diverged: non-finite training loss by epoch {info.value.epoch}" == str(info.value)
