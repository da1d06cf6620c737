"""The ``smile`` convention's steps against the library calls SMILE3 makes (independent code)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import medfilt2d
from sem_metrology import make_line_image, measure_lines
from sem_metrology._smile import (
    _ANGLES_DEG,
    _coarse_edges,
    _fill_extrapolate,
    _nearest_real_root,
    _radon_scores,
    median5_zero_padded,
    rotate_region,
    smile_tilt_deg,
)


def test_nearest_real_root_equals_np_roots() -> None:
    """The real root nearest the centre, as SMILE takes it from ``np.roots``."""
    rng = np.random.default_rng(0)
    coef = rng.normal(size=(400, 5)) * np.array([1e-3, 1e-2, 0.1, 1.0, 1.0])
    got = _nearest_real_root(coef, 0.0)
    for c, g in zip(coef, got, strict=True):
        roots = np.roots(c)
        real = roots[roots.imag == 0].real
        if real.size == 0:
            assert np.isnan(g)
        else:
            assert g == pytest.approx(real[np.argmin(np.abs(real))], abs=1e-7)


def test_zero_padded_median_is_medfilt2d_for_bytes_and_floats() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(40, 57)).astype(np.float64)
    assert np.array_equal(median5_zero_padded(img), medfilt2d(img, 5))
    flt = rng.normal(size=(40, 57))
    assert np.array_equal(median5_zero_padded(flt), medfilt2d(flt, 5))
    assert medfilt2d(img, 5).min() == 0.0  # the zero padding SMILE's dark level comes from


def test_radon_scores_pick_skimage_radon_argmax() -> None:
    from skimage.transform import radon

    for tilt in (1.3, -2.1):
        s = make_line_image(n_lines=8, shape=(160, 240), tilt_deg=tilt, sigma_nm=0.6, seed=2)
        b = np.rot90(s.image.astype(np.float64), 3)

        # scikit-image's Radon transform of the image inside the disc _radon_scores documents:
        # radius min(shape)/2 - 2 on pixel centres measured from the middle, each axis scaled
        # by (n - 2)/(n - 1) (the disc of SMILE's tilt search)
        def centred(n: int) -> np.ndarray:
            return (np.arange(n) - (n - 1) / 2) * (n - 2) / (n - 1)

        r2 = centred(b.shape[0])[:, None] ** 2 + centred(b.shape[1])[None, :] ** 2
        circle = r2 < (min(b.shape) / 2 - 2) ** 2
        ref = (radon(b * circle, theta=_ANGLES_DEG) ** 2).sum(axis=0)
        mine = _radon_scores(b, _ANGLES_DEG)
        assert np.argmax(mine) == np.argmax(ref)
        assert np.corrcoef(mine, ref)[0, 1] > 0.9999
        assert smile_tilt_deg(s.image) == pytest.approx(90.0 - _ANGLES_DEG[np.argmax(ref)])


def test_rotate_region_equals_skimage_rotate() -> None:
    from skimage.transform import rotate

    rng = np.random.default_rng(3)
    frame = rng.integers(0, 255, size=(90, 130)).astype(np.float64)
    roi = (10, 80, 5, 120)
    for angle in (1.0, -2.4, 4.8):
        b = rotate(np.rot90(frame, 3), angle, order=0, preserve_range=True)
        ref = np.rot90(b, 1)[roi[0] : roi[1], roi[2] : roi[3]]
        assert np.array_equal(rotate_region(frame, angle, roi), ref)


def test_pairing_and_border_rules() -> None:
    """Each leading edge takes the first trailing edge after it; one with none is dropped."""
    from scipy.ndimage import gaussian_filter1d

    # bright lines at 20-40, 80-100, 140-160 and a line cut by the right border at 190,
    # with blurred edges (on ideal steps the unfiltered derivative is 0 next to the step).
    profile = np.zeros(200)
    for a, b in ((20, 40), (80, 100), (140, 160), (190, 200)):
        profile[a:b] = 1.0
    img = np.tile(gaussian_filter1d(profile, 2.0, mode="nearest"), (32, 1))
    lead, trail = _coarse_edges(img, bright_lines=True)
    assert len(lead) == len(trail) == 3 and np.all(trail > lead)
    assert np.allclose(lead, [20, 80, 140], atol=1.5)
    assert np.allclose(trail, [40, 100, 160], atol=1.5)
    dark_lead, dark_trail = _coarse_edges(img, bright_lines=False)
    assert np.allclose(dark_lead, [40, 100, 160], atol=1.5)  # dark lines: the spaces
    # each falling edge takes the next peak after it (here a filter ripple before 80 ...)
    assert np.all(dark_trail > dark_lead) and np.all(dark_trail[:-1] < dark_lead[1:])


def test_gaps_are_interpolated_and_extrapolated_linearly() -> None:
    pos = np.array([[np.nan, 1.0, 2.0, np.nan, 4.0, 5.0, np.nan]])
    assert np.allclose(_fill_extrapolate(pos), [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])


def _noise(shape: tuple[int, ...], seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """Gaussian noise of ``sigma`` grey levels (0-255 scale)."""
    return np.random.default_rng(seed).normal(0.0, sigma, shape)


def test_smile_measures_synthetic_lines_wider_than_truth_on_a_raised_dark_level() -> None:
    """SMILE's dark level is 0, not the space level: with spaces at grey 50 and lines at 150
    its 0.5 level is grey 75, below the true half-level 100, so its lines come out wider.

    Lines of a 30-px pitch, the outer edges half a space (8 px) from the border, 2 grey levels
    of noise: a wider flat margin rings in SMILE's filtered profile, and whether the ringing
    adds lines depends on the sign of the noise there (noiseless: a knife edge)."""
    s = make_line_image(n_lines=10, shape=(192, 302), pitch_nm=30 * 0.827, sigma_nm=1.0, seed=11)
    image = s.image + _noise(s.image.shape)
    smile = measure_lines(image, s.pixel_size_nm, convention="smile")
    truth = measure_lines(image, s.pixel_size_nm, convention="truth")
    assert smile.n_lines == truth.n_lines == 10
    assert smile.levels[0] == 0.0 and truth.levels == pytest.approx((50.0, 150.0), abs=1.0)
    assert abs(truth.cd_nm - s.truth.cd_nm) < 0.05
    assert smile.cd_nm - s.truth.cd_nm > 1.0
    # Shifting the grey levels down so the space is at 0 (clipped there, as a 0-based detector
    # records it) makes the two conventions agree.
    shifted = measure_lines(np.clip(image - 50.0, 0.0, None), s.pixel_size_nm, convention="smile")
    assert abs(shifted.cd_nm - s.truth.cd_nm) < 0.15


def test_profile_filter_and_peaks_equal_scipy_signal() -> None:
    """SMILE's butter(8, 0.125) + filtfilt(method='gust') + find_peaks, without scipy.signal."""
    from scipy.signal import butter, filtfilt, find_peaks
    from sem_metrology._smile import _BUTTER_A, _BUTTER_B, _filtfilt_gust, _find_peaks

    b, a = butter(8, 0.125)
    assert np.array_equal(b, _BUTTER_B) and np.array_equal(a, _BUTTER_A)
    rng = np.random.default_rng(5)
    for n in (40, 700):
        x = np.cumsum(rng.normal(size=n)) + rng.normal(size=n)
        ref = filtfilt(b, a, x, method="gust")
        assert np.allclose(_filtfilt_gust(x), ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
        g = np.abs(np.gradient(ref))
        assert np.array_equal(_find_peaks(g), find_peaks(g)[0])
    flat_tops = np.round(rng.normal(size=300) * 2) / 2  # plateaus: scipy takes their middle
    assert np.array_equal(_find_peaks(flat_tops), find_peaks(flat_tops)[0])
