"""Richardson-Lucy, Wiener and BM3D against the reference implementations they name
(scikit-image's ``richardson_lucy`` / ``wiener``, the ``bm3d`` package), and BM3D's noise
estimate against the true noise of the forward model (Poisson-Gaussian)."""

from __future__ import annotations

import numpy as np
import pytest
from baselines_testkit import lines_image
from sem_baselines import estimate_sigma, fixed_psf, get_restorer
from sem_physics import ParameterRanges, PSFParams, airy_psf, convolve_reflect, degrade, make_sample

SMALL_PSF = PSFParams(rx_px=1.5, ry_px=1.5)  # a 9 x 9 kernel: a cheap, short reach


def _blurred_noisy(shape: tuple[int, int] = (112, 128)) -> np.ndarray:
    """Lines blurred by SMALL_PSF plus Gaussian noise, kept positive (RL's domain)."""
    y = convolve_reflect(lines_image(shape, seed=3), airy_psf(SMALL_PSF), dtype=np.float64)
    return np.clip(y + np.random.default_rng(0).normal(0, 3, shape), 1.0, None)


@pytest.mark.parametrize("preset", ["adaptive", "paper"])
def test_plain_richardson_lucy_is_scikit_images_with_the_same_count(preset):
    """``iterations=n`` is n multiplicative updates. The adaptive preset's own FFT loop (plain:
    ``accelerate=False``) starts from ``mean(y)``, scikit-image from 0.5, but from a flat start
    the first update ``c * h~ ⊛ (y / (h ⊛ c))`` no longer depends on ``c``: with the image as it
    is (``boundary="none"``: zero outside, as scikit-image) both are equal everywhere. With
    the reflect extension they differ by design near the border only: ``x_n`` at a pixel
    depends on data within ``2 r n`` px (two convolutions of radius ``r`` per update), so
    beyond that distance from the border the two agree to float rounding."""
    from skimage.restoration import richardson_lucy

    y, n = _blurred_noisy(), 4
    kernel = airy_psf(SMALL_PSF)
    reach = 2 * (kernel.shape[0] // 2) * n
    ref = richardson_lucy(y / 255, kernel, num_iter=n, clip=False) * 255
    cfg = {"preset": preset, "psf": SMALL_PSF, "iterations": n, "clip": False}
    if preset == "adaptive":
        cfg["accelerate"] = False
    none = get_restorer("richardson-lucy", boundary="none", **cfg).restore(y)
    np.testing.assert_allclose(none, ref, rtol=1e-5)
    reflect = get_restorer("richardson-lucy", **cfg).restore(y)
    core = (slice(reach, -reach), slice(reach, -reach))
    np.testing.assert_allclose(reflect[core], ref[core], rtol=1e-5)
    assert np.abs(reflect - ref).max() > 1.0  # the border: zero outside vs mirrored image


def _wiener_tail(kernel: np.ndarray, balance: float, reach: int, grid: int = 512) -> float:
    """``sum |g(u)|`` over ``max(|u_y|, |u_x|) >= reach``, ``g`` the Wiener filter's impulse
    response ``F^-1[conj(H) / (|H|^2 + balance |D|^2)]`` on a grid large enough that its
    periodisation is negligible."""
    lap = np.array([[0.0, -1, 0], [-1, 4, -1], [0, -1, 0]])

    def centred(k: np.ndarray) -> np.ndarray:
        buf = np.zeros((grid, grid))
        buf[: k.shape[0], : k.shape[1]] = k
        return np.fft.fft2(np.roll(buf, (-(k.shape[0] // 2), -(k.shape[1] // 2)), axis=(0, 1)))

    h, d = centred(kernel), centred(lap)
    g = np.real(np.fft.ifft2(np.conj(h) / (np.abs(h) ** 2 + balance * np.abs(d) ** 2)))
    dist = np.minimum(np.arange(grid), grid - np.arange(grid))
    cheb = np.maximum(dist[:, None], dist[None, :])
    return float(np.abs(g)[cheb >= reach].sum())


@pytest.mark.parametrize("balance", [0.01, 0.3])
@pytest.mark.parametrize("preset", ["adaptive", "paper"])
def test_wiener_with_a_given_balance_is_scikit_images(preset, balance):
    """Same image, PSF and balance: ``boundary="none"`` is scikit-image's periodic Wiener (the
    adaptive preset's own FFT code included). With the reflect extension both apply the same
    linear filter ``g`` to two extensions of the image that agree on it and take its values,
    so at a pixel ``m`` px inside the border they differ by at most
    ``ptp(y) * sum_{|u| >= m} |g(u)|``: that bound, not a guessed tolerance."""
    from skimage.restoration import wiener

    y = _blurred_noisy()
    kernel = airy_psf(SMALL_PSF)
    ref = wiener(y / 255, kernel, balance, clip=False) * 255
    cfg = {"preset": preset, "psf": SMALL_PSF, "balance": balance, "clip": False}
    none = get_restorer("wiener", boundary="none", **cfg).restore(y)
    np.testing.assert_allclose(none, ref, atol=1e-3)
    reflect = get_restorer("wiener", **cfg).restore(y)
    m = 12
    bound = float(np.ptp(y)) * _wiener_tail(kernel, balance, m) + 1e-3  # + float32 rounding
    assert bound < 0.5  # the filter decays: the comparison means something
    core = (slice(m, -m), slice(m, -m))
    assert np.abs(reflect[core] - ref[core]).max() <= bound
    assert np.abs(reflect - ref).max() > 1.0  # the border: periodic wrap vs mirrored image


def test_richardson_lucy_borders_by_design_on_a_flat_image():
    """A flat image of 100 under the paper's 93-px PSF: scikit-image's zero boundary takes its
    border to 0 and overshoots sixfold inside; the reflect extension keeps it between 96 and
    111 (the zeros beyond the half-kernel extension still pull at the corners), the centre
    within 0.1 %."""
    from skimage.restoration import richardson_lucy

    y = np.full((128, 128), 100.0)
    ref = richardson_lucy(y / 255, fixed_psf(), num_iter=30, clip=False) * 255
    ours = get_restorer("richardson-lucy", preset="paper", clip=False).restore(y)
    assert ref.min() < 10 and ref.max() > 200
    assert 90 < ours.min() and ours.max() < 115
    assert ours[64, 64] == pytest.approx(100.0, rel=1e-3)


@pytest.mark.parametrize("profile", ["np", "lc"])
def test_bm3d_is_the_bm3d_package_with_the_same_sigma_and_profile(profile):
    """One thread on both sides: bit for bit ``bm3d.bm3d(x / 255, sigma_psd, profile) * 255``,
    clipped, with the estimated sigma and with a fixed one."""
    import bm3d
    from sem_baselines.classical.bm3d import BM3DProfileLC

    rng = np.random.default_rng(8)
    noisy = (lines_image((64, 72), seed=2) + rng.normal(0, 12, (64, 72))).astype(np.float32)
    x = noisy.astype(np.float64) / 255.0
    for sigma in (None, 0.05):
        r = get_restorer("bm3d", threads=1, profile=profile, sigma=sigma)
        out = r.restore(noisy)
        assert r.last_sigma == (estimate_sigma(x) if sigma is None else sigma)
        prof = (bm3d.BM3DProfile if profile == "np" else BM3DProfileLC)()
        prof.num_threads = 1
        ref = np.asarray(bm3d.bm3d(x, sigma_psd=r.last_sigma, profile=prof)) * 255.0
        np.testing.assert_array_equal(out, np.clip(ref, 0, 255).astype(np.float32))


def _rms_noise_std(x: np.ndarray, p) -> tuple[np.ndarray, float]:
    """A degraded image and the root mean noise variance of the forward model at ``p``:
    ``sqrt(mean(max(z, 0) / dose) + sigma^2)``, ``z`` the noise-free ``a (x ⊛ h) + b``."""
    z = degrade(x, p, rng=0, poisson=False, gaussian=False).astype(np.float64)
    y = degrade(x, p, rng=1).astype(np.float64)
    return y, float(np.sqrt(np.mean(np.clip(z, 0, None) / p.dose + p.sigma**2)))


def test_bm3d_sigma_estimate_on_poisson_gaussian_images():
    """The forward model's noise is Poisson-Gaussian (signal-dependent); BM3D takes one
    sigma. Against the root mean noise variance: within 5 % at the midpoint setting, within
    20 % (median within 3 %) over settings drawn from the paper's ranges, and biased low
    where the blurred edges change by more than the noise from pixel to pixel (the least
    noise of the ranges: dose 50, sigma 1), most on a 3-px blur."""
    ranges = ParameterRanges()
    mid = ranges.midpoint()
    rng = np.random.default_rng(0)
    ratios = []
    for kind in ("lines", "contacts", "texture"):
        x = make_sample(kind, (128, 128), seed=3)
        y, true = _rms_noise_std(x, mid)
        assert estimate_sigma(y / 255) * 255 == pytest.approx(true, rel=0.05)
        for p in ranges.sample_many(rng, 12):
            y, true = _rms_noise_std(x, p)
            ratios.append(estimate_sigma(y / 255) * 255 / true)
    assert 0.8 < min(ratios) and max(ratios) < 1.05
    assert np.median(ratios) == pytest.approx(1.0, abs=0.03)
    lines = make_sample("lines", (128, 128), seed=3)
    quiet = mid.model_copy(update={"dose": 50.0, "sigma": 1.0})
    sharp = quiet.model_copy(update={"rx_px": 3.0, "ry_px": 3.0})
    low = [
        estimate_sigma(y / 255) * 255 / t
        for y, t in (_rms_noise_std(lines, p) for p in (quiet, sharp))
    ]
    assert low[1] < low[0] < 0.85
