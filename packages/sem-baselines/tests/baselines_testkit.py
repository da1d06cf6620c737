"""Small synthetic SEM-like images and tiny learned-restorer settings shared by the tests."""

from __future__ import annotations

import numpy as np

# Tiny networks so that every learned restorer trains for a few steps in well under a second.
TINY = {
    "n2n": {"unet": {"depth": 2, "width": 4}},
    "n2v": {"unet": {"depth": 2, "width": 4}},
    "mrn": {"net": {"width": 4}},
}
TINY_FIT = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "patch_size": 32}


def lines_image(
    shape: tuple[int, int] = (64, 64), seed: int = 0, period_px: float = 16.0, blob_px: float = 5.0
) -> np.ndarray:
    """Rough vertical lines (period ``period_px``) plus three bright blobs, 0..255 float32."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    shift = np.cumsum(rng.normal(0, 0.3, h))[:, None]
    phase = 2 * np.pi * (xx + shift) / period_px + rng.uniform(0, 2 * np.pi)
    img = 50 + 150 / (1 + np.exp(-4 * np.sin(phase)))
    for _ in range(3):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.4, 1.0) * blob_px
        img += 40 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return np.clip(img, 0, 255).astype(np.float32)


def psnr(ref: np.ndarray, x: np.ndarray) -> float:
    mse = float(np.mean((ref.astype(np.float64) - x.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)
