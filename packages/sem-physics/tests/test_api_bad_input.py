"""Bad input to the public API: a clear error (or warning) naming the argument and the range."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from sem_physics import (
    DegradationParams,
    ParameterRanges,
    PSFParams,
    airy_psf,
    degrade,
    degrade_files,
    estimate_degradation,
    estimate_psf_from_pair,
    make_sample,
    read_image,
    write_image,
)
from sem_physics.protocol import ProtocolError

MID = ParameterRanges().midpoint()
SIGMA3 = DegradationParams(
    rx_px=3, ry_px=3, beta=1.95, theta_rad=0, gain=1, offset=0, sigma=3, dose=1e6
)


@pytest.fixture(scope="module")
def base() -> np.ndarray:
    return make_sample("lines", (128, 128), 0)


@pytest.fixture(scope="module")
def noisy(base: np.ndarray) -> np.ndarray:
    return degrade(base, SIGMA3, rng=0)


# 1. write_image: clipping to 0..255 is warned about -------------------------------------------


@pytest.mark.parametrize(
    ("shift", "dtype", "side"), [(345.0, "uint16", "above 255"), (None, "uint8", "below 0")]
)
def test_write_image_warns_once_about_clipped_pixels(
    tmp_path: Path, base: np.ndarray, shift: float | None, dtype: str, side: str
) -> None:
    image = base + shift if shift is not None else -base
    path = tmp_path / "clipped.tif"
    with pytest.warns(UserWarning) as record:
        write_image(path, image, dtype)
    messages = [str(w.message) for w in record]
    assert len(messages) == 1, messages
    assert str(path) in messages[0]
    assert f"{image.size:,} {side} (100 %)" in messages[0]
    assert "float32 TIFF keeps them" in messages[0]


def test_write_image_names_both_sides_and_their_shares(tmp_path: Path) -> None:
    image = np.full((10, 10), 100.0)
    image[0, :5] = -3.0
    image[1] = 300.0
    with pytest.warns(UserWarning, match=r"5 below 0 \(5 %\) and 10 above 255 \(10 %\)"):
        write_image(tmp_path / "x.png", image)


def test_write_image_in_range_or_float32_or_opted_out_is_silent(
    tmp_path: Path, base: np.ndarray
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_image(tmp_path / "in_range.png", base)
        write_image(tmp_path / "float.tif", base + 345, "float32")
        write_image(tmp_path / "counted.png", base + 345, warn_clipped=False)


def test_sem_degrade_counts_clipping_without_a_warning_per_image(
    tmp_path: Path, base: np.ndarray
) -> None:
    src = write_image(tmp_path / "bright.tif", np.clip(base + 230, 0, 255), "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manifest = degrade_files(
            [src], tmp_path / "out", mode="explicit", params=SIGMA3, output_format="uint16-png"
        )
    assert manifest.clipped[0] > 0


# 2. estimate_degradation: substantially negative images are refused ----------------------------


@pytest.mark.parametrize("make", [lambda y: -y, lambda y: y - 100.0])
def test_estimate_refuses_negative_grey_levels(noisy: np.ndarray, make) -> None:
    image = make(noisy)
    with pytest.raises(ValueError, match=r"reaches -\d.*% of its pixels below 0.*counts >= 0"):
        estimate_degradation(image)


def test_estimate_keeps_accepting_noise_excursions_below_zero(base: np.ndarray) -> None:
    # the paper's noisiest corner on a dark image: a few pixels of an unclipped float simulation
    # dip below 0; they stay accepted
    dark = DegradationParams(
        rx_px=5, ry_px=5, beta=1.95, theta_rad=0, gain=0.99, offset=1, sigma=10, dose=1
    )
    y = degrade(base * 0.3, dark, rng=1)
    assert y.min() < 0
    assert estimate_degradation(y).sigma > 0


# 3. degrade: other scales and negative images are refused ---------------------------------------


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_degrade_refuses_16_bit_counts(base: np.ndarray, dtype: type) -> None:
    counts = np.rint(base * 257).astype(dtype)
    with pytest.raises(ValueError, match=r"image reaches (\d+) .*multiply by 255/\1 = "):
        degrade(counts, MID, 0)


def test_degrade_refuses_float_images_far_above_the_grey_scale(base: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"above 1000.*0\.\.255 grey scale"):
        degrade(base * 257.0, MID, 0)


def test_degrade_accepts_its_own_unclipped_output_and_small_integers(base: np.ndarray) -> None:
    once = degrade(base, MID, 0)
    assert degrade(once, MID, 1, blur=False).shape == base.shape
    assert degrade(np.rint(base).astype(np.uint16), MID, 0).shape == base.shape


def test_degrade_refuses_a_negated_image(base: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"image reaches -\d.*counts >= 0"):
        degrade(-base, MID, 0)


# 4. degrade_files: mode, params and a single path ------------------------------------------------


@pytest.mark.parametrize("mode", ["bogus", "fixed"])
def test_degrade_files_names_a_bad_mode(tmp_path: Path, base: np.ndarray, mode: str) -> None:
    src = write_image(tmp_path / "g.tif", base, "float32")
    with pytest.raises(ProtocolError, match=r"mode must be one of 'sample', 'explicit'"):
        degrade_files([src], tmp_path / "out", mode=mode)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_degrade_files_names_a_bad_crop(tmp_path: Path, base: np.ndarray) -> None:
    src = write_image(tmp_path / "g.tif", base, "float32")
    with pytest.raises(ProtocolError, match=r"crop must be one of 'keep'"):
        degrade_files([src], tmp_path / "out", crop="bottom")  # type: ignore[arg-type]


def test_degrade_files_explicit_without_params_names_params(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"mode 'explicit' needs params"):
        degrade_files([tmp_path / "g.tif"], tmp_path / "out", mode="explicit")


@pytest.mark.parametrize("as_str", [True, False])
def test_degrade_files_takes_a_single_path(tmp_path: Path, base: np.ndarray, as_str: bool) -> None:
    src = write_image(tmp_path / "g.tif", base, "float32")
    manifest = degrade_files(str(src) if as_str else src, tmp_path / "out", mode="midpoint")
    assert [e.output for e in manifest.entries] == ["0000_g.tif"]
    assert not manifest.failed


# 5. make_sample: seed and shape -------------------------------------------------------------------


def test_make_sample_names_a_bad_seed() -> None:
    with pytest.raises(ValueError, match=r"^seed must be .*integer seed >= 0.*got -1"):
        make_sample("lines", (64, 64), seed=-1)


@pytest.mark.parametrize("shape", [(20000, 20000), (100000, 100000)])
def test_make_sample_refuses_shapes_above_the_pixel_limit(shape: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match=r"^shape .* above the limit of 100,000,000 px"):
        make_sample("lines", shape)


def test_make_sample_pixel_limit_follows_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("SEM_MAX_PIXELS", "4000")
    with pytest.raises(ValueError, match=r"shape \(64, 64\) is 4,096 px, above the limit"):
        make_sample("lines", (64, 64))


@pytest.mark.parametrize("shape", [(0, 64), (-64, 64), (64, None), (64.5, 64), "64x64"])
def test_make_sample_names_a_bad_shape(shape: object) -> None:
    with pytest.raises(ValueError, match=r"^shape must be two integers >= 32"):
        make_sample("lines", shape)  # type: ignore[arg-type]


# 6. estimate_psf_from_pair: max_side_px -------------------------------------------------------------


@pytest.mark.parametrize("side", [0, -5, 10, 100.5, True])
def test_pair_fit_names_max_side_px(base: np.ndarray, noisy: np.ndarray, side: object) -> None:
    with pytest.raises(ValueError, match=r"^max_side_px must be an integer >= 64"):
        estimate_psf_from_pair(base, noisy, max_side_px=side)  # type: ignore[arg-type]


# 7. read_image: the path's type -----------------------------------------------------------------


@pytest.mark.parametrize("path", [None, 3, b"x.tif"])
def test_read_image_names_a_path_of_the_wrong_type(path: object) -> None:
    with pytest.raises(TypeError, match=r"^path must be a file path \(str or os\.PathLike\)"):
        read_image(path)  # type: ignore[arg-type]


# 8. write_image creates missing parent folders (documented) -----------------------------------------


def test_write_image_creates_missing_parent_folders(tmp_path: Path, base: np.ndarray) -> None:
    out = write_image(tmp_path / "a" / "b" / "q.png", base)
    assert out.is_file()
    assert "parent folders are created" in (write_image.__doc__ or "")


# 9. DegradationParams: no bools for numbers -------------------------------------------------------


@pytest.mark.parametrize("field", list(DegradationParams.model_fields))
def test_params_refuse_bools(field: str) -> None:
    values = {**MID.model_dump(), field: True}
    with pytest.raises(ValidationError, match=rf"{field}\n.*must be a number, got True"):
        DegradationParams(**values)


def test_degrade_refuses_a_bool_radius(base: np.ndarray) -> None:
    with pytest.raises(ValidationError, match="rx_px"):
        degrade(base, {**MID.model_dump(), "rx_px": True}, 0)


def _midpoint() -> DegradationParams:
    return ParameterRanges().midpoint()


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: airy_psf(_midpoint()), TypeError, "DegradationParams: pass its .psf"),
        (lambda: PSFParams(rx_px=True, ry_px=2), ValidationError, "must be a number, got True"),
        (lambda: degrade(np.full((32, 32), 100.0), _midpoint(), blur="no"), TypeError, "blur"),
        (lambda: degrade(np.full((32, 32), 100.0), _midpoint(), poisson=1), TypeError, "poisson"),
        (lambda: estimate_degradation(np.full((64, 64), 9.0), beta="2"), TypeError, "beta"),
        (lambda: estimate_degradation(np.full((64, 64), 9.0), beta=True), TypeError, "beta"),
    ],
)
def test_a_wrong_kind_of_argument_is_named(call, error, words) -> None:
    """Not a deep AttributeError, not a bool read as 1, not a truthy string read as True."""
    with pytest.raises(error, match=re.escape(words)):
        call()


def test_poisson_gaussian_takes_a_seed_as_degrade_does() -> None:
    from sem_physics.noise import poisson_gaussian

    z = np.full((8, 8), 100.0)
    seeded = poisson_gaussian(z, 10.0, 1.0, 0)
    np.testing.assert_array_equal(seeded, poisson_gaussian(z, 10.0, 1.0, np.random.default_rng(0)))
    assert poisson_gaussian(z, 10.0, 1.0, None).shape == (8, 8)  # fresh entropy
