"""Through-focus ordering: the estimated radius orders images of one field as their sharpness.

The shared corpus holds no real through-focus series of one field (no image set taken at
several focus settings with a permissive licence), so the series are made by the simulator on
real micrographs at increasing radii. Sharpness is measured independently of the estimator, on
the noise-free version of each image: the energy of the image gradient relative to the image
variance.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sem_physics import (
    DegradationParams,
    crop_info_bar,
    degrade,
    estimate_degradation,
    make_sample,
    read_image,
)

RADII_PX = (2.5, 4.0, 6.5, 10.0, 16.0, 25.0)
FIELDS = [
    "kit-data-manager_SEM-Mapping-Tool/1-as-cast_16_Sch_10k_InLens.tif",
    "jni_skan/rbc1.tif",
    "vyastreb_sem2surface/P33_scale2s3_detectorA.tif",
]


def sharpness(image: np.ndarray) -> float:
    """Mean squared finite-difference gradient over the variance (larger = sharper)."""
    img = image.astype(np.float64)
    gy, gx = np.diff(img, axis=0), np.diff(img, axis=1)
    return float((np.mean(gy**2) + np.mean(gx**2)) / img.var())


def focus_series(field: np.ndarray, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``field`` defocused at each radius in ``RADII_PX`` (mild astigmatism, fixed noise), and
    the same without noise (whose sharpness is the reference order)."""
    noisy, clean = [], []
    for i, r in enumerate(RADII_PX):
        p = DegradationParams(
            rx_px=r, ry_px=0.8 * r, beta=1.95, theta_rad=0.7, gain=1.0, offset=8, sigma=3, dose=30
        )
        noisy.append(degrade(field, p, rng=np.random.default_rng([seed, i])))
        clean.append(degrade(field, p, poisson=False, gaussian=False))
    return noisy, clean


def check_ordering(series: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    noisy, clean = series
    radii = [estimate_degradation(y).rx_px for y in noisy]
    sharp = [sharpness(img) for img in clean]
    assert all(r is not None for r in radii)
    # sharper image <=> smaller estimated radius, over every pair of the series
    order_by_radius = np.argsort(radii)
    order_by_sharpness = np.argsort(sharp)[::-1]
    assert list(order_by_radius) == list(order_by_sharpness), (radii, sharp)
    assert list(order_by_radius) == list(range(len(RADII_PX))), radii


@pytest.mark.parametrize("rel", FIELDS)
def test_real_field_defocused_at_increasing_radii(rel: str) -> None:
    folder = os.environ.get("SEM_CORPUS_DATA")
    if not folder or not (Path(folder) / rel).is_file():
        pytest.skip(f"SEM_CORPUS_DATA not set or without {rel}")
    img = read_image(Path(folder) / rel)
    field = crop_info_bar(img.data, img.info_bar_rows)[:512, :640]
    check_ordering(focus_series(field, seed=len(rel)))


def test_sample_field_defocused_at_increasing_radii() -> None:
    check_ordering(focus_series(make_sample("contacts", (512, 640), seed=9), seed=1))
