"""Core forward model: PSF closed form, FFT convolution, noise statistics, parameter ranges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from pydantic import ValidationError
from scipy.signal import convolve2d
from scipy.special import j1
from sem_physics import (
    DegradationParams,
    ParameterRanges,
    PSFParams,
    airy_psf,
    convolve_reflect,
    convolve_reflect_torch,
    degrade,
    degrade_torch,
    kernel_size,
)


def closed_form(p: PSFParams, dy: float, dx: float) -> float:
    """Unnormalised PSF value at (row offset dy, column offset dx), written out independently."""
    xr = math.cos(p.theta_rad) * dx + math.sin(p.theta_rad) * dy
    yr = -math.sin(p.theta_rad) * dx + math.cos(p.theta_rad) * dy
    r = math.hypot(xr / p.rx_px, yr / p.ry_px)
    if r == 0:
        return 1.0
    return abs(2 * j1(math.pi * r) / (math.pi * r)) ** p.beta


@pytest.mark.parametrize(
    ("rx", "ry", "expected"), [(1.0, 1.0, 7), (2.0, 1.0, 13), (15.5, 15.5, 93), (30.0, 3.0, 181)]
)
def test_kernel_size_is_ceil_6r_forced_odd(rx: float, ry: float, expected: int) -> None:
    assert kernel_size(rx, ry) == expected
    assert airy_psf(PSFParams(rx_px=rx, ry_px=ry)).shape == (expected, expected)


@pytest.mark.parametrize(("rx", "ry"), [(math.inf, 1.0), (1.0, math.nan), (0.0, 1.0), (2.0, -1)])
def test_kernel_size_names_radii_it_cannot_size(rx: float, ry: float) -> None:
    with pytest.raises(ValueError, match=r"PSF radii must be finite and > 0 px, got rx_px="):
        kernel_size(rx, ry)


def test_psf_matches_closed_form_at_sample_points() -> None:
    p = PSFParams(rx_px=4.3, ry_px=2.1, beta=1.93, theta_rad=0.7)
    k = airy_psf(p)
    c = k.shape[0] // 2
    raw = np.array(
        [[closed_form(p, i - c, j - c) for j in range(k.shape[1])] for i in range(k.shape[0])]
    )
    np.testing.assert_allclose(k, raw / raw.sum(), rtol=1e-12, atol=1e-15)
    assert k[c, c] == k.max()
    assert math.isclose(k.sum(), 1.0, rel_tol=1e-12)


def test_psf_symmetries() -> None:
    iso = airy_psf(PSFParams(rx_px=5, ry_px=5, theta_rad=0.3))
    np.testing.assert_allclose(iso, np.rot90(iso), atol=1e-15)
    np.testing.assert_allclose(iso, iso.T, atol=1e-15)
    a = airy_psf(PSFParams(rx_px=6, ry_px=2, theta_rad=0.4))
    b = airy_psf(PSFParams(rx_px=6, ry_px=2, theta_rad=0.4 + math.pi))
    np.testing.assert_allclose(a, b, atol=1e-12)
    swapped = airy_psf(PSFParams(rx_px=2, ry_px=6, theta_rad=0.4))
    rotated = airy_psf(PSFParams(rx_px=6, ry_px=2, theta_rad=0.4 + math.pi / 2))
    np.testing.assert_allclose(swapped, rotated, atol=1e-12)
    # Exact centro-symmetry h(-x, -y) = h(x, y): the FFT path relies on it for a real spectrum.
    assert np.array_equal(a, a[::-1, ::-1])
    # Astigmatism: an x-elongated kernel is wider along columns than along rows.
    c = a.shape[0] // 2
    elong = airy_psf(PSFParams(rx_px=6, ry_px=2))
    assert elong[c, c + 4] > elong[c + 4, c]


def test_psf_rejects_invalid_radii() -> None:
    for bad in (
        {"rx_px": 0, "ry_px": 1},
        {"rx_px": 1, "ry_px": -2},
        {"rx_px": float("nan"), "ry_px": 1},
    ):
        with pytest.raises(ValidationError):
            PSFParams(**bad)


@pytest.mark.parametrize("shape", [(31, 47), (64, 64), (9, 120)])
def test_convolution_equals_direct_reflect(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    x = rng.random(shape) * 255
    k = airy_psf(PSFParams(rx_px=1.4, ry_px=1.1, theta_rad=1.0))
    direct = ndi.convolve(x, k, mode="reflect")
    np.testing.assert_allclose(convolve_reflect(x, k, dtype=np.float64), direct, atol=1e-9)
    np.testing.assert_allclose(convolve_reflect(x, k), direct, rtol=1e-5, atol=1e-3)
    # 'mirror' (whole-sample symmetric) is a different boundary and must not match.
    assert (
        np.abs(convolve_reflect(x, k, dtype=np.float64) - ndi.convolve(x, k, mode="mirror")).max()
        > 1e-3
    )


def test_convolution_delta_and_flat() -> None:
    k = airy_psf(PSFParams(rx_px=3, ry_px=2, theta_rad=0.5))
    s = k.shape[0]
    img = np.zeros((61, 61))
    img[30, 30] = 1.0
    out = convolve_reflect(img, k, dtype=np.float64)
    np.testing.assert_allclose(
        out[30 - s // 2 : 30 + s // 2 + 1, 30 - s // 2 : 30 + s // 2 + 1], k, atol=1e-12
    )
    flat = convolve_reflect(np.full((50, 70), 123.0), airy_psf(PSFParams(rx_px=8, ry_px=8)))
    np.testing.assert_allclose(flat, 123.0, rtol=1e-5)


def test_torch_path_matches_numpy_with_mixed_kernel_sizes() -> None:
    rng = np.random.default_rng(2)
    imgs = rng.random((3, 80, 90)) * 255
    params = [PSFParams(rx_px=r, ry_px=r * 0.7, theta_rad=0.3 * r) for r in (1.0, 4.0, 9.5)]
    kernels = [torch.as_tensor(airy_psf(p)) for p in params]
    out = convolve_reflect_torch(torch.as_tensor(imgs, dtype=torch.float32)[:, None], kernels)
    for i, p in enumerate(params):
        ref = convolve_reflect(imgs[i], airy_psf(p), dtype=np.float64)
        np.testing.assert_allclose(out[i, 0].numpy(), ref, rtol=1e-4, atol=1e-4 * 255)


def test_noise_moments_match_closed_form() -> None:
    p = DegradationParams(
        rx_px=2, ry_px=2, beta=2, theta_rad=0, gain=1.05, offset=10, sigma=4, dose=5
    )
    x = np.full((400, 500), 80.0)
    y = degrade(x, p, rng=3).astype(np.float64)
    n = y.size
    mean_true = 1.05 * 80 + 10
    var_true = mean_true / 5 + 16
    assert abs(y.mean() - mean_true) < 5 * math.sqrt(var_true / n)
    # Variance of the sample variance ~ 2 var^2 / n for near-Gaussian data; 6 sigma bound.
    assert abs(y.var() - var_true) < 6 * var_true * math.sqrt(2 / n)


def test_noise_terms_switch_off_and_clip_negative() -> None:
    p = DegradationParams(
        rx_px=2, ry_px=2, beta=2, theta_rad=0, gain=1.0, offset=-50, sigma=0, dose=3
    )
    x = np.full((100, 100), 10.0)
    y = degrade(x, p, rng=0, gaussian=False)
    assert np.all(y == 0)  # 10 - 50 < 0 is clipped before Poisson: zero counts
    clean = degrade(x, p, rng=0, poisson=False, gaussian=False)
    np.testing.assert_allclose(clean, -40.0, rtol=1e-6)
    raw = degrade(x, p, rng=0, blur=False, gain_offset=False, poisson=False, gaussian=False)
    np.testing.assert_array_equal(raw, x.astype(np.float32))


def test_seed_reproduces_and_differs() -> None:
    x = np.random.default_rng(0).random((64, 64)) * 255
    p = ParameterRanges().midpoint()
    np.testing.assert_array_equal(degrade(x, p, rng=7), degrade(x, p, rng=7))
    assert not np.array_equal(degrade(x, p, rng=7), degrade(x, p, rng=8))


def test_torch_degrade_statistics() -> None:
    p = DegradationParams(
        rx_px=3, ry_px=3, beta=2, theta_rad=0, gain=1.0, offset=5, sigma=2, dose=10
    )
    g = torch.Generator().manual_seed(0)
    y = degrade_torch(torch.full((4, 1, 128, 128), 50.0), p, generator=g).double()
    var_true = 55 / 10 + 4
    assert abs(y.mean().item() - 55) < 5 * math.sqrt(var_true / y.numel())
    assert abs(y.var().item() - var_true) < 6 * var_true * math.sqrt(2 / y.numel())


def test_ranges_midpoint_and_sampling() -> None:
    r = ParameterRanges()
    m = r.midpoint()
    assert (m.rx_px, m.beta, m.theta_rad, m.gain, m.offset, m.sigma, m.dose) == (
        15.5,
        1.95,
        1.57,
        1.045,
        13.0,
        5.5,
        25.5,
    )
    rng = np.random.default_rng(0)
    samples = r.sample_many(rng, 200)
    for name in ParameterRanges.model_fields:
        vals = np.array([getattr(s, name) for s in samples])
        lo, hi = getattr(r, name)
        assert vals.min() >= lo and vals.max() <= hi
        assert vals.std() > 0.2 * (hi - lo)  # uniform std is (hi - lo)/sqrt(12) ~ 0.29 (hi - lo)
    with pytest.raises(ValidationError):
        ParameterRanges(dose=(0.0, 5.0))
    with pytest.raises(ValidationError):
        ParameterRanges(rx_px=(5.0, 1.0))


def test_degrade_torch_matches_numpy_without_noise() -> None:
    rng = np.random.default_rng(5)
    imgs = rng.random((2, 60, 70)) * 255
    settings = [
        DegradationParams(
            rx_px=3, ry_px=2, beta=1.95, theta_rad=0.4, gain=1.05, offset=4, sigma=1, dose=9
        ),
        DegradationParams(
            rx_px=6.5, ry_px=6.5, beta=2.0, theta_rad=0, gain=0.99, offset=20, sigma=1, dose=9
        ),
    ]
    x = torch.as_tensor(imgs, dtype=torch.float32)[:, None]
    out = degrade_torch(x, settings, poisson=False, gaussian=False)
    for i, p in enumerate(settings):
        ref = degrade(imgs[i], p, poisson=False, gaussian=False)
        np.testing.assert_allclose(out[i, 0].numpy(), ref, rtol=1e-4, atol=1e-4 * 255)


def test_per_patch_sampling_gives_independent_settings() -> None:
    rng = np.random.default_rng(0)
    patches = ParameterRanges().sample_many(rng, 16)
    assert len({(p.rx_px, p.dose) for p in patches}) == 16
    again = ParameterRanges().sample_many(np.random.default_rng(0), 16)
    assert patches == again


def test_non_centrosymmetric_kernel_takes_the_general_path() -> None:
    rng = np.random.default_rng(7)
    x = rng.random((23, 31)) * 255
    k = rng.random((5, 5))  # arbitrary kernel: no symmetry
    direct = ndi.convolve(x, k, mode="reflect")
    np.testing.assert_allclose(convolve_reflect(x, k, dtype=np.float64), direct, atol=1e-9)
    out = convolve_reflect_torch(torch.as_tensor(x)[None, None], torch.as_tensor(k))
    np.testing.assert_allclose(out[0, 0].numpy(), direct, atol=1e-9)


def test_kernel_larger_than_image_repeats_reflection() -> None:
    x = np.random.default_rng(8).random((6, 9)) * 255
    k = airy_psf(PSFParams(rx_px=3, ry_px=2, theta_rad=0.2))  # 19 x 19 > 6 x 9
    # Reference by explicit symmetric padding (ndimage is unreliable for kernels >> image).
    direct = convolve2d(np.pad(x, 9, mode="symmetric"), k, mode="valid")
    np.testing.assert_allclose(convolve_reflect(x, k, dtype=np.float64), direct, atol=1e-9)
    out = convolve_reflect_torch(torch.as_tensor(x)[None, None], torch.as_tensor(k))
    np.testing.assert_allclose(out[0, 0].numpy(), direct, atol=1e-9)


def test_torch_half_precision_inputs_are_convolved_in_float32() -> None:
    x = torch.rand(2, 1, 40, 50) * 255
    k = torch.as_tensor(airy_psf(PSFParams(rx_px=2, ry_px=3, theta_rad=0.5)))
    ref = convolve_reflect_torch(x, k)
    out = convolve_reflect_torch(x.to(torch.bfloat16), k)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2.0)


def test_kernel_cache_hits_only_equal_kernels() -> None:
    from sem_physics.convolution import _spectrum_cache, clear_kernel_cache

    clear_kernel_cache()
    x = np.random.default_rng(9).random((40, 50)) * 255
    k1 = airy_psf(PSFParams(rx_px=2, ry_px=2))
    k2 = airy_psf(PSFParams(rx_px=2, ry_px=2.01))  # same size, different values
    a = convolve_reflect(x, k1, dtype=np.float64)
    b = convolve_reflect(x, k2, dtype=np.float64)
    assert len(_spectrum_cache) == 0  # first uses are not kept
    np.testing.assert_array_equal(convolve_reflect(x, k1, dtype=np.float64), a)
    assert len(_spectrum_cache) == 1  # k1 used again: kept
    np.testing.assert_array_equal(convolve_reflect(x, k1, dtype=np.float64), a)  # from cache
    np.testing.assert_allclose(a, ndi.convolve(x, k1, mode="reflect"), atol=1e-9)
    np.testing.assert_allclose(b, ndi.convolve(x, k2, mode="reflect"), atol=1e-9)
    for r in np.linspace(1.0, 1.5, 6):  # bounded: only the last four are kept
        for _ in range(2):
            convolve_reflect(x, airy_psf(PSFParams(rx_px=r, ry_px=r)), dtype=np.float64)
    assert len(_spectrum_cache) == 4
    clear_kernel_cache()
    assert not _spectrum_cache


def test_successive_calls_and_shapes_do_not_interfere() -> None:
    rng = np.random.default_rng(10)
    k = airy_psf(PSFParams(rx_px=1.5, ry_px=1.5))
    x1, x2 = rng.random((30, 30)), rng.random((30, 30))
    y1 = convolve_reflect(x1, k, dtype=np.float64).copy()
    y2 = convolve_reflect(x2, k, dtype=np.float64)
    np.testing.assert_allclose(y1, ndi.convolve(x1, k, mode="reflect"), atol=1e-12)
    np.testing.assert_allclose(y2, ndi.convolve(x2, k, mode="reflect"), atol=1e-12)
    y3 = convolve_reflect(x1[:, :17], k, dtype=np.float64)  # other shape, same kernel
    np.testing.assert_allclose(y3, ndi.convolve(x1[:, :17], k, mode="reflect"), atol=1e-12)


def test_torch_degrade_seeds_reproduce_and_small_patches_work() -> None:
    settings = ParameterRanges().sample_many(np.random.default_rng(3), 4)  # kernels up to 181
    x = torch.rand(4, 1, 48, 64) * 255  # patches smaller than most kernels
    a = degrade_torch(x, settings, generator=torch.Generator().manual_seed(5))
    b = degrade_torch(x, settings, generator=torch.Generator().manual_seed(5))
    c = degrade_torch(x, settings, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert torch.isfinite(a).all() and a.shape == x.shape
    clean = degrade_torch(x, settings, poisson=False, gaussian=False)
    for i, p in enumerate(settings):
        ref = degrade(x[i, 0].numpy(), p, poisson=False, gaussian=False)
        np.testing.assert_allclose(clean[i, 0].numpy(), ref, rtol=1e-4, atol=1e-4 * 255)


@pytest.mark.parametrize("radius", [6.0, 15.5])
def test_otf_of_the_airy_squared_psf_vanishes_beyond_one_over_r(radius: float) -> None:
    """Airy^2 (beta = 2) is the squared Fourier transform of a disc of radius 1/(2R) cycles/px:
    its OTF is the disc's autocorrelation, the "chinese hat" (2/pi)(acos s - s sqrt(1 - s^2)),
    s = |f| R, zero beyond |f| = 1/R. Whatever a line pattern holds past that frequency (at the
    midpoint, R = 15.5 px: the second harmonic of a 31-px pitch) is not in the blurred image."""
    k = airy_psf(PSFParams(rx_px=radius, ry_px=radius, beta=2.0, theta_rad=0.0))
    n, c = 2048, k.shape[0] // 2
    buf = np.zeros((n, n))
    buf[: k.shape[0], : k.shape[1]] = k
    otf = np.fft.fft2(np.roll(buf, (-c, -c), (0, 1))).real[0, : n // 2]  # along +x
    s = np.fft.fftfreq(n)[: n // 2] * radius
    hat = (2 / np.pi) * (
        np.arccos(np.minimum(s, 1)) - np.minimum(s, 1) * np.sqrt(1 - np.minimum(s, 1) ** 2)
    )
    assert np.abs(otf[s > 1.02]).max() < 2e-3  # the tails' truncation at 3 R leaves a trace
    # inside, the kernel's truncation to 6 R (a few per cent of the energy, renormalised)
    assert np.abs(otf - hat)[s <= 1].max() < 0.07
    assert otf[0] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("rx", "ry", "theta"), [(9.0, 4.0, 0.6), (5.0, 12.0, 2.2), (7.0, 7.0, 0.0)]
)
def test_shortest_period_is_where_the_otf_of_an_elliptical_psf_ends(rx, ry, theta) -> None:
    """Along x and along y of the image, the numerical OTF of the sampled kernel (beta = 2) is
    above the noise up to 1/period and gone past it, for rotated, elongated PSFs."""
    from sem_physics import shortest_period_px

    params = PSFParams(rx_px=rx, ry_px=ry, beta=2.0, theta_rad=theta)
    k = airy_psf(params)
    n, c = 1024, k.shape[0] // 2
    buf = np.zeros((n, n))
    buf[: k.shape[0], : k.shape[1]] = k
    otf = np.abs(np.fft.fft2(np.roll(buf, (-c, -c), (0, 1))))
    f = np.fft.fftfreq(n)[: n // 2]
    for direction, profile in ((0.0, otf[0, : n // 2]), (math.pi / 2, otf[: n // 2, 0])):
        period = shortest_period_px(params, direction)
        # the chinese hat is 0.037 at 0.9 of the cut-off and 0 past it (the kernel's truncation
        # at 3 max(Rx, Ry) leaves a few 1e-3)
        assert np.abs(profile[f * period > 1.03]).max() < 5e-3
        assert profile[f * period < 0.9].min() > 0.03
    assert shortest_period_px(params, 0.3) == pytest.approx(
        shortest_period_px(params, 0.3 + math.pi)
    )
    round_psf = PSFParams(rx_px=15.5, ry_px=15.5)
    assert shortest_period_px(round_psf, 1.0) == pytest.approx(15.5)
