"""Reading unusual inputs: float 0..1 with an overshoot, dim 12-bit data, the Orientation tag,
8-bit palettes, the float32 writer path, the size limit of every command and the scale hint."""

from __future__ import annotations

import logging
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps
from sem_physics import make_sample, read_image, write_image
from sem_physics import scan as scan_module
from sem_physics.cli import main as degrade_main
from sem_physics.forward import degrade
from sem_physics.io import quantize
from sem_physics.levels import fill_hint
from sem_physics.params import DegradationParams
from sem_physics.psf_cli import main as psf_main
from sem_physics.scan import row_jitter


def lines(shape: tuple[int, int] = (128, 160)) -> np.ndarray:
    """A line pattern on 0..255 (float64)."""
    return make_sample("lines", shape, seed=0)


# F1: float images on 0..1 with a few pixels above 1 ---------------------------------------------


def test_a_unit_float_image_with_a_slight_overshoot_stays_on_0_to_1(tmp_path: Path, caplog) -> None:
    unit = (lines() / 255.0).astype(np.float32)
    unit[0, 0] = 1.0001
    path = tmp_path / "over.tif"
    tifffile.imwrite(path, unit)
    with caplog.at_level(logging.WARNING, logger="sem_physics.io"):
        img = read_image(path)
    assert img.value_scale == 255.0
    np.testing.assert_allclose(img.data, unit.astype(np.float64) * 255.0, rtol=1e-6)
    assert any("1 of 20,480 pixels above 1 (up to 1.0001)" in n for n in img.notes)
    assert [r.getMessage() for r in caplog.records] == [f"{path}: {img.notes[0]}"]


def test_a_0_to_1_array_with_the_readers_overshoot_warns_where_0_to_255_is_expected() -> None:
    """The array functions' scale-slip warning uses the reader's 0..1 bound (1.05), not 1.0:
    a resampled 0..1 image reaching 1.03 would otherwise be degraded as a black picture."""
    x = lines()
    params = DegradationParams(
        rx_px=2.0, ry_px=2.0, beta=2.0, theta_rad=0.0, gain=1.0, offset=0.0, sigma=1.0, dose=10.0
    )
    with pytest.warns(UserWarning, match=r"\.\.1\.03: 0\.\.255 grey levels are expected"):
        degrade(x / x.max() * 1.03, params, 0)
    with warnings.catch_warnings():  # beyond the bound the reader too takes grey levels
        warnings.simplefilter("error")
        degrade(x / x.max() * 1.06, params, 0)


def test_a_unit_float_image_with_many_small_overshoots_stays_on_0_to_1(tmp_path: Path) -> None:
    unit = (lines() / 255.0).astype(np.float32)
    unit[:4] = 1.04  # 2.5 % of the pixels, all within the 1.05 tolerance
    tifffile.imwrite(tmp_path / "ring.tif", unit)
    img = read_image(tmp_path / "ring.tif")
    assert img.value_scale == 255.0
    assert any("640 of 20,480 pixels above 1 (up to 1.04)" in n for n in img.notes)


def test_an_exact_unit_image_is_read_as_before_without_a_note(tmp_path: Path) -> None:
    unit = (lines() / 255.0).astype(np.float32)
    tifffile.imwrite(tmp_path / "unit.tif", unit)
    img = read_image(tmp_path / "unit.tif")
    assert img.value_scale == 255.0 and img.notes == ()


def test_a_mostly_unit_image_with_far_outliers_is_read_as_grey_levels_with_a_note(
    tmp_path: Path,
) -> None:
    unit = (lines() / 255.0).astype(np.float32)
    unit[0, :3] = 2.0  # beyond the 1.05 tolerance: not an overshoot
    tifffile.imwrite(tmp_path / "far.tif", unit)
    img = read_image(tmp_path / "far.tif")
    assert img.value_scale == 1.0
    assert any("read as 0..255 grey levels" in n for n in img.notes)


def test_a_grey_level_float_image_is_read_as_before_without_a_note(tmp_path: Path) -> None:
    grey = lines().astype(np.float32)  # many pixels above 1: a 0..255 image
    tifffile.imwrite(tmp_path / "grey.tif", grey)
    img = read_image(tmp_path / "grey.tif")
    assert img.value_scale == 1.0 and img.notes == ()


