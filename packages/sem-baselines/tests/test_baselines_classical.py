"""Richardson-Lucy, Wiener (closed form) and BM3D (noise estimate)."""

from __future__ import annotations

import numpy as np
import pytest
from baselines_testkit import lines_image, psnr
from scipy.ndimage import median_filter
from sem_baselines import estimate_sigma, fixed_psf, get_restorer
from sem_baselines.classical.bm3d import HIGHPASS_MAD_FACTOR, MAD_TO_SIGMA
from sem_baselines.classical.deconv import (
    DEFAULT_PSF,
    MIN_NOISE_VAR,
    UNIFORM_IMAGE_NOTE,
    choose_psf,
    pad_reflect,
)
from sem_physics import PSFParams, convolve_reflect


def test_fixed_psf_is_the_spec_kernel():
    k = fixed_psf()
    assert k.shape == (93, 93)  # ceil(6 * 15.5) = 93, odd
    assert k.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(k, k.T, atol=1e-15)  # round and theta = 0


@pytest.mark.parametrize("preset", ["paper", "adaptive"])
@pytest.mark.parametrize("name", ["richardson-lucy", "wiener"])
def test_deconvolution_raises_psnr_on_noise_free_blur(name, preset):
    # structures (32-px period, ~10-px blobs) above the PSF's cut-off (~15 px period)
    clean = lines_image((96, 96), seed=1, period_px=32, blob_px=12)
    blurred = convolve_reflect(clean, fixed_psf(), dtype=np.float64).astype(np.float32)
    restored = get_restorer(name, preset=preset, psf=DEFAULT_PSF).restore(blurred)
    assert psnr(clean, restored) > psnr(clean, blurred) + 3.0


