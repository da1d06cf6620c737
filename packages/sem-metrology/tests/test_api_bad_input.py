"""Bad input to the public API: a clear refusal or warning, never NaN, a numpy traceback or
plausible numbers from an image that cannot give them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage
from sem_metrology import (
    MetrologyInputError,
    make_line_image,
    measure_contacts,
    measure_lines,
    niqe,
    noise_ceiling_psnr,
    noise_sigma,
    profile_psd,
    psnr,
    ssim,
)
from sem_physics import DegradationParams, make_sample


def _blobs(seed: int, sigma: float) -> np.ndarray:
    b = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=(256, 256)), sigma)
    return (b - b.min()) / (b.max() - b.min()) * 255.0


@pytest.mark.parametrize(
    "image",
    [make_sample("texture", (256, 256), 0), make_sample("texture", (480, 640), 5), _blobs(0, 4)],
    ids=["texture-256", "texture-480", "blobs"],
)
def test_textures_and_blobs_are_no_contact_array(image: np.ndarray) -> None:
    m = measure_contacts(image, 1.0)
    assert not m.valid and m.cd_nm is None and m.n_holes == 0
    assert "no contact-hole array" in m.reason and "% of the image" in m.reason


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_contact_arrays_stay_measured(seed: int) -> None:
    m = measure_contacts(make_sample("contacts", (256, 256), seed), 1.0)
    assert m.valid and m.n_holes >= 20 and not m.reason


def _sparse_ellipses(ellipticity: float, pitch: int = 80, cd: float = 16.0) -> np.ndarray:
    """A 512-px grid of holes of one size and axis (30°), about 3 % of the image."""
    import math

    a, b = cd / 2 / math.sqrt(1 - ellipticity), cd / 2 * math.sqrt(1 - ellipticity)
    t = math.radians(30)
    ss, n = 4, 512
    yy, xx = (np.mgrid[0 : n * ss, 0 : n * ss] + 0.5) / ss - 0.5
    cover = np.zeros_like(xx)
    for cy in np.arange(pitch / 2, n, pitch):
        for cx in np.arange(pitch / 2, n, pitch):
            u = (xx - cx) * math.cos(t) + (yy - cy) * math.sin(t)
            v = -(xx - cx) * math.sin(t) + (yy - cy) * math.cos(t)
            cover[(u / a) ** 2 + (v / b) ** 2 <= 1] = 1
    cover = cover.reshape(n, ss, n, ss).mean(axis=(1, 3))
    noise = np.random.default_rng(0).normal(0, 5, (n, n))
    return ndimage.gaussian_filter(140 - 100 * cover, 1) + noise


@pytest.mark.parametrize("ellipticity", [0.2, 0.5])
def test_a_sparse_array_of_elliptical_holes_is_measured(ellipticity: float) -> None:
    """Sparse (3 % of the image) and elliptical, but of one size and axis: an array (it was
    refused as a texture's specks)."""
    m = measure_contacts(_sparse_ellipses(ellipticity), 1.0)
    assert m.valid, m.reason
    assert m.n_holes == 36 and m.cd_nm == pytest.approx(16.0, rel=0.05)
    assert m.ellipticity == pytest.approx(ellipticity, abs=0.05)


def test_one_clean_square_hole_names_the_two_grey_levels() -> None:
    z = np.full((256, 256), 180.0)
    z[100:130, 100:130] = 30.0
    m = measure_contacts(z, 1.0)
    assert not m.valid and "saturated" not in m.reason
    assert m.reason.startswith("two grey levels only (30 on 1.4 %, 180 on 98.6 %")
    noisy = measure_contacts(z + np.random.default_rng(0).normal(0, 3, z.shape), 1.0)
    assert not noisy.valid and noisy.reason.startswith("too few contact holes: 1 measured")
    one = measure_contacts(z + np.random.default_rng(0).normal(0, 3, z.shape), 1.0, min_holes=1)
    assert one.valid and one.cd_nm == pytest.approx(2 * np.sqrt(900 / np.pi), abs=0.5)


def _tilted_lines(angle_deg: float) -> tuple[np.ndarray, float]:
    s = make_line_image(n_lines=8, shape=(256, 256), seed=0)
    big = ndimage.rotate(np.tile(s.image, (2, 2)), angle_deg, reshape=False, order=1)
    return big[128:384, 128:384], s.pixel_size_nm


@pytest.mark.parametrize("angle", [20.0, -20.0, 10.0])
def test_smile_warns_of_lines_its_tilt_search_left_tilted(angle: float) -> None:
    image, px = _tilted_lines(angle)
    m = measure_lines(image, px)
    tilted = [w for w in m.warnings if "lines are tilted by about" in w]
    assert len(tilted) == 1 and "not to be trusted" in tilted[0]
    shown = float(tilted[0].split("tilted by about ")[1].split("°")[0])
    assert shown == pytest.approx(abs(angle), abs=2.0)


@pytest.mark.parametrize("angle", [0.0, 3.0, 5.0])
def test_smile_tilt_warning_spares_lines_its_search_turned(angle: float) -> None:
    image, px = _tilted_lines(angle)
    m = measure_lines(image, px)
    assert m.valid and not [w for w in m.warnings if "tilted by about" in w]


def test_real_line_image_gets_no_tilt_warning(real_line_image: np.ndarray) -> None:
    m = measure_lines(real_line_image, 0.827, bootstrap_samples=0)
    assert m.valid and not [w for w in m.warnings if "tilted by about" in w]


def test_noise_of_an_all_zero_image_is_zero_without_numpy_warnings() -> None:
    zero = np.zeros((64, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert noise_sigma(zero) == 0.0
        assert noise_ceiling_psnr(zero) == float("inf")


def test_profile_psd_names_the_non_finite_sample() -> None:
    p = np.random.default_rng(0).normal(size=(3, 64))
    p[1, 5] = np.nan
    with pytest.raises(MetrologyInputError, match="first in profile 1 at sample 5"):
        profile_psd(p, 1.0)
    with pytest.raises(MetrologyInputError, match="1 NaN or infinite"):
        profile_psd(np.where(np.arange(64) == 9, np.inf, 0.0), 1.0)


_IMG = np.random.default_rng(0).uniform(0, 255, (128, 128))
_METRICS = {
    "niqe": lambda a: niqe(a),
    "psnr": lambda a: psnr(_IMG, a),
    "ssim": lambda a: ssim(a, _IMG),
    "noise_sigma": noise_sigma,
}


@pytest.mark.parametrize("metric", sorted(_METRICS))
@pytest.mark.parametrize(
    "bad",
    [_IMG.astype(complex), _IMG > 128, _IMG.astype(object)],
    ids=["complex", "bool", "object"],
)
def test_quality_metrics_refuse_non_real_dtypes(metric: str, bad: np.ndarray) -> None:
    with pytest.raises(MetrologyInputError, match=f"must be real numeric, got dtype {bad.dtype}"):
        _METRICS[metric](bad)


@pytest.mark.parametrize("value", [100.0, -5.0])
def test_niqe_refuses_constant_images_clearly(value: float) -> None:
    pytest.importorskip("pyiqa")
    with pytest.raises(MetrologyInputError, match=r"constant.*niqe needs an image with contrast"):
        niqe(np.full((128, 128), value))


@pytest.mark.filterwarnings("ignore:cov")
def test_niqe_refuses_degenerate_statistics_clearly() -> None:
    pytest.importorskip("pyiqa")
    ramp = np.tile(np.linspace(0.0, 255.0, 128), (128, 1))
    with pytest.raises(MetrologyInputError, match="niqe cannot score"):
        niqe(ramp)


def test_truth_warns_when_only_one_line_is_measured() -> None:
    noisy = DegradationParams(
        rx_px=3.5, ry_px=3.5, beta=2.0, theta_rad=0.0, gain=1.0, offset=10.0, sigma=10, dose=10
    )
    s = make_line_image(n_lines=1, shape=(256, 256), seed=0, degradation=noisy)
    m = measure_lines(s.image, s.pixel_size_nm, convention="truth")
    assert m.valid and m.n_lines == 1 and m.cd_std_nm is None and m.pitch_nm is None
    assert any(w.startswith("one line measured") for w in m.warnings)
    two = make_line_image(n_lines=2, shape=(256, 256), seed=0, degradation=noisy)
    m2 = measure_lines(two.image, two.pixel_size_nm, convention="truth")
    assert m2.valid and not any(w.startswith("one line") for w in m2.warnings)
