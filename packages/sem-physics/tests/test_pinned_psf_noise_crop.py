"""Pinned against independent computations and closed forms (psf.shortest_period_px, noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sem_physics import PSFParams, airy_psf, poisson_gaussian, shortest_period_px


@pytest.mark.parametrize(("rx", "ry", "theta"), [(9.0, 4.0, 0.6), (5.0, 12.0, 2.2)])
@pytest.mark.parametrize(("a", "b"), [(1, 1), (-1, 1), (2, 1), (-1, 2)])
def test_shortest_period_along_oblique_directions_is_where_the_otf_ends(rx, ry, theta, a, b):
    """Along an oblique direction u = (a, b)/|(a, b)| the numerical OTF of the sampled beta = 2
    kernel is sampled exactly on the FFT grid at f = t (a, b)/n; it must be gone beyond
    1/period and present below it. (The existing test only checks directions 0 and pi/2,
    where the sign of the rotation's off-diagonal terms cancels.)"""
    params = PSFParams(rx_px=rx, ry_px=ry, beta=2.0, theta_rad=theta)
    k = airy_psf(params)
    n, c = 1024, k.shape[0] // 2
    buf = np.zeros((n, n))
    buf[: k.shape[0], : k.shape[1]] = k
    otf = np.abs(np.fft.fft2(np.roll(buf, (-c, -c), (0, 1))))  # otf[fy, fx]
    steps = np.arange(1, n // (2 * max(abs(a), abs(b))))
    prof = otf[(steps * b) % n, (steps * a) % n]  # rows: y frequency, columns: x frequency
    f = steps * math.hypot(a, b) / n
    period = shortest_period_px(params, math.atan2(b, a))
    assert np.abs(prof[f * period > 1.03]).max() < 5e-3
    assert prof[f * period < 0.9].min() > 0.03


@pytest.mark.parametrize("sigma", [0.3, 0.7, 1.0])
def test_gaussian_read_noise_below_one_grey_level_is_applied(sigma):
    """Var(N(z)) = sigma^2 without shot noise, also for sigma <= 1 (the moment test only
    covers larger sigma): relative error of a 65536-sample variance is ~0.6 %, bound 5 %."""
    z = np.full((256, 256), 50.0)
    y = poisson_gaussian(z, None, sigma, np.random.default_rng(0)).astype(np.float64)
    assert y.mean() == pytest.approx(50.0, abs=5 * sigma / 256)
    assert y.var() == pytest.approx(sigma**2, rel=0.05)


def test_fraction_crop_rounds_to_the_nearest_row_like_crop_info_bar(tmp_path):
    """``crop="fraction"`` removes round(fraction * H) rows, as ``crop_info_bar`` documents:
    0.2 of 48 rows is 9.6 -> 10 (the existing test uses 0.25 * 48 = 12 exactly, where
    rounding and truncation agree)."""
    from sem_physics import DegradationParams, degrade_files, read_image, write_samples
    from sem_physics.io import crop_info_bar

    sources = write_samples(tmp_path / "src", n_per_kind=1, shape=(48, 64), seed=3)
    p = DegradationParams(
        rx_px=2, ry_px=2, beta=2, theta_rad=0.0, gain=1.0, offset=5, sigma=2, dose=10
    )
    m = degrade_files(
        sources, tmp_path / "out", mode="explicit", params=p, crop="fraction", crop_fraction=0.2
    )
    frame = read_image(sources[0]).data
    expected_rows = frame.shape[0] - crop_info_bar(frame, fraction=0.2).shape[0]
    assert expected_rows == round(0.2 * 48) == 10
    assert all(e.crop_rows == expected_rows for e in m.entries)
    out = read_image(tmp_path / "out" / m.entries[0].output)
    assert out.data.shape == (48 - expected_rows, 64)
