"""Siamese augmentation: shared draws, reproducibility, differentiability, defaults."""

from __future__ import annotations

import pytest
import torch

from medbench.core.errors import MedbenchError
from medbench.evaluation.protocol import Protocol
from medbench.nn.augment import AugmentConfig, SiameseAugment, default_ops


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("mode", ["single", "all"])
def test_one_draw_transforms_batches_of_any_size_alike(mode: str) -> None:
    aug = SiameseAugment(AugmentConfig(mode=mode), channels=3)
    real = torch.randn(9, 3, 12, 12)
    synthetic = real[:4].clone()
    for seed in range(10):
        params = aug.sample(real, _gen(seed))
        torch.testing.assert_close(aug.apply(synthetic, params), aug.apply(real, params)[:4])
        # one shared set: identical images come out identical
        same = aug.apply(real[:1].expand(5, -1, -1, -1), params)
        assert torch.equal(same, same[:1].expand_as(same))


def test_per_class_sets_follow_their_class() -> None:
    aug = SiameseAugment(AugmentConfig(mode="all"), channels=3)
    x = torch.randn(2, 3, 12, 12)
    params = aug.sample(x, _gen(), n=2)
    real = x.repeat_interleave(3, dim=0)  # class 0 ×3, class 1 ×3
    out = aug.apply(real, params.repeat_interleave(3))
    torch.testing.assert_close(out[:3], aug.apply(x[:1], params[0]).expand(3, -1, -1, -1))
    torch.testing.assert_close(out[3:], aug.apply(x[1:], params[1]).expand(3, -1, -1, -1))
    assert not torch.allclose(out[0], out[3])


def test_draws_come_from_the_generator_only() -> None:
    aug = SiameseAugment(AugmentConfig(mode="all"), channels=3)
    x = torch.randn(4, 3, 12, 12)
    torch.manual_seed(1)
    a = aug(x, _gen(5))
    torch.manual_seed(2)
    b = aug(x, _gen(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, _gen(6)))


def test_call_draws_independently_per_image() -> None:
    aug = SiameseAugment(AugmentConfig(mode="all"), channels=1)
    x = torch.randn(1, 1, 12, 12).expand(6, -1, -1, -1)
    out = aug(x, _gen())
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("ops", [("color",), ("crop",), ("cutout",), ("flip",), ("scale",), ("rotate",), None])
def test_differentiable_in_float64(ops) -> None:
    aug = SiameseAugment(AugmentConfig(ops=ops, mode="all", flip_prob=1.0), channels=3)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    params = aug.sample(x, _gen(3))
    assert torch.autograd.gradcheck(lambda t: aug.apply(t, params), (x,))


def test_flip_and_cutout_are_exact() -> None:
    x = torch.randn(2, 3, 8, 8)
    flip = SiameseAugment(AugmentConfig(ops=("flip",), flip_prob=1.0), channels=3)
    assert torch.equal(flip(x, _gen()), x.flip(-1))
    cut = SiameseAugment(AugmentConfig(ops=("cutout",), cutout=0.5), channels=3)
    out = cut.apply(x, cut.sample(x, _gen()))
    zeroed = (out == 0).all(dim=1)
    assert 0 < int(zeroed[0].sum()) <= 16 and torch.equal(zeroed[0], zeroed[1])
    torch.testing.assert_close(out[~zeroed.unsqueeze(1).expand_as(x)], x[~zeroed.unsqueeze(1).expand_as(x)])


def test_integer_crop_shift_is_exact() -> None:
    aug = SiameseAugment(AugmentConfig(ops=("crop",), crop_pad=0.25), channels=1)
    x = torch.randn(1, 1, 8, 8)
    moved = 0
    for seed in range(5):
        params = aug.sample(x, _gen(seed))
        tx, ty = (round(float(v)) for v in params.matrix[0, :, 2])
        moved += (tx, ty) != (0, 0)
        shifted = torch.zeros_like(x)
        ys, xs = slice(max(ty, 0), 8 + min(ty, 0)), slice(max(tx, 0), 8 + min(tx, 0))
        shifted[..., ys, xs] = x[..., max(-ty, 0) : 8 - max(ty, 0), max(-tx, 0) : 8 - max(tx, 0)]
        torch.testing.assert_close(aug.apply(x, params), shifted, atol=1e-4, rtol=0)
    assert moved > 0


def test_grayscale_defaults_keep_laterality() -> None:
    assert "flip" not in default_ops(1)
    assert set(default_ops(3)) == {"color", "crop", "cutout", "flip", "scale", "rotate"}
    aug = SiameseAugment(AugmentConfig(ops=("color",)), channels=1)
    assert "saturation" not in aug.sample(torch.zeros(1, 1, 8, 8), _gen()).active


def test_mismatched_parameter_count_is_refused() -> None:
    aug = SiameseAugment(AugmentConfig(), channels=3)
    params = aug.sample(torch.zeros(3, 3, 8, 8), _gen(), n=3)
    with pytest.raises(ValueError):
        aug.apply(torch.zeros(2, 3, 8, 8), params)


@pytest.mark.parametrize("kwargs", [{"ops": ("warp",)}, {"ops": ()}, {"mode": "some"}, {"scale": 0.5},
                                    {"rotate": -1.0}, {"cutout": 1.5}])
def test_bad_config_is_a_user_error(kwargs) -> None:
    with pytest.raises(MedbenchError):
        AugmentConfig(**kwargs)


def test_protocol_accepts_dsa_eval_augmentation() -> None:
    assert Protocol(augment="dsa").augment == "dsa"
    with pytest.raises(MedbenchError):
        Protocol(augment="mixup")


def test_protocol_trains_with_dsa_augmentation(monkeypatch) -> None:
    from _synth import make_splits

    from medbench.distill.contract import CondensedSet
    from medbench.evaluation.protocol import evaluate

    calls = []
    original = SiameseAugment.__call__
    monkeypatch.setattr(SiameseAugment, "__call__", lambda self, x, g: calls.append(1) or original(self, x, g))
    splits = make_splits(per_class=8)
    condensed = CondensedSet(splits.normalize(splits.train.images[::8]), splits.train.labels[::8])
    protocol = Protocol(width=8, depth=2, epochs=2, eval_models=1, augment="dsa")
    first, second = (evaluate(condensed, splits, protocol, seed=0)[0] for _ in range(2))
    assert len(calls) == 4  # 2 epochs × 1 batch, twice
    assert (first.val, first.test) == (second.val, second.test)
    evaluate(condensed, splits, Protocol(width=8, depth=2, epochs=2, eval_models=1, augment="none"), seed=0)
    assert len(calls) == 4  # "none" trains without augmentation
    evaluate(condensed, splits, Protocol(width=8, depth=2, epochs=2, eval_models=1), seed=0)
    assert len(calls) == 6  # the default protocol (dsa) augments


def test_params_move_once_to_the_images_dtype_and_device():
    aug = SiameseAugment(AugmentConfig(), 3)
    x = torch.zeros(4, 3, 8, 8, dtype=torch.float64)
    params = aug.sample(x, _gen(), n=4)
    moved = params.to(x.device, x.dtype)
    assert moved.matrix.dtype == torch.float64 and moved.brightness.dtype == torch.float64
    assert moved.flip.dtype == torch.bool and not moved.cutout.is_floating_point()
    assert moved.active == params.active
    # Moving first changes nothing about the result.
    assert torch.equal(aug.apply(x + 1, moved), aug.apply(x + 1, params))