# F2: a dim picture (12-bit data in a 16-bit file) is named by sem-degrade and sem-psf -----------


def _twelve_bit(path: Path) -> Path:
    counts = np.rint(lines() / 255.0 * 2000.0 + 100.0).astype(np.uint16)  # 100..2100 of 65535
    tifffile.imwrite(path, counts)
    return path


def test_sem_degrade_warns_about_a_dim_picture(tmp_path: Path, caplog) -> None:
    path = _twelve_bit(tmp_path / "u12.tif")
    with caplog.at_level(logging.WARNING, logger="sem_physics.io"):
        assert degrade_main([str(path), "-o", str(tmp_path / "out")]) == 0
    said = [r.getMessage() for r in caplog.records]
    largest = int(tifffile.imread(path).max())  # 1769 counts: 11 bits (1024 <= 1769 < 2048)
    assert 1024 <= largest < 2048
    assert any(
        m.startswith(f"{path}: dim uint16 picture: values ")
        and "sem-degrade" in m
        and f"its largest value, {largest}, needs 11 of the file's 16 bits" in m
        and "rescale the file to its full range (multiply the counts by 32)" in m
        for m in said
    ), said


@pytest.mark.parametrize(("top", "dtype"), [(4095, np.uint16), (200_000, np.uint32)])
def test_the_info_bar_of_a_dim_picture_is_found(tmp_path: Path, top: int, dtype: type) -> None:
    """12-bit counts in a 16-bit file (and 18 of 32 bits) span 0..16 grey levels: the bar
    search, whose levels are of the 0..255 scale, is run on the picture brightened by a power
    of two, so the bar is found as at full range; the same picture without a bar has none."""
    picture = 0.15 + 0.7 * make_sample("lines", (256, 320), seed=0) / 255.0
    bar = np.zeros((20, 320))
    bar[4:-4, 4:80] = 1.0  # a white label on the black bar
    for frame, rows in ((np.concatenate([picture, bar]), 20), (picture, None)):
        path = tmp_path / f"dim{rows}.tif"
        tifffile.imwrite(path, np.rint(frame * top).astype(dtype))
        img = read_image(path)
        assert img.data.max() < 17 and img.info_bar_rows == rows, (dtype, rows)
        full = tmp_path / f"full{rows}.tif"
        tifffile.imwrite(full, np.rint(frame * 65535).astype(np.uint16))
        assert read_image(full).info_bar_rows == rows


def test_the_dim_note_names_the_bits_a_32_bit_file_uses() -> None:
    """190000 counts need 18 bits (2**17 < 190000 < 2**18): 14 of the 32 are left unused."""
    data = np.array([[0.0, 190000 * 255 / 4294967295]], np.float32)
    hint = fill_hint(data, "uint32")
    assert "its largest value, 190000, needs 18 of the file's 32 bits" in hint
    assert hint.endswith(f"(multiply the counts by {2**14})")
    assert fill_hint(data, "float32") == "rescale the file to its full range"


def test_sem_psf_warns_about_a_dim_picture(tmp_path: Path, caplog) -> None:
    path = _twelve_bit(tmp_path / "u12psf.tif")
    with caplog.at_level(logging.WARNING, logger="sem_physics.io"):
        assert psf_main([str(path)]) == 0
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"{path}: dim uint16 picture") and "sem-psf" in m for m in said)


def test_a_full_range_16_bit_picture_is_not_called_dim(tmp_path: Path, caplog) -> None:
    path = tmp_path / "u16.tif"
    tifffile.imwrite(path, np.rint(lines() * 257.0).astype(np.uint16))
    with caplog.at_level(logging.WARNING, logger="sem_physics.io"):
        assert psf_main([str(path)]) == 0
    assert not [r for r in caplog.records if "dim" in r.getMessage()]


# F3: the Orientation tag ------------------------------------------------------------------------


def _stored() -> np.ndarray:
    """An asymmetric 8-bit frame (orientation errors show)."""
    frame = lines((48, 64)).astype(np.uint8)
    frame[:8, :4] = 255
    return frame


