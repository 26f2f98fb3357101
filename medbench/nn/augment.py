"""Differentiable siamese augmentation (DSA, Zhao & Bilen, ICML 2021) on kornia warps.

Every draw is a complete parameter set in which the ops that were not chosen hold their
identity value (no shift, factor 1, no flip, empty cutout, identity matrix). Applying a draw is
then one fixed pipeline: colour → horizontal flip → one affine warp (crop shift ∘ scale ∘
rotation, through ``kornia.geometry.transform.warp_affine``) → cutout. Because nothing depends
on which op was drawn, sets can differ from image to image inside one batch at no extra cost.

Parameter sharing (the "siamese" part): a :class:`Params` holds ``n`` parameter sets.
``n == 1`` applies the *same* transform to every image of any batch, which is how a real batch
and the synthetic images of the same class are augmented alike although their sizes differ;
``n == len(x)`` gives image ``i`` set ``i``; :meth:`Params.repeat_interleave` turns one set per
class into one set per image for batches stacked class by class.

All randomness comes from the ``torch.Generator`` passed in (kornia's own random augmentation
modules draw from the global RNG, so parameters are drawn here and only kornia's deterministic
geometry is used), and the draw happens on the CPU, so there is no device sync.

The colour ops are the DSA definitions written as arithmetic: kornia's ``adjust_*`` functions
assume images in [0, 1] (they clamp, and saturation goes through HSV), while distillation works
on normalised images.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from kornia.geometry.transform import get_affine_matrix2d, hflip, warp_affine
from torch import Tensor

from medbench.core.devices import to_device
from medbench.core.hparams import check

OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
MODES = ("single", "all")


def default_ops(channels: int) -> tuple[str, ...]:
    """DSA's full set for RGB. Grayscale medical images (X-ray, ultrasound) get no horizontal
    flip, because left and right are anatomically meaningful (laterality, the heart's side);
    saturation is skipped for one channel anyway, where it is the identity."""
    if channels == 1:
        return ("color", "crop", "cutout", "scale", "rotate")
    return OPS


@dataclass(frozen=True)
class AugmentConfig:
    """Which ops and how strong; defaults are DSA's reference strengths (``ParamDiffAug``)."""

    ops: tuple[str, ...] | None = None  # None -> default_ops(channels)
    scale: float = 1.2  # scale factors uniform in [1/scale, scale], per axis
    rotate: float = 15.0  # degrees, uniform in [-rotate, rotate]
    crop_pad: float = 0.125  # shift up to this fraction of the side, zero padded
    cutout: float = 0.5  # side of the zeroed square as a fraction of the image side
    brightness: float = 1.0  # add uniform [-brightness/2, brightness/2]
    saturation: float = 2.0  # scale distance to the channel mean by uniform [0, saturation]
    contrast: float = 0.5  # scale distance to the image mean by uniform [contrast, contrast + 1]
    flip_prob: float = 0.5
    mode: str = "single"  # single: one op drawn per set (DSA's default 'S'); all: every op

    def __post_init__(self) -> None:
        if self.ops is not None:
            unknown = sorted(set(self.ops) - set(OPS))
            check(not unknown, f"unknown augmentation op {', '.join(unknown)}; available: {', '.join(OPS)}")
            check(len(self.ops) > 0, "augmentation needs at least one op (or ops=None for the defaults)")
        check(self.mode in MODES, f"unknown augmentation mode {self.mode!r}; available: {', '.join(MODES)}")
        check(self.scale >= 1.0, f"augmentation scale must be ≥ 1, got {self.scale}")
        check(self.rotate >= 0 and self.crop_pad >= 0 and self.brightness >= 0 and self.saturation >= 0
              and self.contrast >= 0, "augmentation strengths must be non-negative")
        check(0.0 <= self.cutout <= 1.0 and 0.0 <= self.flip_prob <= 1.0,
              "augmentation cutout and flip_prob must lie in [0, 1]")


@dataclass(frozen=True)
class Params:
    """``n`` parameter sets with leading dimension ``n`` (see the module doc): drawn as CPU
    tensors, moved to the images' device by :meth:`to` (``apply`` does it once per call)."""

    brightness: Tensor  # (n,) additive shift
    saturation: Tensor  # (n,) factor
    contrast: Tensor  # (n,) factor
    flip: Tensor  # (n,) bool
    matrix: Tensor  # (n, 2, 3) source -> destination, pixel coordinates
    cutout: Tensor  # (n, 4) int: top, left, bottom, right (exclusive); empty when top == bottom
    # What the sets actually change, decided once on the CPU so ``apply`` skips identity ops
    # without looking at tensor values (which would sync a GPU).
    active: frozenset[str]

    @property
    def n(self) -> int:
        return int(self.flip.shape[0])

    def __getitem__(self, index: int | slice) -> Params:
        """The sets at ``index`` (an int keeps its dimension: one set to share over a batch)."""
        index = slice(index, index + 1) if isinstance(index, int) else index
        values = {f.name: getattr(self, f.name)[index] for f in fields(self) if f.name != "active"}
        return Params(**values, active=self.active)

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Params:
        """The sets on ``device`` with float fields in ``dtype``, copied without a host sync."""
        values = {}
        for f in fields(self):
            if f.name == "active":
                continue
            t = getattr(self, f.name)
            values[f.name] = to_device(t.to(dtype) if t.is_floating_point() else t, device)
        return Params(**values, active=self.active)

    def repeat_interleave(self, repeats: int | Tensor) -> Params:
        """Set ``i`` repeated ``repeats`` (or ``repeats[i]``) times: per-class sets -> per image."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "active"}
        out = {k: v.repeat_interleave(repeats, dim=0) for k, v in values.items()}
        return Params(**out, active=self.active)


class SiameseAugment:
    """Draw augmentation parameters from a generator and apply them differentiably."""

    def __init__(self, config: AugmentConfig, channels: int) -> None:
        self.config = config
        self.channels = channels
        self.ops = config.ops if config.ops is not None else default_ops(channels)

    def sample(self, x: Tensor, generator: torch.Generator, n: int = 1) -> Params:
        """Draw ``n`` parameter sets for images shaped like ``x`` (``n = 1``: one shared set)."""
        cfg = self.config
        h, w = int(x.shape[-2]), int(x.shape[-1])
        g = generator

        def uniform(low: float, high: float) -> Tensor:
            return torch.rand(n, generator=g, dtype=torch.float64) * (high - low) + low

        if cfg.mode == "single":
            pick = torch.randint(len(self.ops), (n,), generator=g)
            chosen = {op: pick == i for i, op in enumerate(self.ops)}
        else:
            chosen = {op: torch.ones(n, dtype=torch.bool) for op in self.ops}
        off = torch.zeros(n, dtype=torch.bool)
        on = {op: chosen.get(op, off) for op in OPS}

        # Every op draws its numbers whether chosen or not, so the stream of draws (and with it
        # every later draw) does not depend on which op was picked.
        brightness = torch.where(on["color"], (uniform(0, 1) - 0.5) * cfg.brightness, 0.0)
        saturation = torch.where(on["color"], uniform(0, 1) * cfg.saturation, 1.0)
        contrast = torch.where(on["color"], uniform(0, 1) + cfg.contrast, 1.0)
        flip = on["flip"] & (torch.rand(n, generator=g) < cfg.flip_prob)

        shift_y = round(h * cfg.crop_pad)
        shift_x = round(w * cfg.crop_pad)
        ty = torch.randint(-shift_y, shift_y + 1, (n,), generator=g).double()
        tx = torch.randint(-shift_x, shift_x + 1, (n,), generator=g).double()
        translation = torch.where(on["crop"][:, None], torch.stack([tx, ty], 1), 0.0)
        sx, sy = uniform(1 / cfg.scale, cfg.scale), uniform(1 / cfg.scale, cfg.scale)
        scale = torch.where(on["scale"][:, None], torch.stack([sx, sy], 1), 1.0)
        angle = torch.where(on["rotate"], uniform(-cfg.rotate, cfg.rotate), 0.0)
        center = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64).expand(n, 2)
        matrix = get_affine_matrix2d(translation, center, scale, angle)[:, :2]

        size_y, size_x = round(h * cfg.cutout), round(w * cfg.cutout)
        cy = torch.randint(0, h, (n,), generator=g)
        cx = torch.randint(0, w, (n,), generator=g)
        top, left = (cy - size_y // 2).clamp(0, h), (cx - size_x // 2).clamp(0, w)
        bottom, right = (cy - size_y // 2 + size_y).clamp(0, h), (cx - size_x // 2 + size_x).clamp(0, w)
        cut = on["cutout"] & (size_y > 0) & (size_x > 0)
        box = torch.where(cut[:, None], torch.stack([top, left, bottom, right], 1), 0)

        active = {op for op in OPS if bool(on[op].any())}
        if "color" in active:  # saturation is the identity on one channel: skip its work
            active |= {"brightness", "contrast"} | ({"saturation"} if self.channels > 1 else set())
        return Params(brightness.float(), saturation.float(), contrast.float(), flip, matrix.float(),
                      box, frozenset(active))

    def apply(self, x: Tensor, params: Params) -> Tensor:
        """Transform ``x`` with ``params``: one set for all images, or one per image."""
        if params.n not in (1, x.shape[0]):
            raise ValueError(f"{params.n} augmentation parameter sets for a batch of {x.shape[0]}")
        active = params.active
        if not active:
            return x

        params = params.to(x.device, x.dtype)

        def per_image(t: Tensor) -> Tensor:
            return t.view(-1, 1, 1, 1)

        if "brightness" in active:
            x = x + per_image(params.brightness)
        if "saturation" in active:
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * per_image(params.saturation) + mean
        if "contrast" in active:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * per_image(params.contrast) + mean
        if "flip" in active:
            x = torch.where(params.flip.view(-1, 1, 1, 1), hflip(x), x)
        if active & {"crop", "scale", "rotate"}:
            matrix = params.matrix.expand(x.shape[0], 2, 3)
            x = warp_affine(x, matrix, dsize=(x.shape[-2], x.shape[-1]), align_corners=True)
        if "cutout" in active:
            x = x * self._cutout_mask(params.cutout, x)
        return x

    @staticmethod
    def _cutout_mask(box: Tensor, x: Tensor) -> Tensor:
        rows = torch.arange(x.shape[-2], device=x.device).view(1, -1, 1)
        cols = torch.arange(x.shape[-1], device=x.device).view(1, 1, -1)
        top, left, bottom, right = (box[:, i].view(-1, 1, 1) for i in range(4))
        inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
        return (~inside).to(x.dtype).unsqueeze(1)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """An independent draw for every image (evaluation-time and expert training)."""
        return self.apply(x, self.sample(x, generator, n=x.shape[0]))


def dsa(channels: int, enabled: bool = True) -> SiameseAugment | None:
    """DSA with its default configuration for images of ``channels`` (None where ``enabled`` is off):
    the one factory every distillation loop, the expert buffer and the evaluation protocol use."""
    return SiameseAugment(AugmentConfig(), channels) if enabled else None
