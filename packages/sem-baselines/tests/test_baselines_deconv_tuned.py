"""Wiener and Richardson-Lucy tuned from the noise level, with the true and the blind PSF.

S→S midpoint cases (every parameter at the middle of the paper's range: Rx = Ry = 15.5 px,
sigma = 5.5, dose = 25.5) on the project's sample images and on real micrograph crops.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from baselines_testkit import psnr
from sem_baselines import get_restorer
from sem_physics import ParameterRanges, crop_info_bar, degrade, make_sample, read_image

MID = ParameterRanges().midpoint()
SHAPE = (480, 640)  # the estimate needs a realistic field: at 320 x 400 radii scatter by 40 %
REAL = ["ks00x_zeiss_tiff_meta/test.tif", "jni_skan/rbc1.tif"]


def focused_images() -> list[tuple[str, np.ndarray]]:
    images = [(k, make_sample(k, SHAPE, seed=3)) for k in ("lines", "contacts", "texture")]
    folder = os.environ.get("SEM_CORPUS_DATA")
    if not folder:
        pytest.skip("SEM_CORPUS_DATA not set (real micrographs for the midpoint cases)")
    for rel in REAL:
        img = read_image(Path(folder) / rel)
        crop = crop_info_bar(img.data, img.info_bar_rows)
        h, w = crop.shape
        top, left = (h - SHAPE[0]) // 2, (w - SHAPE[1]) // 2
        images.append((rel, crop[top : top + SHAPE[0], left : left + SHAPE[1]]))
    return images


@pytest.fixture(scope="module")
def cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    return [(n, x, degrade(x, MID, rng=i)) for i, (n, x) in enumerate(focused_images())]


@pytest.mark.parametrize("name", ["wiener", "richardson-lucy"])
def test_true_psf_never_below_the_input_and_blind_within_half_a_db(name: str, cases) -> None:
    for label, focused, observed in cases:
        base = psnr(focused, observed)
        true = get_restorer(name, psf=MID.psf)
        blind = get_restorer(name)
        p_true = psnr(focused, true.restore(observed))
        p_blind = psnr(focused, blind.restore(observed))
        assert p_true >= base, (label, p_true, base)
        assert abs(p_blind - p_true) <= 0.5, (label, p_blind, p_true)
        # which PSF each used is recorded
        assert true.last_params["psf_source"] == "given"
        assert blind.last_params["psf_source"] == "estimated"
        assert blind.last_params["psf"]["rx_px"] == pytest.approx(15.5, rel=0.25), label


def test_paper_preset_keeps_the_fixed_settings(cases) -> None:
    _, _, observed = cases[0]
    rl = get_restorer("richardson-lucy", preset="paper")
    rl.restore(observed)
    assert rl.last_params["iterations"] == 30 and rl.last_params["psf_source"] == "paper"
    assert rl.last_params["psf"]["rx_px"] == 15.5 and rl.last_params["psf"]["theta_rad"] == 0
    w = get_restorer("wiener", preset="paper")
    w.restore(observed)
    assert w.last_params["balance"] == 0.01 and w.last_params["psf_source"] == "paper"


def test_regularisation_follows_the_noise_level() -> None:
    # More noise -> a larger Wiener balance and fewer RL iterations (the discrepancy principle).
    x = make_sample("texture", SHAPE, seed=4)
    balances, iterations = [], []
    for sigma in (2.0, 8.0):
        y = degrade(x, MID.model_copy(update={"sigma": sigma, "dose": 1e6}), rng=0)
        w = get_restorer("wiener", psf=MID.psf, noise_var=sigma**2)
        w.restore(y)
        rl = get_restorer("richardson-lucy", psf=MID.psf, noise_var=sigma**2)
        rl.restore(y)
        balances.append(w.last_params["balance"])
        iterations.append(rl.last_params["iterations"])
        assert rl.last_params["stopped_by"] in ("discrepancy", "stall", "max_iterations")
    assert balances[1] > 2 * balances[0], balances
    assert iterations[1] < iterations[0], iterations


@pytest.mark.parametrize("sigma", [4.0, 8.0, 16.0])
def test_richardson_lucy_stops_where_the_fit_reaches_the_noise_or_stalls(sigma) -> None:
    """The discrepancy principle with a stall guard, checked against the noise variance and the
    iterate before the last (the same restorer run one iteration less): either the residual
    reached sigma^2 at the last iterate and not before, or it is still above sigma^2 and the
    last iteration lowered it by less than STALL * sigma^2."""
    from sem_baselines.classical.richardson_lucy import STALL

    x = make_sample("texture", SHAPE, seed=4)
    y = degrade(x, MID.model_copy(update={"sigma": sigma, "dose": 1e6}), rng=0)
    rl = get_restorer("richardson-lucy", psf=MID.psf, noise_var=sigma**2)
    rl.restore(y)
    n, resid = rl.last_params["iterations"], rl.last_params["residual_var"]
    before = get_restorer("richardson-lucy", psf=MID.psf, noise_var=sigma**2, iterations=n - 1)
    before.restore(y)
    previous = before.last_params["residual_var"]
    assert previous > sigma**2  # the iterate before the last had not fitted to the noise
    if rl.last_params["stopped_by"] == "discrepancy":
        assert resid <= sigma**2
    else:
        assert rl.last_params["stopped_by"] == "stall"
        assert sigma**2 < resid and previous - resid < STALL * sigma**2


def _accelerated_reference(y: np.ndarray, kernel: np.ndarray, n: int) -> np.ndarray:
    """Biggs-Andrews accelerated RL written out from its definition (fixed count, the
    convolutions zero-extended beyond ``y``), to check ``richardson_lucy_discrepancy`` against."""
    from scipy.signal import fftconvolve
    from sem_baselines.classical.richardson_lucy import MAX_ACCELERATION

    def conv(img: np.ndarray) -> np.ndarray:
        return fftconvolve(img, kernel, mode="same")

    def mse(z: np.ndarray) -> float:
        return float(np.mean((y - conv(z)) ** 2))

    x = np.full_like(y, y.mean())
    z, x_prev, steps, previous = x.copy(), None, [], float("inf")
    for _ in range(n):
        if len(steps) == 2 and mse(z) > previous:  # overshot: the plain step, history restarts
            z, steps = x.copy(), []
        previous = mse(z)
        new = z * conv(y / np.maximum(conv(z), 1e-6))
        steps = [new - z, *steps][:2]
        x_prev, x = x, new
        z = x.copy()
        if len(steps) == 2:
            a = float(np.sum(steps[0] * steps[1]) / np.sum(steps[1] * steps[1]))
            z = np.maximum(x + min(max(a, 0.0), MAX_ACCELERATION) * (x - x_prev), 1e-6)
    if len(steps) == 2 and mse(z) > previous:
        z = x
    return z


def test_accelerated_richardson_lucy_follows_its_definition() -> None:
    from sem_baselines.classical.richardson_lucy import richardson_lucy_discrepancy
    from sem_physics import airy_psf

    x = make_sample("contacts", (64, 80), seed=1).astype(np.float64)
    psf = MID.psf.model_copy(update={"rx_px": 6.0, "ry_px": 3.0})
    kernel = airy_psf(psf)
    y = np.maximum(degrade(x, MID.model_copy(update={"dose": 1e6}), rng=0), 0).astype(float)
    core = (slice(0, 64), slice(0, 80))
    for n in (1, 2, 3, 6):
        out, done, _ = richardson_lucy_discrepancy(y, kernel, 0.0, 0, core, fixed=n)
        assert done == n
        np.testing.assert_allclose(out, _accelerated_reference(y, kernel, n), rtol=1e-4, atol=1e-3)


def test_acceleration_reaches_in_few_steps_what_plain_rl_needs_many_for() -> None:
    """A large PSF (20 x 9 px) on a noise-free image: 10 accelerated iterations fit the data
    better than 20 plain ones do, and 20 accelerated ones land nearer the focused image."""
    x = make_sample("resist", (192, 256), seed=2).astype(np.float64)
    setting = MID.model_copy(
        update={"rx_px": 20.0, "ry_px": 9.0, "theta_rad": 0.4, "gain": 1.0, "offset": 0.0}
    )
    y = degrade(x, setting, rng=0, poisson=False, gaussian=False)

    def run(n: int, accelerate: bool) -> tuple[float, float]:
        rl = get_restorer(
            "richardson-lucy", psf=setting.psf, iterations=n, accelerate=accelerate, clip=False
        )
        out = rl.restore(y)
        return rl.last_params["residual_var"], float(np.sqrt(np.mean((out - x) ** 2)))

    fast10, _ = run(10, True)
    _, fast20_err = run(20, True)
    plain20, plain20_err = run(20, False)
    assert fast10 < plain20 / 3, (fast10, plain20)
    assert fast20_err < 0.8 * plain20_err, (fast20_err, plain20_err)


def test_wiener_balance_solves_the_discrepancy_equation() -> None:
    """``discrepancy_balance`` returns the lambda whose in-band residual mean square,
    ``sum |Y lambda D^2 / (H^2 + lambda D^2)|^2 / (n n_band)`` over ``|H| > band``, equals
    ``tau * noise_var`` (the residual written out here from its definition)."""
    from sem_baselines.classical.wiener import BAND_OTF, discrepancy_balance

    rng = np.random.default_rng(0)
    fy, fx = np.meshgrid(np.fft.fftfreq(48), np.fft.rfftfreq(48), indexing="ij")
    h = np.exp(-(fy**2 + fx**2) / (2 * 0.08**2)).astype(complex)  # a Gaussian OTF
    d2 = (fy**2 + fx**2) ** 2 * 1e3  # a Laplacian-like regulariser
    spec = (rng.normal(size=h.shape) + 1j * rng.normal(size=h.shape)) * 40.0
    weights = np.ones((1, h.shape[1]))
    band = np.abs(h) > BAND_OTF
    n_total, n_band = float(h.size), float(band.sum())

    def residual(lam: float) -> float:
        ratio = lam * d2 / (np.abs(h) ** 2 + lam * d2)
        return float((np.abs(spec) ** 2 * ratio**2)[band].sum()) / (n_total * n_band)

    ceiling = residual(1e12)  # the residual of lambda -> infinity (the data itself)
    for share, tau in ((0.05, 1.0), (0.3, 1.0), (0.3, 1.5)):
        noise_var = share * ceiling / tau
        lam = discrepancy_balance(spec, h, d2, noise_var, weights, tau=tau)
        assert residual(lam) == pytest.approx(tau * noise_var, rel=2e-3), (share, tau)


@pytest.mark.parametrize("shape", [(64, 64), (63, 97), (101, 50), (7, 8)])
def test_the_in_place_inverse_transform_equals_scipys(shape: tuple[int, int]) -> None:
    """``irfft2_inplace`` (one spectrum-sized buffer less at the peak of RL and Wiener) is
    ``scipy.fft.irfft2``: bit for bit with the scipy this was measured on, to rounding in any
    case (the order of pocketfft's scaling is an implementation detail)."""
    import scipy.fft as sfft
    from sem_baselines.classical.deconv import irfft2_inplace

    spec = sfft.rfft2(np.random.default_rng(sum(shape)).normal(size=shape))
    expected = sfft.irfft2(spec, s=shape)
    got = irfft2_inplace(spec.copy(), shape)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