@pytest.mark.parametrize("orientation", range(1, 9))
def test_png_and_tiff_are_read_as_displayed(tmp_path: Path, orientation: int) -> None:
    stored = _stored()
    png = tmp_path / "x.png"
    exif = Image.Exif()
    exif[274] = orientation
    Image.fromarray(stored).save(png, exif=exif)
    tif = tmp_path / "x.tif"
    tifffile.imwrite(tif, stored, extratags=[(274, "H", 1, orientation, True)])
    with Image.open(png) as im:
        shown = np.asarray(ImageOps.exif_transpose(im)).astype(np.float32)
    for path in (png, tif):
        img = read_image(path)
        np.testing.assert_array_equal(img.data, shown)
        noted = any(n.startswith(f"Orientation tag {orientation} ") for n in img.notes)
        assert noted == (orientation != 1), (path, img.notes)


@pytest.mark.parametrize("orientation", [2, 3, 6])
def test_a_frame_with_an_info_bar_is_read_as_stored(tmp_path: Path, orientation: int) -> None:
    """The bar sits at the bottom of the stored frame, where it is cropped and put back: turned,
    it would leave the bottom (or be mirrored) and be restored as picture. Read as stored."""
    from sem_physics.orientation import orient

    picture = lines((200, 256)).astype(np.uint8)
    bar = np.zeros((40, 256), np.uint8)
    bar[10:30, 20:200:4] = 255  # white text on black
    stored = np.vstack([picture, bar])
    path = tmp_path / "bar.tif"
    tifffile.imwrite(path, stored, extratags=[(274, "H", 1, orientation, True)])
    img = read_image(path)
    assert img.info_bar_rows == 40
    np.testing.assert_array_equal(img.data, stored.astype(np.float32))
    kept = [n for n in img.notes if n.startswith(f"Orientation tag {orientation} ")]
    assert len(kept) == 1 and "not applied" in kept[0] and "40-row info bar" in kept[0]
    # without the bar the same tag turns the frame
    tifffile.imwrite(path, picture, extratags=[(274, "H", 1, orientation, True)])
    np.testing.assert_array_equal(read_image(path).data, orient(picture, orientation))


# F12: an 8-bit palette records the value scale of its 8-bit entries ---------------------------


def test_an_8_bit_palette_records_a_value_scale_of_1(tmp_path: Path) -> None:
    index = _stored()
    path = tmp_path / "pal.tif"
    cmap = np.tile((np.arange(256, dtype=np.uint16) * 257)[::-1], (3, 1))  # grey, inverted
    tifffile.imwrite(path, index, photometric="palette", colormap=cmap)
    img = read_image(path)
    assert img.source_dtype == "uint8" and img.value_scale == 1.0
    np.testing.assert_array_equal(img.data, 255.0 - index.astype(np.float32))


def test_an_8_bit_palette_stored_as_v_shifted_by_8_reads_its_8_bit_values(tmp_path: Path) -> None:
    """ImageJ, Pillow and JEOL store an 8-bit entry v as v << 8 (white: 65280): it reads as
    v, not v * 256 / 257 (white 254.0), so an 8-bit output keeps the file's grey levels."""
    index = _stored()
    path = tmp_path / "pal256.tif"
    cmap = np.tile((np.arange(256, dtype=np.uint16) << 8)[::-1], (3, 1))  # grey, inverted
    tifffile.imwrite(path, index, photometric="palette", colormap=cmap)
    assert int(tifffile.TiffFile(path).pages[0].colormap.max()) == 65280
    img = read_image(path)
    assert img.source_dtype == "uint8" and img.value_scale == 1.0
    np.testing.assert_array_equal(img.data, 255.0 - index.astype(np.float32))


def test_a_16_bit_palette_keeps_the_16_bit_scale(tmp_path: Path) -> None:
    path = tmp_path / "pal16.tif"
    cmap = np.tile(np.arange(256, dtype=np.uint16) * 250, (3, 1))  # not 8-bit entries
    tifffile.imwrite(path, _stored(), photometric="palette", colormap=cmap)
    assert read_image(path).value_scale == pytest.approx(255.0 / 65535.0)


# F8: the float32 writer path makes no float64 copy -----------------------------------------------


def test_quantize_float32_makes_no_float64_copy() -> None:
    image = np.zeros((1000, 1000), np.float32)  # 4 MB; a float64 copy is 8 MB
    tracemalloc.start()
    try:
        out = quantize(image, "float32")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.dtype == np.float32 and peak < 1_000_000


