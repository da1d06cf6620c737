"""Pretraining augmentations (arXiv 2604.05960, Sec. 2.1) in torch, driven by an explicit ``torch.Generator``.

Every random choice comes from the generator that is passed in, so an augmented sample is a
pure function of (image, seed): data order and augmentations replay exactly on ``--resume``
and do not depend on DataLoader workers or on the number of processes.

Pipeline on a (C, H, W) tensor with values in [0, 1]:

1. random resized crop: area fraction ``s ~ U(scale)``, aspect ``r ~ logU(ratio)`` of the
   source, resized (antialiased bilinear) to ``size x size``. The paper resizes the whole
   (bottom-cropped) image to 224 px first; here the crop is taken from the full-resolution
   image, so a crop keeps the detail a 224-px copy of a 1280-px micrograph would lose (at the
   default scale a crop covers 0.2-1 of the image: the same field, at up to 5.7x the pixels);
2. full-range rotation by ``phi ~ U(0, 2 pi)`` about the centre (bilinear, reflected borders,
   so no black corners enter the training data);
3. horizontal and vertical flips, each with probability 1/2;
4. mild jitter: ``x <- clip(mean + c (b x - mean), 0, 1)`` with ``b ~ U(1 +- brightness)``,
   ``c ~ U(1 +- contrast)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import AugmentConfig

__all__ = ["augment", "center_resize", "random_resized_crop", "resize", "rotate"]


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def resize(img: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of (C, H, W) to ``size`` (side or (h, w))."""
    hw = (size, size) if isinstance(size, int) else size
    if tuple(img.shape[-2:]) == tuple(hw):
        return img
    return F.interpolate(img[None], size=hw, mode="bilinear", antialias=True, align_corners=False)[
        0
    ]


def center_resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """Largest centred square crop, resized to ``size``: the deterministic validation view."""
    h, w = img.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return resize(img[..., top : top + s, left : left + s], size)


def random_resized_crop(
    img: torch.Tensor,
    size: int,
    g: torch.Generator,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Crop a random box of area fraction ``U(scale)`` and aspect ``logU(ratio)``, resize.

    After 10 draws that do not fit (an image far more elongated than ``ratio``), the largest
    square at a random position along the long axis, drawn from ``g`` too."""
    h, w = img.shape[-2:]
    area = h * w
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * _uniform(g, *scale)
        aspect = math.exp(_uniform(g, log_lo, log_hi))
        cw = round(math.sqrt(target * aspect))
        ch = round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (), generator=g))
            left = int(torch.randint(0, w - cw + 1, (), generator=g))
            return resize(img[..., top : top + ch, left : left + cw], size)
    # No box fits (a very elongated image, e.g. a 60 x 4000 line scan): the largest square at
    # a random place along the long axis, so every part of the image can be seen.
    s = min(h, w)
    top = int(torch.randint(0, h - s + 1, (), generator=g))
    left = int(torch.randint(0, w - s + 1, (), generator=g))
    return resize(img[..., top : top + s, left : left + s], size)


def rotate(img: torch.Tensor, angle_rad: float) -> torch.Tensor:
    """Rotate (C, H, W) by ``angle_rad`` about the centre with reflected borders."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    h, w = img.shape[-2:]
    # affine_grid works in normalised coordinates; correct for a non-square aspect.
    theta = torch.tensor(
        [[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=img.dtype, device=img.device
    )[None]
    grid = F.affine_grid(theta, [1, *img.shape], align_corners=False)
    return F.grid_sample(
        img[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )[0]


def augment(img: torch.Tensor, size: int, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Apply the pretraining augmentations (Sec. 2.1) to (C, H, W) in [0, 1]; see module doc."""
    out = random_resized_crop(img, size, g, cfg.crop_scale, cfg.crop_ratio)
    if cfg.rotation:
        out = rotate(out, _uniform(g, 0.0, 2 * math.pi))
    if cfg.hflip and float(torch.rand((), generator=g)) < 0.5:
        out = out.flip(-1)
    if cfg.vflip and float(torch.rand((), generator=g)) < 0.5:
        out = out.flip(-2)
    if cfg.brightness > 0 or cfg.contrast > 0:
        b = _uniform(g, 1 - cfg.brightness, 1 + cfg.brightness)
        c = _uniform(g, 1 - cfg.contrast, 1 + cfg.contrast)
        out = out * b
        mean = out.mean()
        out = (mean + c * (out - mean)).clamp(0.0, 1.0)
    return out.contiguous()
