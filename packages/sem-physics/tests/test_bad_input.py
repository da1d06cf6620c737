"""Bad input: every case gives a clear ValueError naming the problem, or a documented conversion."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from pydantic import ValidationError
from sem_physics import (
    DegradationParams,
    ImageReadError,
    ParameterRanges,
    SEMImage,
    airy_psf,
    convolve_reflect,
    crop_info_bar,
    degrade,
    estimate_degradation,
    image_to_tensor,
    make_sample,
    read_image,
    tensor_to_image,
    write_image,
)
from sem_physics.noise import poisson_gaussian, poisson_gaussian_torch
from sem_physics.protocol import ProtocolError, degrade_files

MID = ParameterRanges().midpoint()
MID_VALUES = MID.model_dump()


def _png(tmp: Path, name: str = "ok.png") -> Path:
    path = tmp / name
    Image.fromarray(np.full((40, 40), 100, np.uint8)).save(path)
    return path


# (name, callable, expected exception, words the message must contain)
ARRAY_CASES: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    ("nan", lambda: degrade(np.full((8, 8), np.nan), MID, 0), ValueError, "NaN"),
    ("inf", lambda: degrade(np.full((8, 8), np.inf), MID, 0), ValueError, "inf"),
    ("empty", lambda: degrade(np.zeros((0, 0)), MID, 0), ValueError, "empty"),
    ("zero-rows", lambda: degrade(np.zeros((0, 10)), MID, 0), ValueError, "empty"),
    ("4-d", lambda: degrade(np.zeros((1, 1, 8, 8)), MID, 0), ValueError, "2-D"),
    ("1-d", lambda: degrade(np.zeros(8), MID, 0), ValueError, "2-D"),
    ("complex", lambda: degrade(np.zeros((8, 8), complex), MID, 0), ValueError, "real"),
    ("bool", lambda: degrade(np.zeros((8, 8), bool), MID, 0), ValueError, "real"),
    ("strings", lambda: degrade(np.array([["a"]]), MID, 0), ValueError, "real"),
    ("rx<=0", lambda: DegradationParams(**{**MID_VALUES, "rx_px": 0}), ValidationError, "rx_px"),
    ("ry<0", lambda: DegradationParams(**{**MID_VALUES, "ry_px": -3}), ValidationError, "ry_px"),
    ("dose<=0", lambda: DegradationParams(**{**MID_VALUES, "dose": 0}), ValidationError, "dose"),
    (
        "nan-gain",
        lambda: DegradationParams(**{**MID_VALUES, "gain": math.nan}),
        ValidationError,
        "gain",
    ),
    (
        "unknown-field",
        lambda: DegradationParams(**{**MID_VALUES, "radius": 2}),
        ValidationError,
        "radius",
    ),
    (
        "noise-dose<0",
        lambda: poisson_gaussian(np.ones((2, 2)), -1.0, 1.0, np.random.default_rng()),
        ValueError,
        "dose",
    ),
    (
        "sigma<0",
        lambda: poisson_gaussian(np.ones((2, 2)), None, -1.0, np.random.default_rng()),
        ValueError,
        "sigma",
    ),
    (
        "noise-nan-image",
        lambda: poisson_gaussian(np.full((2, 2), np.nan), 10.0, 1.0, np.random.default_rng()),
        ValueError,
        "NaN",
    ),
    (
        "noise-torch-nan-sigma",
        lambda: poisson_gaussian_torch(torch.ones(1, 1, 4, 4), None, math.nan),
        ValueError,
        "sigma must be finite",
    ),
    (
        "noise-torch-nan-image",
        lambda: poisson_gaussian_torch(torch.full((1, 1, 4, 4), math.nan), 10.0, 1.0),
        ValueError,
        "NaN",
    ),
    ("range-low>high", lambda: ParameterRanges(sigma=(5.0, 1.0)), ValidationError, "sigma"),
    ("even-kernel", lambda: convolve_reflect(np.ones((8, 8)), np.ones((4, 4))), ValueError, "odd"),
    (
        "convolve-int-dtype",  # was an all-zero result (the unit-sum kernel cast to int)
        lambda: convolve_reflect(np.ones((8, 8)), np.ones((3, 3)) / 9, dtype=np.int32),
        ValueError,
        "float32 or float64",
    ),
    (
        "convolve-nan",  # was NaN everywhere
        lambda: convolve_reflect(np.where(np.eye(8) > 0, np.nan, 1.0), np.ones((3, 3)) / 9),
        ValueError,
        "NaN",
    ),
    (
        "sem-image",
        lambda: degrade(
            SEMImage(np.ones((8, 8), np.float32), Path("a.tif"), 1.0, "-", None, "u8"), MID, 0
        ),
        ValueError,
        "SEMImage: pass its pixels, image.data",
    ),
    ("crop-too-many", lambda: crop_info_bar(np.ones((10, 10)), rows=10), ValueError, "[0, 9]"),
    (
        "crop-fraction",
        lambda: crop_info_bar(np.ones((10, 10)), fraction=1.5),
        ValueError,
        "fraction",
    ),
    ("sample-kind", lambda: make_sample("dots"), ValueError, "lines, contacts, texture"),
    ("sample-shape", lambda: make_sample("lines", (8, 8)), ValueError, ">= 32"),
    ("sample-shape-int", lambda: make_sample("lines", 64), ValueError, "two integers"),
    (
        "crop-fraction-all",  # blamed rows=100 before
        lambda: crop_info_bar(np.ones((100, 10)), fraction=0.999),
        ValueError,
        "fraction 0.999 of 100 rows",
    ),
    (
        "sample-many-negative",  # was []
        lambda: ParameterRanges().sample_many(np.random.default_rng(0), -3),
        ValueError,
        "n must be a whole number >= 0",
    ),
    ("tensor-batch", lambda: tensor_to_image(torch.zeros(2, 1, 4, 4)), ValueError, "single image"),
    (
        "tensor-rgb",  # was read as 64 images of 48 x 3 px
        lambda: image_to_tensor(np.zeros((64, 48, 3), np.uint8)),
        ValueError,
        "colour image (H, W, C)",
    ),
    (
        "tensor-list",
        lambda: image_to_tensor([np.zeros((4, 4)), np.zeros((5, 4))]),
        ValueError,
        "same shape",
    ),
]


@pytest.mark.parametrize(
    ("name", "call", "exc", "words"), ARRAY_CASES, ids=[c[0] for c in ARRAY_CASES]
)
def test_bad_arrays_and_parameters(
    name: str, call: Callable[[], object], exc: type[Exception], words: str
) -> None:
    with pytest.raises(exc) as info:
        call()
    assert issubclass(exc, ValueError)
    assert words in str(info.value)


@pytest.mark.parametrize("name", list(ParameterRanges.model_fields))
@pytest.mark.parametrize("end", [0, 1])
def test_a_bool_at_either_end_of_a_range_is_refused_with_the_parameter_bounds(name, end) -> None:
    """``ParameterRanges(rx_px=(True, 5))`` took True as 1.0 (refused only inside a config):
    the error names the parameter and DegradationParams' bounds of it (read here from the
    field), and the same ends as numbers are accepted."""
    lo, hi = ParameterRanges.model_fields[name].default
    bad = [lo, hi]
    bad[end] = np.True_ if end else True
    with pytest.raises(ValidationError) as err:
        ParameterRanges(**{name: tuple(bad)})
    (error,) = err.value.errors()
    assert error["loc"] == (name,) and error["type"] == "value_error"
    text = str(error["ctx"]["error"])
    assert text.startswith("low and high must be numbers in ") and "True" in text
    span = text.removeprefix("low and high must be numbers in ").partition(", got")[0]
    low, high = (float(v) for v in span.strip("[]()").split(", "))
    kinds = {
        k: float(getattr(m, k))
        for m in DegradationParams.model_fields[name].metadata
        for k in ("gt", "ge", "lt", "le")
        if getattr(m, k, None) is not None
    }
    assert low == pytest.approx(kinds.get("gt", kinds.get("ge")), rel=1e-9)
    assert high == pytest.approx(kinds.get("lt", kinds.get("le")), rel=1e-9)
    assert span[0] == ("(" if "gt" in kinds else "[") and span[-1] == (
        ")" if "lt" in kinds else "]"
    )
    assert getattr(ParameterRanges(**{name: (lo, hi)}), name) == (lo, hi)


def test_an_undecodable_file_is_named_once(tmp_path: Path) -> None:
    """Pillow's own text quotes the file again ("cannot identify image file '...'"): the
    message names it once, first."""
    path = tmp_path / "bad.png"
    path.write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    text = str(info.value)
    assert text.startswith(f"{path}: cannot decode as PNG") and text.count(str(path)) == 1


def test_corrupt_tiff(tmp_path: Path) -> None:
    path = tmp_path / "bad.tif"
    path.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    with pytest.raises(
        ImageReadError, match=r"bad\.tif: (cannot decode as TIFF|TIFF file has no image pages)"
    ):
        read_image(path)


def test_truncated_png(tmp_path: Path) -> None:
    good = _png(tmp_path, "full.png").read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.png.*PNG"):
        read_image(path)


def test_truncated_tiff(tmp_path: Path) -> None:
    tifffile.imwrite(
        tmp_path / "full.tif", np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)
    )
    data = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[:300])
    with pytest.raises(ImageReadError, match=r"cut\.tif"):
        read_image(tmp_path / "cut.tif")


def test_text_file_named_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    with pytest.raises(ImageReadError, match=r"notes\.jpg"):
        read_image(path)


@pytest.mark.parametrize("name", ["x.gif", "x.webp", "x"])
def test_unknown_formats(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"GIF89a")
    with pytest.raises(ImageReadError, match=r"unknown image format.*\.tif"):
        read_image(tmp_path / name)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(tmp_path / "empty.png")
    for folder in ("folder.tif", "folder"):  # a folder is named as one, extension or not
        (tmp_path / folder).mkdir()
        with pytest.raises(ImageReadError, match="is a folder, not an image file"):
            read_image(tmp_path / folder)
    with pytest.raises(ImageReadError, match="missing: file not found"):  # not "format ''"
        read_image(tmp_path / "missing")


def test_nan_float_tiff(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "nan.tif", np.full((8, 8), np.nan, np.float32))
    with pytest.raises(ImageReadError, match=r"nan\.tif.*NaN"):
        read_image(tmp_path / "nan.tif")


def test_int32_png_rejected_int16_tiff_rejected(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "s.tif", np.full((8, 8), -3, np.int16))
    with pytest.raises(ImageReadError, match="unsupported pixel type int16"):
        read_image(tmp_path / "s.tif")


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("x.png", "float32"), ("x.bmp", "uint16"), ("x.gif", "uint8"), ("x.tif", "int8")],
)
def test_unsupported_write_combinations(tmp_path: Path, name: str, dtype: str) -> None:
    with pytest.raises(ImageReadError, match=name):
        write_image(tmp_path / name, np.zeros((4, 4)), dtype)


def test_write_rejects_nan_and_3d(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="NaN"):
        write_image(tmp_path / "x.tif", np.full((4, 4), np.nan), "float32")
    with pytest.raises(ImageReadError, match="2-D"):
        write_image(tmp_path / "x.tif", np.zeros((4, 4, 3)), "float32")


def test_image_smaller_than_kernel_in_protocol(tmp_path: Path) -> None:
    src = _png(tmp_path)  # 40 x 40, midpoint kernel is 93 x 93
    with pytest.raises(ProtocolError, match=r"40x40 px is smaller than the PSF kernel 93x93"):
        degrade_files([src], tmp_path / "out", mode="midpoint")


def test_small_image_in_core_is_documented_reflection() -> None:
    # The core forward model itself accepts any size: reflection repeats with period 2n.
    x = np.arange(6.0).reshape(2, 3) * 10
    y = degrade(x, MID, 0, poisson=False, gaussian=False, gain_offset=False)
    assert y.shape == (2, 3) and np.isfinite(y).all()
    assert x.min() - 1e-3 <= y.min() and y.max() <= x.max() + 1e-3  # unit-sum, positive kernel


def test_a_0_to_1_image_is_warned_about_where_0_to_255_is_meant(tmp_path: Path) -> None:
    unit = make_sample("lines", (64, 64), seed=1) / 255.0
    with pytest.warns(UserWarning, match=r"0\.\.255 grey levels"):
        degrade(unit, MID, 0)
    with pytest.warns(UserWarning, match=r"0\.\.255 grey levels"):
        write_image(tmp_path / "x.png", unit)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_image(tmp_path / "x.tif", unit, dtype="float32")  # stored exactly: any scale
        degrade(unit * 255.0, MID, 0)


def test_settings_may_be_given_as_dicts_and_nothing_else() -> None:
    img = make_sample("lines", (64, 64), seed=1)
    np.testing.assert_array_equal(degrade(img, MID.model_dump(), 3), degrade(img, MID, 3))
    np.testing.assert_array_equal(airy_psf(MID.psf.model_dump()), airy_psf(MID.psf))
    with pytest.raises(TypeError, match="params must be a DegradationParams"):
        degrade(img, [1, 2, 3], 0)
    with pytest.raises(ValidationError, match="rx_px"):
        degrade(img, {**MID_VALUES, "rx_px": -1}, 0)


@pytest.mark.parametrize("seed", [-1, 1.5, "7", True, [], [3, -2]])
def test_a_seed_numpy_cannot_take_is_named_with_the_accepted_values(seed) -> None:
    img = make_sample("lines", (64, 64), seed=1)
    accepted = "must be a numpy Generator, an integer seed >= 0 (or a sequence of them) or None"
    with pytest.raises(ValueError, match=re.escape(f"rng {accepted}, got {seed!r}")):
        degrade(img, MID, seed)
    with pytest.raises(ValueError, match=re.escape(accepted)):
        ParameterRanges().sample(seed)


def test_seeds_numpy_takes_give_numpy_s_streams() -> None:
    img = make_sample("lines", (64, 64), seed=1)
    for seed in (0, np.int64(5), [5, 1], (2**70, 0)):
        np.testing.assert_array_equal(
            degrade(img, MID, seed), degrade(img, MID, np.random.default_rng(seed))
        )


def test_the_blind_estimate_refuses_another_intensity_scale() -> None:
    y = degrade(make_sample("texture", (128, 128), seed=2), MID, 0)
    with pytest.raises(ValueError, match=r"beyond the 0\.\.255 grey scale"):
        estimate_degradation(y * 257.0)  # 16-bit counts: sigma read ~1000, beyond the model
    with pytest.warns(UserWarning, match=r"0\.\.255 grey levels"):
        estimate_degradation(np.clip(y, 0, 255) / 255.0)


def test_lower_level_physics_calls_name_their_argument() -> None:
    from sem_physics import degrade_torch
    from sem_physics.psf import airy_profile

    with pytest.raises(ValueError, match=r"beta must be in \(0, 10\], got -2"):
        airy_profile(np.linspace(0, 3, 5), -2.0)  # returned 711 at a zero of J1
    with pytest.raises(TypeError, match="images must be a torch tensor"):
        degrade_torch(np.zeros((1, 1, 8, 8), np.float32), MID)
    with pytest.raises(ValueError, match="images are empty"):
        degrade_torch(torch.zeros(1, 1, 0, 0), MID)
    assert ParameterRanges().sample(5) == ParameterRanges().sample(np.random.default_rng(5))
