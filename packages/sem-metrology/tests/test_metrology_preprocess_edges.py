"""Normalisation, orientation, tilt and sub-pixel edge location against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import erf
from sem_metrology import make_line_image, measure_lines
from sem_metrology.edges import coarse_edges, edge_spread_px, fill_gaps, subpixel_edges
from sem_metrology.preprocess import (
    detect_orientation,
    estimate_tilt,
    flatten_background,
    median5_extrema,
    normalize_intensity,
)


@pytest.mark.parametrize("kind", ["uint8", "float", "binary"])
def test_median5_extrema_equals_full_median_filter(kind: str) -> None:
    rng = np.random.default_rng(0)
    if kind == "uint8":
        img = rng.integers(0, 256, size=(97, 131)).astype(np.float64)
    elif kind == "float":
        img = ndimage.gaussian_filter(rng.normal(size=(97, 131)), 1.5)
    else:
        img = np.where(rng.random((97, 131)) < 0.5, 0.0, 255.0)
    med = ndimage.median_filter(img, size=5)[2:-2, 2:-2]  # windows inside the image
    assert median5_extrema(img) == (med.min(), med.max())


def test_normalize_intensity_maps_median_levels_and_rejects_constant() -> None:
    img = np.full((40, 40), 20.0)
    img[:, 20:] = 220.0
    norm, lo, hi = normalize_intensity(img)
    assert (lo, hi) == (20.0, 220.0)
    assert norm.min() == 0.0 and norm.max() == 1.0
    with pytest.raises(ValueError, match="no contrast"):
        normalize_intensity(np.full((20, 20), 7.0))


def test_percentile_levels_sample_the_median_filter_on_block_centres() -> None:
    rng = np.random.default_rng(1)
    img = ndimage.gaussian_filter(rng.normal(100, 30, size=(103, 128)), 1.0)
    _, lo, hi = normalize_intensity(img, "percentile", (2.0, 97.0))
    centres = ndimage.median_filter(img, size=5)[2 : 5 * (103 // 5) : 5, 2 : 5 * (128 // 5) : 5]
    assert (lo, hi) == pytest.approx(tuple(np.percentile(centres, [2.0, 97.0])), rel=1e-12)
    with pytest.raises(ValueError, match="percentiles"):
        normalize_intensity(img, "percentile", (60.0, 40.0))
    with pytest.raises(ValueError, match="levels"):
        normalize_intensity(img, "max")  # type: ignore[arg-type]


def test_percentile_levels_survive_a_bright_artefact() -> None:
    """A particle brighter than the lines sets the 5x5 median's max level and hides every line;
    the plateau and percentile levels ignore it and measure the true CD."""
    s = make_line_image(n_lines=8, shape=(256, 256), seed=3)
    img = s.image.copy()
    img[:12, :12] = 3 * img.max()  # 0.2 % of the pixels
    kw = {"convention": "truth"}
    extrema = measure_lines(img, s.pixel_size_nm, intensity_levels="median5", **kw)
    assert not extrema.valid and "no measurable lines" in extrema.reason
    for levels in ("percentile", "plateau"):
        robust = measure_lines(img, s.pixel_size_nm, intensity_levels=levels, **kw)
        assert robust.valid and robust.n_lines == 8 and robust.intensity_levels == levels
        assert robust.cd_nm == pytest.approx(s.truth.cd_nm, abs=0.1)
    with pytest.raises(ValueError, match="level_percentiles"):
        measure_lines(img, s.pixel_size_nm, level_percentiles=(5.0, 5.0))


def test_flatten_background_removes_a_plane() -> None:
    sample = make_line_image(n_lines=12, shape=(120, 240), sigma_nm=0.5, seed=0)
    yy, xx = np.mgrid[0:120, 0:240]
    tilted = sample.clean + 0.3 * xx - 0.2 * yy
    flat = flatten_background(tilted)
    # After flattening, the line and space plateaus are level again across the image.
    left, right = flat[:, :40], flat[:, -40:]
    assert abs(np.percentile(left, 95) - np.percentile(right, 95)) < 3.0
    assert abs(np.percentile(tilted[:, :40], 95) - np.percentile(tilted[:, -40:], 95)) > 30


def test_orientation_and_tilt_of_synthetic_lines() -> None:
    for tilt in (2.5, -1.3):
        s = make_line_image(n_lines=10, shape=(256, 384), tilt_deg=tilt, sigma_nm=0.6, seed=1)
        assert detect_orientation(s.image)[0] == "vertical"
        assert detect_orientation(s.image.T)[0] == "horizontal"
        norm, _, _ = normalize_intensity(s.image)
        slope, deg = estimate_tilt(norm)
        assert deg == pytest.approx(tilt, abs=0.1)  # coarse: windows follow within 0.5 px
        assert slope == pytest.approx(np.tan(np.deg2rad(deg)))
        # measure_lines refines the tilt from the fitted edges.
        m = measure_lines(s.image, s.pixel_size_nm, convention="truth")
        assert m.tilt_deg == pytest.approx(tilt, abs=0.03)
        # SMILE's Radon search turns the image on a 0.2 degree grid.
        m = measure_lines(s.image, s.pixel_size_nm, convention="smile")
        assert m.tilt_deg == pytest.approx(tilt, abs=0.11)


def _erf_edges(positions: np.ndarray, width: int, blur_px: float, rising: bool) -> np.ndarray:
    """Rows of a blurred step at the given sub-pixel positions (normalised 0..1)."""
    x = np.arange(width)[None, :]
    step = 0.5 * (1 + erf((x - positions[:, None]) / (np.sqrt(2) * blur_px)))
    return step if rising else 1.0 - step


@pytest.mark.parametrize("method", ["polynomial", "linear", "threshold"])
@pytest.mark.parametrize("rising", [True, False])
def test_subpixel_edges_recover_known_positions(method: str, rising: bool) -> None:
    rng = np.random.default_rng(2)
    truth = 30.0 + rng.uniform(-2.5, 2.5, size=64)
    img = _erf_edges(truth, 61, 1.5, rising)
    # Windows on the nearest pixel (as in measure_lines' second pass); the prediction is off
    # by up to 0.4 px so the nearest-crossing rule has work to do.
    pred = (truth + rng.uniform(-0.4, 0.4, size=64))[None, :]
    # Window half-width 3 = what measure_lines picks for this edge width (ceil(1.2 sigma) >= 3).
    found = subpixel_edges(img, pred, rising=rising, half_window_px=3, method=method)
    # The erf step is symmetric about its 0.5 crossing; what remains is the fit's approximation
    # error, which depends on the edge's sub-pixel phase in the window (a straight line through
    # a sigmoid is the crudest: SMILE's 'linear' option).
    tol = {"polynomial": 0.03, "linear": 0.15, "threshold": 0.01}[method]
    assert np.max(np.abs(found[0] - truth)) < tol


def test_polynomial_bias_grows_with_a_window_wider_than_the_edge() -> None:
    truth = 30.0 + np.linspace(-0.5, 0.5, 41)
    img = _erf_edges(truth, 61, 1.5, True)
    errs = [
        np.max(
            np.abs(subpixel_edges(img, truth[None, :], rising=True, half_window_px=hw)[0] - truth)
        )
        for hw in (3, 7)
    ]
    assert errs[0] < 0.03 < errs[1]


@pytest.mark.parametrize("blur", [1.0, 2.0, 3.5])
def test_edge_spread_recovers_gaussian_edge_width(blur: float) -> None:
    truth = 40.0 + np.random.default_rng(5).uniform(-3, 3, size=200)
    img = _erf_edges(truth, 81, blur, True)
    assert edge_spread_px(img, truth[None, :], True, 10, row_step=1) == pytest.approx(blur, rel=0.1)


def test_wrong_polarity_and_missing_crossings_are_gaps() -> None:
    img = _erf_edges(np.full(10, 20.0), 41, 1.0, rising=True)
    img[3] = 0.9  # a row without any crossing
    pred = np.full((1, 10), 20.0)
    found = subpixel_edges(img, pred, rising=True, half_window_px=5)
    assert np.isnan(found[0, 3]) and np.isfinite(np.delete(found[0], 3)).all()
    # Looking for a falling edge where there is only a rising one: every row is a gap.
    assert np.isnan(subpixel_edges(img, pred, rising=False, half_window_px=5)).all()
    filled, gaps = fill_gaps(np.array([[1.0, np.nan, 3.0, np.nan]]))
    assert filled.tolist() == [[1.0, 2.0, 3.0, 3.0]] and gaps.sum() == 2


def test_coarse_edges_pair_complete_lines_only() -> None:
    x = np.arange(100.0)
    # Starts inside a bright line (cut by the border), then two complete lines, then a cut one.
    prof = np.zeros(100)
    for a, b in [(0, 10), (25.5, 40.5), (60.25, 75.75), (92, 100)]:
        prof[(x >= a) & (x < b)] = 1.0
    lead, trail = coarse_edges(x, prof, tone="bright", smooth_px=0.5)
    assert lead == pytest.approx([25.0, 60.5], abs=0.6)
    assert trail == pytest.approx([40.0, 75.5], abs=0.6)
    lead_d, trail_d = coarse_edges(x, prof, tone="dark", smooth_px=0.5)
    assert lead_d == pytest.approx([9.5, 40.0, 75.5], abs=0.6)
    assert np.all(trail_d > lead_d)
