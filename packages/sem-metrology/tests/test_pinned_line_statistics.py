"""Pinned against independent computations and closed forms (CD, CD std, pitch and PSD axis of
:func:`sem_metrology.measure_lines`, recomputed independently from the reported edges)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sem_metrology import LineOptions, make_line_image, measure_lines
from sem_physics import DegradationParams

ROUGH = {"sigma_nm": 1.5, "correlation_length_nm": 10.0, "roughness_exponent": 0.8}


def _deg(rx: float, sigma: float, dose: float) -> DegradationParams:
    return DegradationParams(
        rx_px=rx, ry_px=rx, beta=2.0, theta_rad=0.0, gain=1.0, offset=10.0, sigma=sigma, dose=dose
    )


@pytest.fixture(scope="module")
def tilted():
    return make_line_image(
        n_lines=6, shape=(256, 400), degradation=_deg(2.0, 4.0, 30.0), seed=7, tilt_deg=8.0, **ROUGH
    )


def _widths(m) -> np.ndarray:
    """(lines, rows) widths in nm from the reported edges: (x_T - x_L) pixel cos(theta) for
    truth (perpendicular to the tilted lines), along the row for smile (module docstring)."""
    lead = np.asarray(m.leading_edges_px)
    trail = np.asarray(m.trailing_edges_px)
    cos_t = 1.0 if m.convention == "smile" else math.cos(math.radians(m.tilt_deg))
    return (trail - lead) * m.pixel_size_nm * cos_t


def test_truth_cd_is_mean_of_per_line_mean_widths_and_cd_std_is_population_std(tilted):
    m = measure_lines(tilted.image, tilted.pixel_size_nm, LineOptions(convention="truth"))
    assert m.valid and m.n_lines >= 4
    w = _widths(m)
    per_line = w.mean(axis=1)
    # per-line mean and median differ here (rough edges), so both choices are distinguishable
    assert np.abs(per_line - np.median(w, axis=1)).max() > 1e-4
    assert m.cd_nm == pytest.approx(per_line.mean(), rel=1e-9)
    assert m.cd_std_nm == pytest.approx(per_line.std(ddof=0), rel=1e-9)
    assert m.cd_std_nm != pytest.approx(per_line.std(ddof=1), rel=1e-3)
    # pitch perpendicular to the lines: median spacing of the line centres
    cos_t = math.cos(math.radians(m.tilt_deg))
    centres = 0.5 * (
        np.asarray(m.leading_edges_px).mean(axis=1) + np.asarray(m.trailing_edges_px).mean(axis=1)
    )
    assert m.pitch_nm == pytest.approx(
        float(np.median(np.diff(np.sort(centres)))) * m.pixel_size_nm * cos_t, rel=1e-9
    )


def test_truth_psd_frequency_axis_is_sampled_along_the_tilted_line(tilted):
    """Consecutive rows sample a line tilted by theta every pixel / cos(theta) nm along it, so
    the PSD's frequency step is cos(theta) / (n_rows * pixel) (and Nyquist cos(theta)/(2 px))."""
    m = measure_lines(tilted.image, tilted.pixel_size_nm, LineOptions(convention="truth"))
    assert abs(m.tilt_deg) > 5
    cos_t = math.cos(math.radians(m.tilt_deg))
    f = np.asarray(m.psd_frequency_per_nm)
    assert f[1] - f[0] == pytest.approx(cos_t / (m.n_rows * m.pixel_size_nm), rel=1e-9)
    assert f[-1] == pytest.approx(cos_t / (2 * m.pixel_size_nm), rel=1e-9)


def test_smile_cd_is_mean_of_per_line_median_widths():
    s = make_line_image(
        n_lines=8, shape=(256, 400), degradation=_deg(1.5, 4.0, 30.0), seed=11, **ROUGH
    )
    m = measure_lines(s.image, s.pixel_size_nm, LineOptions(convention="smile"))
    assert m.valid and m.n_lines >= 4
    w = _widths(m)
    med = np.median(w, axis=1)
    assert np.abs(med - w.mean(axis=1)).max() > 1e-4
    assert m.cd_nm == pytest.approx(med.mean(), rel=1e-9)
    assert m.cd_std_nm == pytest.approx(med.std(ddof=0), rel=1e-9)


@pytest.fixture(scope="module")
def noisy_truth():
    s = make_line_image(
        n_lines=12, shape=(256, 512), degradation=_deg(2.0, 4.0, 30.0), seed=7, **ROUGH
    )
    return measure_lines(
        s.image, s.pixel_size_nm, LineOptions(convention="truth", bootstrap_samples=2000)
    )


def test_truth_lwr_psd_is_three_sigma_of_the_width_psd_integral_and_equals_lwr(noisy_truth):
    """Parseval: the width PSD (mean-detrended widths) integrates to the pooled width variance,
    so for ``truth`` lwr_psd_nm = 3 sqrt(sum P df) = lwr_nm exactly."""
    m = noisy_truth
    f = np.asarray(m.psd_frequency_per_nm)
    var = float(np.sum(m.psd_lwr_nm3)) * (f[1] - f[0])
    assert m.lwr_psd_nm == pytest.approx(3.0 * math.sqrt(var), rel=1e-9)
    assert m.lwr_psd_nm == pytest.approx(m.lwr_nm, rel=1e-9)


def test_truth_unbiased_ler_subtracts_the_whole_white_floor_share(noisy_truth):
    """Mack's unbiased LER: (LER_u / 3)^2 = (LER / 3)^2 - N df (n_interior + 1/2 [n even]), the
    share of the white floor N (``noise_floor_nm3``) in a one-sided PSD of n_rows points."""
    m = noisy_truth
    f = np.asarray(m.psd_frequency_per_nm)
    n = m.n_rows
    share = m.noise_floor_nm3 * (f[1] - f[0]) * ((n - 1) // 2 + (0.5 if n % 2 == 0 else 0.0))
    assert share > 0
    expected = 3.0 * math.sqrt(max(0.0, (m.ler_nm / 3.0) ** 2 - share))
    assert m.ler_unbiased_nm == pytest.approx(expected, rel=1e-9)


def test_bootstrap_standard_errors_match_their_closed_forms(noisy_truth):
    """Bootstrap over lines: the SE of the mean CD is the plug-in std / sqrt(n) (exact in
    expectation; 2000 resamples leave ~2 %); LWR's SE follows the delta method from the
    per-line width variances, 3 sd(v) / (2 sqrt(n mean(v))) (a first-order bound, 15 %)."""
    m = noisy_truth
    lc = np.asarray(m.line_cd_nm)
    n = lc.size
    assert m.cd_se_nm == pytest.approx(lc.std() / math.sqrt(n), rel=0.1)
    v = (np.asarray(m.line_lwr_nm) / 3.0) ** 2
    delta = 3.0 * v.std() / (2.0 * math.sqrt(n * v.mean()))
    assert m.lwr_se_nm == pytest.approx(delta, rel=0.15)