def _centred_transfer(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """FFT of ``kernel`` placed with its centre at pixel (0, 0) of a periodic ``shape`` grid."""
    buf = np.zeros(shape)
    k0, k1 = kernel.shape
    buf[:k0, :k1] = kernel
    buf = np.roll(buf, (-(k0 // 2), -(k1 // 2)), axis=(0, 1))
    return np.fft.fft2(buf)


def _wiener_closed_form(y: np.ndarray, kernel: np.ndarray, balance: float) -> np.ndarray:
    lap = np.array([[0.0, -1, 0], [-1, 4, -1], [0, -1, 0]])
    h = _centred_transfer(kernel, y.shape)
    d = _centred_transfer(lap, y.shape)
    x = np.conj(h) * np.fft.fft2(y) / (np.abs(h) ** 2 + balance * np.abs(d) ** 2)
    return np.real(np.fft.ifft2(x))


def test_a_noise_level_that_cannot_be_estimated_is_noted_with_the_floor_used():
    """Under 32 px a side the estimate fails: with a given PSF the noise level is the floor,
    which the choice says (it flattened nothing but regularised a noisy strip hardly at all),
    and says nothing when the caller gave the noise variance."""
    strip = np.random.default_rng(0).normal(120, 20, (31, 300))
    psf = PSFParams(rx_px=3, ry_px=3)
    floor = choose_psf(strip, "adaptive", psf, None)
    assert floor.noise_var == MIN_NOISE_VAR and floor.source == "given"
    assert floor.noise_note is not None and "too small" in floor.noise_note
    assert floor.as_dict()["noise_note"] == floor.noise_note
    given = choose_psf(strip, "adaptive", psf, 400.0)
    assert given.noise_var == 400.0 and given.noise_note is None
    assert "noise_note" not in given.as_dict()
    wide = choose_psf(np.random.default_rng(0).normal(120, 20, (64, 300)), "adaptive", psf, None)
    assert wide.noise_note is None and wide.noise_var > 100  # estimated: about 20² = 400


def test_a_uniform_image_gets_the_note_that_nothing_is_to_restore():
    """No PSF or noise level changes a uniform image: with or without a given PSF the choice
    notes the one uniform-image sentence (``sem restore``'s error says the same), not the
    noise floor's advice."""
    flat = np.full((64, 64), 120.0)
    for psf in (PSFParams(rx_px=3, ry_px=3), None):
        choice = choose_psf(flat, "adaptive", psf, None)
        assert choice.noise_note == UNIFORM_IMAGE_NOTE and "noise_var" not in choice.noise_note
    assert UNIFORM_IMAGE_NOTE.startswith("uniform image (every pixel the same): nothing to restore")


@pytest.mark.parametrize("balance", [0.01, 0.3])
def test_wiener_matches_fourier_closed_form(balance):
    rng = np.random.default_rng(0)
    y = lines_image((100, 120), seed=2) + rng.normal(0, 5, (100, 120))
    kernel = fixed_psf()
    periodic = get_restorer(
        "wiener", preset="paper", balance=balance, boundary="none", clip=False
    ).restore(y)
    np.testing.assert_allclose(periodic, _wiener_closed_form(y, kernel, balance), atol=2e-3)
    # reflective boundary: the closed form on the mirrored extension, cropped back
    p = kernel.shape[0] // 2
    ref = _wiener_closed_form(pad_reflect(y, p), kernel, balance)[p:-p, p:-p]
    reflect = get_restorer("wiener", preset="paper", balance=balance, clip=False).restore(y)
    np.testing.assert_allclose(reflect, ref, atol=2e-3)


def test_richardson_lucy_is_one_multiplicative_update_per_iteration():
    # One iteration from the constant start 0.5 on a periodic-free interior: x1 = 0.5 * (h~ * (y / (h * 0.5)))
    y = lines_image((64, 64), seed=4)
    out = get_restorer("richardson-lucy", preset="paper", iterations=1, clip=False).restore(y)
    kernel = fixed_psf()
    p = kernel.shape[0] // 2
    ext = pad_reflect(y.astype(np.float64) / 255, p)
    from scipy.signal import fftconvolve

    conv = fftconvolve(np.full_like(ext, 0.5), kernel, mode="same") + 1e-12
    upd = 0.5 * fftconvolve(ext / conv, kernel[::-1, ::-1], mode="same")
    np.testing.assert_allclose(out, (upd[p:-p, p:-p] * 255).astype(np.float32), rtol=1e-4)


def test_highpass_mad_factor_matches_a_fresh_simulation():
    rng = np.random.default_rng(123)
    n = rng.standard_normal((1024, 1024))
    r = n - median_filter(n, size=3, mode="reflect")
    raw = MAD_TO_SIGMA * np.median(np.abs(r - np.median(r)))
    assert raw == pytest.approx(HIGHPASS_MAD_FACTOR, abs=0.006)


@pytest.mark.parametrize("sigma", [0.01, 0.03, 0.08])
@pytest.mark.parametrize("scene", ["flat", "defocused"])
def test_sigma_estimate_within_15_percent(sigma, scene):
    rng = np.random.default_rng(int(sigma * 1000))
    clean = np.full((128, 128), 0.4)
    if scene == "defocused":  # lines blurred by the deployment PSF, the case BM3D meets
        clean = convolve_reflect(lines_image((128, 128), seed=5), fixed_psf(), np.float64) / 255
    est = estimate_sigma(clean + rng.normal(0, sigma, clean.shape))
    assert est == pytest.approx(sigma, rel=0.15)
    raw = estimate_sigma(clean + rng.normal(0, sigma, clean.shape), correct_highpass=False)
    assert raw == pytest.approx(HIGHPASS_MAD_FACTOR * sigma, rel=0.15)


def test_sigma_estimate_is_biased_low_on_sharp_edges():
    # documented limitation: steps much larger than the noise make the median track the centre
    rng = np.random.default_rng(0)
    sharp = lines_image((128, 128), seed=5) / 255.0
    assert estimate_sigma(sharp + rng.normal(0, 0.01, sharp.shape)) < 0.85 * 0.01


def test_bm3d_raises_psnr_and_reports_its_sigma():
    rng = np.random.default_rng(7)
    clean = lines_image((64, 64), seed=6)
    noisy = (clean + rng.normal(0, 15, clean.shape)).astype(np.float32)
    r = get_restorer("bm3d")
    out = r.restore(noisy)
    assert psnr(clean, out) > psnr(clean, noisy) + 3.0
    assert r.last_sigma == pytest.approx(15 / 255, rel=0.2)


def test_bm3d_leaves_a_noise_free_constant_image_alone():
    flat = np.full((32, 32), 80.0, np.float32)
    np.testing.assert_allclose(get_restorer("bm3d").restore(flat), flat, atol=1e-3)


def test_bm3d_threads_follow_torch_and_one_thread_is_the_package_default_output():
    import bm3d
    import torch

    rng = np.random.default_rng(8)
    noisy = (lines_image((64, 72), seed=2) + rng.normal(0, 12, (64, 72))).astype(np.float32)
    assert get_restorer("bm3d")._profile().num_threads == torch.get_num_threads()
    one = get_restorer("bm3d", threads=1)
    assert one._profile().num_threads == 1
    out = one.restore(noisy)
    np.testing.assert_array_equal(out, one.restore(noisy))  # deterministic
    # the package's "np" profile by name (its own thread count: last digits may differ)
    x = noisy.astype(np.float64) / 255.0
    ref = bm3d.bm3d(x, sigma_psd=one.last_sigma, profile="np") * 255.0
    np.testing.assert_allclose(out, np.clip(ref, 0, 255), atol=0.02)
    assert float(np.abs(out - noisy).max()) > 1.0  # it did denoise
    with pytest.raises(ValueError, match="threads"):
        get_restorer("bm3d", threads=0)


def test_bm3d_fast_profile_has_the_reference_settings_and_still_denoises():
    from sem_baselines.classical.bm3d import BM3DProfileLC

    lc, np_ = BM3DProfileLC(), get_restorer("bm3d")._profile()
    # the reference implementation's 'lc' profile (BM3D.m): Nstep 6, Ns 25, Nstep_wiener 5,
    # N2_wiener 16, Ns_wiener 25; everything else as 'np'
    assert (lc.step_ht, lc.search_window_ht) == (6, 25)
    assert (lc.step_wiener, lc.max_3d_size_wiener, lc.search_window_wiener) == (5, 16, 25)
    assert (lc.bs_ht, lc.max_3d_size_ht, lc.bs_wiener) == (np_.bs_ht, np_.max_3d_size_ht, 8)
    rng = np.random.default_rng(9)
    clean = lines_image((192, 192), seed=3)
    noisy = (clean + rng.normal(0, 15, clean.shape)).astype(np.float32)
    fast = get_restorer("bm3d", profile="lc", threads=1).restore(noisy)
    full = get_restorer("bm3d", threads=1).restore(noisy)
    assert psnr(clean, fast) > psnr(clean, noisy) + 3.0
    # sparser reference blocks cost some PSNR on sharp noisy lines (1.5 dB here), never a gain
    assert psnr(clean, full) - 2.5 < psnr(clean, fast) < psnr(clean, full)
