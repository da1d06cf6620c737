"""PSD normalisation (Parseval), Palasantzas model and fit, unbiased roughness, edge synthesis."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate
from sem_metrology import (
    correlated_edges,
    fit_palasantzas,
    noise_variance,
    palasantzas_psd,
    palasantzas_variance,
    profile_psd,
    psd_variance,
    unbiased_variance,
)


@pytest.mark.parametrize("n", [255, 256])
@pytest.mark.parametrize("detrend", ["mean", "linear"])
def test_parseval_psd_integrates_to_pooled_variance(n: int, detrend: str) -> None:
    rng = np.random.default_rng(n)
    profiles = np.cumsum(rng.normal(size=(7, n)), axis=1) + 3.0 * np.arange(n) / n
    freq, psd = profile_psd(profiles, spacing_nm=0.83, detrend=detrend)
    t = np.arange(n)
    if detrend == "mean":
        res = profiles - profiles.mean(axis=1, keepdims=True)
    else:  # independent detrend with np.polyfit
        res = np.array([p - np.polyval(np.polyfit(t, p, 1), t) for p in profiles])
    assert freq[0] == 0.0
    assert np.isclose(freq[1], 1.0 / (n * 0.83))
    assert np.isclose(freq[-1], (n // 2) / (n * 0.83))
    assert psd_variance(freq, psd) == pytest.approx(np.mean(res**2), rel=1e-10)


def test_white_noise_psd_level_is_two_sigma2_delta() -> None:
    rng = np.random.default_rng(1)
    s, delta = 0.7, 0.5
    freq, psd = profile_psd(rng.normal(0, s, size=(400, 128)), delta)
    interior = psd[1:-1]
    assert np.mean(interior) == pytest.approx(2 * s**2 * delta, rel=0.02)
    assert psd[-1] == pytest.approx(s**2 * delta, rel=0.15)  # Nyquist bin carries half
    # The floor's share of the variance, as used for Mack's unbiased values:
    assert noise_variance(freq, 2 * s**2 * delta, 128) == pytest.approx(s**2 * 127 / 128)


@pytest.mark.parametrize("hurst", [0.3, 0.5, 1.0])
def test_palasantzas_variance_matches_numerical_integral(hurst: float) -> None:
    psd0, xi = 3.0, 12.0
    num, _ = integrate.quad(lambda f: palasantzas_psd(f, psd0, xi, hurst), 0, np.inf, limit=400)
    assert palasantzas_variance(psd0, xi, hurst) == pytest.approx(num, rel=1e-6)
    if hurst == 0.5:  # closed form: PSD(0) = 4 sigma^2 xi for the one-sided spectrum
        assert palasantzas_variance(psd0, xi, hurst) == pytest.approx(psd0 / (4 * xi))


def test_fit_recovers_parameters_from_periodogram_like_data() -> None:
    rng = np.random.default_rng(2)
    n, delta = 900, 0.8
    freq = np.fft.rfftfreq(n, delta)
    truth = {"psd0_nm3": 20.0, "xi": 9.0, "h": 0.8, "noise": 0.25}
    model = palasantzas_psd(freq, truth["psd0_nm3"], truth["xi"], truth["h"], truth["noise"])
    # Average of 60 periodograms: each bin is model * chi2(2 * 60) / (2 * 60).
    psd = model * rng.chisquare(120, size=freq.size) / 120
    fit = fit_palasantzas(freq, psd)
    assert fit.success
    assert fit.correlation_length_nm == pytest.approx(truth["xi"], rel=0.1)
    assert fit.roughness_exponent == pytest.approx(truth["h"], abs=0.1)
    assert fit.noise_floor_nm3 == pytest.approx(truth["noise"], rel=0.05)
    assert fit.psd0_nm3 == pytest.approx(truth["psd0_nm3"], rel=0.15)


def test_unbiased_variance_removes_white_noise_from_real_edges() -> None:
    rng = np.random.default_rng(3)
    n, delta = 1024, 0.83
    rough = correlated_edges(80, n, delta, 1.0, 10.0, 0.7, rng)
    noisy = rough + rng.normal(0, 0.5, rough.shape)
    freq, psd = profile_psd(noisy, delta)
    fit = fit_palasantzas(freq, psd)
    true_var = float(np.mean((rough - rough.mean(axis=1, keepdims=True)) ** 2))
    biased = psd_variance(freq, psd)
    assert biased == pytest.approx(true_var + 0.25, rel=0.05)
    assert unbiased_variance(freq, psd, fit.noise_floor_nm3, n) == pytest.approx(true_var, rel=0.05)


def test_correlated_edges_follow_the_palasantzas_spectrum() -> None:
    rng = np.random.default_rng(4)
    sigma, xi, h, delta, n = 1.5, 6.0, 0.5, 1.0, 512
    edges = correlated_edges(300, n, delta, sigma, xi, h, rng)
    freq, psd = profile_psd(edges, delta)
    model = palasantzas_psd(freq, 4 * sigma**2 * xi, xi, h)  # one-sided PSD(0) for H = 1/2
    band = (freq > 0.02) & (freq < 0.4)
    ratio = psd[band] / model[band]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.08)
    # Full process variance (the record is 4x longer, so the crop keeps most of it):
    assert np.mean(edges.var(axis=1)) == pytest.approx(sigma**2, rel=0.1)


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="spacing_nm"):
        profile_psd(np.zeros((2, 8)), 0.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        profile_psd(np.zeros((2, 1)), 1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        fit_palasantzas(np.arange(5.0), np.ones(4))
    assert not fit_palasantzas(np.arange(4.0), np.ones(4)).success