def test_quantize_integer_outputs_are_unchanged() -> None:
    x = np.array([[-3.0, 0.4, 127.5, 254.6, 300.0]])
    np.testing.assert_array_equal(quantize(x, "uint8"), [[0, 0, 128, 255, 255]])
    np.testing.assert_array_equal(quantize(x, "uint16"), [[0, 103, 32768, 65432, 65535]])
    with pytest.raises(ValueError, match="unsupported dtype"):
        quantize(x, "int8")


# F7: the jitter check is bounded ----------------------------------------------------------------


def test_row_jitter_measures_a_large_frame_on_its_central_window(monkeypatch) -> None:
    monkeypatch.setattr(scan_module, "MAX_SIDE", 160, raising=False)
    image = make_sample("contacts", (300, 340), seed=3)
    window = image[70:230, 90:250]
    assert row_jitter(image) == row_jitter(window)
    assert row_jitter(window).rows_used <= 159


# F10: --max-pixels on sem-psf (sem-degrade has it; the error names it) ------------------------


def test_sem_psf_has_max_pixels_named_by_the_size_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, lines().astype(np.uint8))
    assert psf_main([str(path), "--max-pixels", "1000"]) == 2
    err = capsys.readouterr().err
    assert "above the limit of 1,000 px" in err and "--max-pixels" in err
    assert psf_main([str(path), "--max-pixels", "20480"]) == 0
    assert psf_main([str(path), "--max-pixels", "0"]) == 2


# F11: a float image of counts gets the factor that brings it to 0..255 ---------------------------


def test_float_counts_are_refused_with_the_right_factor() -> None:
    grey = lines()
    counts = (240.0 + (grey - grey.min()) / np.ptp(grey) * 1872.0).astype(np.float32)  # 240..2112
    params = DegradationParams(
        rx_px=2.0, ry_px=2.0, beta=2.0, theta_rad=0.0, gain=1.0, offset=0.0, sigma=1.0, dose=10.0
    )
    with pytest.raises(ValueError, match=r"multiply by 255/2112 = 0\.121") as info:
        degrade(counts, params, 0)
    # counts below 4095: the 12-bit full scale keeps the picture's own brightness
    assert "or by 255/4095 = 0.0623 if these are 12-bit counts (0..4095)" in str(info.value)
    with pytest.raises(ValueError, match=r"255/65535 = 0\.00389 if these are 16-bit") as info:
        degrade(counts * 20, params, 0)  # peak 42240: 16-bit


# LZW, PackBits and Deflate TIFFs read as their uncompressed twins ----------------------------


@pytest.mark.parametrize("compression", ["tiff_lzw", "packbits", "tiff_adobe_deflate"])
@pytest.mark.parametrize("kind", ["uint8", "uint16", "palette"])
def test_a_compressed_tiff_reads_as_the_uncompressed_one(tmp_path: Path, compression, kind) -> None:
    """Image editors save TIFFs with LZW, which tifffile decodes only with the optional
    imagecodecs package: Pillow decodes it then, to the same samples and metadata."""
    frame = _stored()
    picture = Image.fromarray(frame.astype(np.uint16) * 257 if kind == "uint16" else frame)
    if kind == "palette":
        picture = picture.convert("P")
    plain, packed = tmp_path / "plain.tif", tmp_path / "packed.tif"
    res = {"resolution": 1e5, "resolution_unit": 3}  # 100,000 px per cm: 100 nm per pixel
    picture.save(plain, **res)
    picture.save(packed, compression=compression, **res)
    assert int(tifffile.TiffFile(packed).pages[0].compression) != 1
    want, got = read_image(plain), read_image(packed)
    np.testing.assert_array_equal(got.data, want.data)
    assert got.source_dtype == want.source_dtype == ("uint16" if kind == "uint16" else "uint8")
    assert got.value_scale == want.value_scale and got.notes == want.notes == ()
    assert got.pixel_size_nm == want.pixel_size_nm == pytest.approx(100.0)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_write_image_stores_the_orientation_read_image_applies(tmp_path: Path, suffix) -> None:
    frame = _stored()
    path = tmp_path / f"x{suffix}"
    write_image(path, frame, "uint8", orientation=3)  # rotated 180 degrees
    np.testing.assert_array_equal(read_image(path).data, frame[::-1, ::-1].astype(np.float32))
    write_image(path, frame, "uint8")  # 1: none stored
    np.testing.assert_array_equal(read_image(path).data, frame.astype(np.float32))
