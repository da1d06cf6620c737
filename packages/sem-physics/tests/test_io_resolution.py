"""Pixel size from ImageJ (Fiji) descriptions and plain TIFF resolution tags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from sem_physics.io import read_image


def _noisy(shape: tuple[int, int] = (40, 50)) -> np.ndarray:
    return np.random.default_rng(0).normal(100, 20, shape).clip(0, 255).astype(np.uint8)


def _imagej(
    path: Path,
    unit: str,
    per_unit: float | tuple[float, float],
    resolutionunit: int = 1,
    tags: list[tuple] | None = None,
) -> Path:
    """A TIFF as Fiji saves a calibrated image: ``unit=`` in the description, pixels per unit
    in XResolution/YResolution."""
    x, y = per_unit if isinstance(per_unit, tuple) else (per_unit, per_unit)
    desc = f"ImageJ=1.54f\nunit={unit}\nmin=0.0\nmax=255.0\n"
    tifffile.imwrite(
        path,
        _noisy(),
        description=desc,
        metadata=None,
        resolution=(x, y),
        resolutionunit=resolutionunit,
        extratags=tags or [],
    )
    return path


def _plain(path: Path, per_unit: float | tuple[float, float], resolutionunit: int) -> Path:
    x, y = per_unit if isinstance(per_unit, tuple) else (per_unit, per_unit)
    tifffile.imwrite(path, _noisy(), resolution=(x, y), resolutionunit=resolutionunit)
    return path


@pytest.mark.parametrize(
    ("unit", "per_unit", "nm"),
    [
        ("nm", 1 / 0.827, 0.827),
        ("nanometer", 0.5, 2.0),
        ("micron", 1 / 0.000827, 0.827),
        ("\\u00B5m", 1 / 0.0015, 1.5),  # ImageJ escapes µm in the description
        ("um", 100.0, 10.0),
        ("mm", 1e4, 100.0),
        ("cm", 1e5, 100.0),
    ],
)
def test_imagej_unit_and_xresolution_give_the_pixel_size(
    tmp_path: Path, unit: str, per_unit: float, nm: float
) -> None:
    img = read_image(_imagej(tmp_path / "ij.tif", unit, per_unit))
    assert img.pixel_size_nm == pytest.approx(nm, rel=1e-6)
    shown = unit.replace("\\u00B5", "µ")  # the source names the unit decoded
    assert img.pixel_size_source == f"ImageJ description unit={shown} and XResolution"


def test_imagej_unit_wins_over_resolution_unit(tmp_path: Path) -> None:
    img = read_image(_imagej(tmp_path / "ij.tif", "micron", 1 / 0.002, resolutionunit=3))
    assert img.pixel_size_nm == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize("unit", ["pixel", "pixels", "furlong"])
def test_imagej_without_a_length_unit_gives_no_pixel_size(tmp_path: Path, unit: str) -> None:
    img = read_image(_imagej(tmp_path / "ij.tif", unit, 1 / 0.827, resolutionunit=3))
    assert img.pixel_size_nm is None and img.pixel_size_source == "none"
    calibrated = read_image(_imagej(tmp_path / "nm.tif", "nm", 1 / 0.827, resolutionunit=3))
    assert calibrated.pixel_size_nm == pytest.approx(0.827)  # the unit alone decides


def test_imagej_inch_at_72_dpi_is_no_calibration(tmp_path: Path) -> None:
    img = read_image(_imagej(tmp_path / "ij.tif", "inch", 72.0))
    assert img.pixel_size_nm is None and img.pixel_size_source == "none"
    fine = read_image(_imagej(tmp_path / "fine.tif", "inch", 2.54e7 / 50.0))
    assert fine.pixel_size_nm == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("per_unit", "resolutionunit", "nm", "name"),
    [
        (1e5, 3, 100.0, "cm"),  # 1e-5 cm per pixel
        (1 / 8.27e-8, 3, 0.827, "cm"),
        (2.54e7 / 5.0, 2, 5.0, "inch"),
        (1e3, 3, 1e4, "cm"),  # 10 µm per pixel: the largest taken
    ],
)
def test_plain_resolution_in_cm_or_inch_gives_the_pixel_size(
    tmp_path: Path, per_unit: float, resolutionunit: int, nm: float, name: str
) -> None:
    img = read_image(_plain(tmp_path / "res.tif", per_unit, resolutionunit))
    assert img.pixel_size_nm == pytest.approx(nm, rel=1e-6)
    assert img.pixel_size_source == f"TIFF XResolution (ResolutionUnit {name})"


@pytest.mark.parametrize(
    ("per_unit", "resolutionunit"),
    [
        (72.0, 2),
        (96.0, 2),
        (300.0, 2),
        (28.3465, 3),  # 72 dpi in pixels per cm
        (999.0, 3),  # just above 10 µm per pixel
        (1e5, 1),  # no unit
        ((0, 3937), 2),  # zero pixels per inch (a real JEOL file)
    ],
)
def test_editor_dpi_and_unitless_resolutions_are_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, per_unit: object, resolutionunit: int
) -> None:
    path = tmp_path / "res.tif"
    if isinstance(per_unit, tuple):
        tifffile.imwrite(path, _noisy(), resolution=(per_unit, per_unit), resolutionunit=2)
    else:
        _plain(path, float(per_unit), resolutionunit)  # type: ignore[arg-type]
    img = read_image(path)
    assert img.pixel_size_nm is None and img.pixel_size_source == "none"
    assert "pixel size ignored" not in caplog.text  # a default is no mistake to warn about
    calibrated = read_image(_plain(tmp_path / "sem.tif", 1e5, 3))  # 1e-5 cm per pixel
    assert calibrated.pixel_size_nm == pytest.approx(100.0)


@pytest.mark.parametrize("make", ["imagej", "plain"])
def test_x_and_y_that_differ_are_refused_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, make: str
) -> None:
    path = tmp_path / "xy.tif"
    if make == "imagej":
        _imagej(path, "nm", (1.0, 0.5))
    else:
        _plain(path, (1e7, 5e6), 3)
    img = read_image(path)
    assert img.pixel_size_nm is None
    assert img.pixel_size_source.startswith("none (ignored: ")
    assert "X 1 nm and Y 2 nm per pixel differ by more than 1 %" in img.pixel_size_source
    assert "pixel size ignored" in caplog.text and "xy.tif" in caplog.text


def test_x_and_y_within_one_percent_give_the_x_size(tmp_path: Path) -> None:
    img = read_image(_imagej(tmp_path / "xy.tif", "nm", (1.0, 1.005)))
    assert img.pixel_size_nm == pytest.approx(1.0)


def test_vendor_metadata_wins_over_imagej_and_resolution(tmp_path: Path) -> None:
    raw = b"PixelSize=0.5\x00"
    hitachi = [(40092, "B", len(raw), raw, True)]
    img = read_image(_imagej(tmp_path / "h.tif", "nm", 1 / 0.827, tags=hitachi))
    assert img.pixel_size_nm == 0.5
    assert img.pixel_size_source == "TIFF tag 40092 (Hitachi PixelSize)"
    alone = read_image(_imagej(tmp_path / "ij.tif", "nm", 1 / 0.827))  # read without it
    assert alone.pixel_size_nm == pytest.approx(0.827)
    fei = "[Scan]\r\nPixelWidth=2e-9\r\n"
    path = tmp_path / "f.tif"
    tifffile.imwrite(
        path,
        _noisy(),
        resolution=(1e7, 1e7),
        resolutionunit=3,
        extratags=[(34682, "s", 0, fei, True)],
    )
    img = read_image(path)
    assert img.pixel_size_nm == pytest.approx(2.0)
    assert img.pixel_size_source == "FEI metadata Scan.PixelWidth"
