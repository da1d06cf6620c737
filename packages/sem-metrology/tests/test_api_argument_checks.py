"""Bad arguments to the generators, the measurements and the quality metrics: one TypeError
or ValueError naming the argument, never NaN output or an error from deep inside numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sem_metrology import MetrologyInputError, measure_contacts, measure_lines, psnr, ssim
from sem_metrology.synthetic import make_contact_image, make_line_image

NAN, INF = float("nan"), float("inf")


def test_crossing_edges_name_the_geometry_that_makes_them_cross() -> None:
    """37 lines (the default) in 256 px: 2.79 nm lines and spaces against 1.2 nm roughness."""
    with pytest.raises(ValueError, match=r"edges cross") as info:
        make_line_image(shape=(256, 256), seed=0)
    text = str(info.value)
    pitch_nm = 256 / 38 * 0.827  # the default pitch: width / (n_lines + 1)
    assert f"lines {pitch_nm / 2:.3g} nm wide with spaces {pitch_nm / 2:.3g} nm" in text
    assert "(37 lines in 256 px at 0.827 nm/px)" in text and "sigma_nm=1.2" in text
    make_line_image(n_lines=8, shape=(256, 256), seed=0)  # fewer lines: the edges stay apart


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"n_lines": 2.5}, TypeError, "n_lines"),
        ({"n_lines": True}, TypeError, "n_lines"),
        ({"n_lines": 0}, ValueError, "n_lines"),
        ({"shape": (-5, 128)}, ValueError, "shape"),
        ({"shape": (64.0, 128)}, TypeError, "shape"),
        ({"shape": (64,)}, TypeError, "shape"),
        ({"supersample": 0}, ValueError, "supersample"),
        ({"supersample": 1.5}, TypeError, "supersample"),
        ({"pixel_size_nm": NAN}, ValueError, "pixel_size_nm"),
        ({"pixel_size_nm": INF}, ValueError, "pixel_size_nm"),
        ({"pixel_size_nm": 0.0}, ValueError, "pixel_size_nm"),
        ({"pixel_size_nm": "1"}, TypeError, "pixel_size_nm"),
        ({"pitch_nm": -10.0}, ValueError, "pitch_nm"),
        ({"cd_nm": NAN}, ValueError, "cd_nm"),
        ({"sigma_nm": -1.0}, ValueError, "sigma_nm"),
        ({"correlation_length_nm": INF}, ValueError, "correlation_length_nm"),
        ({"roughness_exponent": 0.0}, ValueError, "roughness_exponent"),
        ({"line_level": NAN}, ValueError, "line_level"),
        ({"bloom_width_px": 0.0}, ValueError, "bloom_width_px"),
        ({"tilt_deg": 90.0}, ValueError, "tilt_deg"),
    ],
)
def test_make_line_image_refuses_bad_arguments(kwargs: dict, error: type, name: str) -> None:
    args = {"n_lines": 4, "shape": (64, 128), **kwargs}
    with pytest.raises(error, match=name) as info:
        make_line_image(**args)
    assert type(info.value) is error


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"supersample": 0}, ValueError, "supersample"),
        ({"supersample": -2}, ValueError, "supersample"),
        ({"supersample": 2.5}, TypeError, "supersample"),
        ({"shape": (-5, 100)}, ValueError, "shape"),
        ({"shape": (64, 0)}, ValueError, "shape"),
        ({"shape": "64x64"}, TypeError, "shape"),
        ({"pixel_size_nm": NAN}, ValueError, "pixel_size_nm"),
        ({"pixel_size_nm": INF}, ValueError, "pixel_size_nm"),
        ({"pixel_size_nm": -1.0}, ValueError, "pixel_size_nm"),
        ({"pitch_nm": NAN}, ValueError, "pitch_nm"),
        ({"cd_nm": 50.0}, ValueError, "cd_nm"),
        ({"cd_sigma_nm": -1.0}, ValueError, "cd_sigma_nm"),
        ({"cd_sigma_nm": INF}, ValueError, "cd_sigma_nm"),
        ({"ellipticity": 1.0}, ValueError, "ellipticity"),
        ({"ellipse_angle_deg": NAN}, ValueError, "ellipse_angle_deg"),
        ({"hole_level": INF}, ValueError, "hole_level"),
        ({"space_level": True}, TypeError, "space_level"),
    ],
)
def test_make_contact_image_refuses_bad_arguments(kwargs: dict, error: type, name: str) -> None:
    args = {"shape": (64, 64), **kwargs}
    with pytest.raises(error, match=name) as info:
        make_contact_image(**args)
    assert type(info.value) is error


def test_generators_accept_numpy_scalars() -> None:
    lines = make_line_image(np.int64(4), (np.int64(64), 128), pixel_size_nm=np.float32(0.8))
    assert np.all(np.isfinite(lines.image))
    holes = make_contact_image((64, 64), supersample=np.int64(2), pixel_size_nm=np.float64(0.9))
    assert np.all(np.isfinite(holes.image)) and np.all(np.isfinite(holes.cd_nm))


@pytest.mark.parametrize("measure", [measure_lines, measure_contacts])
@pytest.mark.parametrize("size", [True, False, np.bool_(True)])
def test_measurements_refuse_bool_pixel_size(measure, size: object) -> None:
    image = make_line_image(4, (64, 128)).image
    with pytest.raises(MetrologyInputError, match="pixel_size_nm must be a number"):
        measure(image, size)


@pytest.mark.parametrize("metric", [psnr, ssim])
@pytest.mark.parametrize(
    ("data_range", "error"),
    [
        ("255", TypeError),
        (None, TypeError),
        (True, TypeError),
        (1 + 0j, TypeError),
        (NAN, ValueError),
        (INF, ValueError),
        (0, ValueError),
        (-255.0, ValueError),
    ],
)
def test_quality_metrics_refuse_bad_data_range(metric, data_range: object, error: type) -> None:
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (32, 32))
    b = a + rng.normal(0, 2, a.shape)
    with pytest.raises(error, match="data_range must be a finite number > 0") as info:
        metric(a, b, data_range=data_range)
    assert type(info.value) is error


def test_quality_metrics_accept_numpy_data_range() -> None:
    a = np.linspace(0, 255, 32 * 32).reshape(32, 32)
    assert math.isfinite(psnr(a, a + 1.0, data_range=np.float32(255)))
    assert math.isfinite(ssim(a, a + 1.0, data_range=np.int64(255)))
