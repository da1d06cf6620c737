"""SEM image I/O: formats, bit depths, colour, vendor metadata, info bar, real files."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from sem_physics.io import (
    crop_info_bar,
    detect_info_bar,
    frame_line_rows,
    read_image,
    write_image,
)

LINES = "lines_euv_resist_0p827nm.tif"
CONTACTS = "contacts_0p901nm.tif"


def _noisy(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 20, shape).clip(0, 255).astype(np.uint8)


# --- real images --------------------------------------------------------------------------------


def test_real_line_image_pixel_size_and_info_bar(real_dir: Path) -> None:
    path = real_dir / LINES
    img = read_image(path)
    raw = tifffile.imread(path)
    assert img.data.shape == (960, 1280) and img.data.dtype == np.float32
    np.testing.assert_array_equal(img.data, raw.astype(np.float32))
    assert img.source_dtype == "uint8"
    assert img.pixel_size_nm == pytest.approx(0.827009)
    assert img.pixel_size_source == "TIFF tag 40092 (Hitachi PixelSize)"
    assert img.info_bar_rows == 64  # the bar occupies rows 896-959
    assert crop_info_bar(img.data, img.info_bar_rows).shape == (896, 1280)


def test_real_contact_image_palette_zeiss_metadata(real_dir: Path) -> None:
    path = real_dir / CONTACTS
    img = read_image(path)
    with tifffile.TiffFile(path) as tif:
        idx = tif.pages[0].asarray()
        cmap = tif.pages[0].colormap
    # Palette applied through its (gray) colour map, 16-bit entries -> 0..255.
    np.testing.assert_allclose(img.data, cmap[0][idx] * (255 / 65535), atol=1e-3)
    assert img.pixel_size_nm == pytest.approx(0.9009)
    assert img.pixel_size_source == "CZ_SEM ap_image_pixel_size"
    # Zeiss bar: a black frame line at row 676 over the white bar, to the bottom (768 rows).
    assert img.info_bar_rows == 92
    top = img.data.shape[0] - img.info_bar_rows
    assert np.mean(img.data[top] < 5) > 0.99  # the frame line is part of the bar
    assert np.mean(img.data[top + 2] > 250) > 0.9  # white bar background
    assert np.mean(img.data[top - 1] < 5) < 0.05  # micrograph right above it
    assert np.mean(img.data[top - 1] > 250) < 0.05


def test_corpus_matches_its_manifest() -> None:
    """All 46 real micrographs read, with the size and pixel size their MANIFEST.csv records
    (pixel sizes there come from the vendor metadata, rounded to 4 significant digits)."""
    folder = os.environ.get("SEM_CORPUS_DATA")
    if not folder:
        pytest.skip("SEM_CORPUS_DATA not set")
    with open(Path(folder) / "MANIFEST.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 46
    labels = {"FEI/TFS": "FEI metadata Scan.PixelWidth", "Zeiss": "CZ_SEM ap_image_pixel_size"}
    with_size = fei_bars = 0
    for row in rows:
        img = read_image(Path(folder) / row["source_dir"] / row["file"])
        assert img.data.shape == (int(row["height"]), int(row["width"])), row["file"]
        assert img.data.dtype == np.float32 and np.isfinite(img.data).all()
        assert img.data.min() >= 0 and img.data.max() <= 255
        if row["pixel_size"]:
            value, vendor = re.fullmatch(r"([0-9.]+) nm \((\S+) .*\)", row["pixel_size"]).groups()
            assert img.pixel_size_nm == pytest.approx(float(value), rel=5e-4), row["file"]
            assert img.pixel_size_source == labels[vendor]
            with_size += 1
        else:
            assert (img.pixel_size_nm, img.pixel_size_source) == (None, "none"), row["file"]
        if img.info_bar_rows is not None:
            assert 0 < img.info_bar_rows < 0.35 * img.data.shape[0]
            # The whole bar is found: the row above it is micrograph, not black and white only
            # (text rows, the frame line over a bar).
            above = img.data[img.data.shape[0] - img.info_bar_rows - 1]
            lo, hi = img.data.min(), img.data.max()
            assert np.mean((above <= lo + 8) | (above >= hi - 8)) < 0.5, row["file"]
            if img.pixel_size_source.startswith("FEI"):  # the bar's height from the metadata:
                found = detect_info_bar(img.data)  # the detector agrees where it finds one
                assert found in (None, img.info_bar_rows), (row["file"], found)
                fei_bars += found is not None
    assert with_size == 23
    assert fei_bars == 4  # P33 A/B/C (black bar, text rows half white), a1XG3p


# --- vendor metadata on tiny synthetic TIFFs ----------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16-le", "ascii"])
def test_hitachi_tag_40092(tmp_path: Path, encoding: str) -> None:
    text = "SerialNumber=1\r\nPixelSize=1.234567\r\nCondition=Vacc=1kV\r\n".encode(encoding)
    path = tmp_path / "hitachi.tif"
    tifffile.imwrite(path, _noisy((40, 50)), extratags=[(40092, "B", len(text), text, True)])
    img = read_image(path)
    assert img.pixel_size_nm == pytest.approx(1.234567)
    assert img.pixel_size_source == "TIFF tag 40092 (Hitachi PixelSize)"


@pytest.mark.parametrize(("value", "unit", "nm"), [(900.9, "pm", 0.9009), (2.5, "nm", 2.5)])
def test_zeiss_cz_sem_tag(tmp_path: Path, value: float, unit: str, nm: float) -> None:
    text = f"\r\nAP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = {value} {unit}\r\n"
    path = tmp_path / "zeiss.tif"
    tifffile.imwrite(path, _noisy((40, 50)), extratags=[(34118, "s", 0, text, True)])
    img = read_image(path)
    assert img.pixel_size_nm == pytest.approx(nm)
    assert img.pixel_size_source == "CZ_SEM ap_image_pixel_size"


def test_fei_metadata_pixel_size_and_bar(tmp_path: Path) -> None:
    text = "[User]\r\nUser=x\r\n[Scan]\r\nPixelWidth=3.2e-09\r\n[Image]\r\nResolutionY=100\r\n"
    path = tmp_path / "fei.tif"
    tifffile.imwrite(path, _noisy((120, 80)), extratags=[(34682, "s", 0, text, True)])
    img = read_image(path)
    assert img.pixel_size_nm == pytest.approx(3.2)
    assert img.pixel_size_source == "FEI metadata Scan.PixelWidth"
    assert img.info_bar_rows == 20


def test_malformed_metadata_keeps_the_pixels(tmp_path: Path) -> None:
    text = "[Scan]\r\nPixelWidth=not-a-number\r\n[Image]\r\nResolutionY=-3\r\n"
    path = tmp_path / "fei_bad.tif"
    x = _noisy((40, 50))
    tifffile.imwrite(path, x, extratags=[(34682, "s", 0, text, True)])
    img = read_image(path)
    np.testing.assert_array_equal(img.data, x.astype(np.float32))
    assert (img.pixel_size_nm, img.pixel_size_source) == (None, "none")


def test_no_metadata(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, _noisy((40, 50)))
    img = read_image(path)
    assert (img.pixel_size_nm, img.pixel_size_source, img.info_bar_rows) == (None, "none", None)


# --- formats, bit depths, colour ----------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_uint16_round_trip_and_pixel_size(tmp_path: Path, ext: str) -> None:
    x = np.random.default_rng(1).uniform(0, 255, (30, 40)).astype(np.float32)
    path = write_image(tmp_path / f"x{ext}", x, "uint16", pixel_size_nm=0.75)
    img = read_image(path)
    assert img.source_dtype == "uint16"
    np.testing.assert_allclose(img.data, x, atol=0.5 * 255 / 65535 + 1e-4)
    assert img.pixel_size_nm == pytest.approx(0.75)


def test_uint32_tiff_round_trip(tmp_path: Path) -> None:
    """A uint32 TIFF holds rint(x * (2**32 - 1) / 255) and reads back on the 0..255 scale."""
    x = np.random.default_rng(3).uniform(-5, 260, (30, 40)).astype(np.float32)
    with pytest.warns(UserWarning, match="clipped"):
        path = write_image(tmp_path / "x.tif", x, "uint32")
    stored = tifffile.imread(path)
    want = [round(min(max(float(v), 0.0), 255.0) * 4294967295 / 255) for v in x.ravel()]
    assert stored.dtype == np.uint32 and stored.ravel().tolist() == want
    img = read_image(path)
    assert img.source_dtype == "uint32" and img.value_scale == 255 / 4294967295
    np.testing.assert_allclose(img.data, np.clip(x, 0, 255), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"cannot write dtype uint32 as '\.png'"):
        write_image(tmp_path / "x.png", x, "uint32")


def test_float32_tiff_is_exact_and_unclipped(tmp_path: Path) -> None:
    x = np.random.default_rng(2).normal(100, 80, (30, 40)).astype(np.float32)
    img = read_image(write_image(tmp_path / "x.tif", x, "float32"))
    np.testing.assert_array_equal(img.data, x)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
def test_uint8_round_trip(tmp_path: Path, ext: str) -> None:
    x = _noisy((20, 30)).astype(np.float32)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / f"x{ext}", x, "uint8")).data, x)


def test_jpeg_reads_close(tmp_path: Path) -> None:
    x = np.tile(np.linspace(0, 255, 64), (48, 1)).astype(np.uint8)
    Image.fromarray(x).save(tmp_path / "x.jpg", quality=95)
    img = read_image(tmp_path / "x.jpg")
    assert img.data.shape == (48, 64)
    assert np.abs(img.data - x).mean() < 2.0


def test_rgb_and_rgba_convert_to_bt601_luma(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    expected = np.rint(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png").data, expected)
    rgba = np.concatenate([rgb, rng.integers(0, 256, (20, 30, 1), dtype=np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")  # alpha is dropped, not composited
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png").data, expected)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.tif").data, expected)
    for name in ("rgb.png", "rgba.png", "rgb.tif"):  # a colour image says it was turned grey
        (note,) = read_image(tmp_path / name).notes
        assert "colour image" in note and "BT.601" in note


def test_equal_channels_keep_values_exactly(tmp_path: Path) -> None:
    g = _noisy((16, 16))
    tifffile.imwrite(tmp_path / "g3.tif", np.stack([g] * 3, -1), photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "g3.tif").data, g.astype(np.float32))
    assert read_image(tmp_path / "g3.tif").notes == ()  # nothing was lost: no note


def test_palette_png_and_tiff(tmp_path: Path) -> None:
    idx = np.random.default_rng(4).integers(0, 4, (12, 14), dtype=np.uint8)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [10, 20, 200]], dtype=np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette(colours.flatten().tolist())
    im.save(tmp_path / "p.png")
    luma = np.rint(colours.astype(float) @ [0.299, 0.587, 0.114])
    np.testing.assert_array_equal(read_image(tmp_path / "p.png").data, luma[idx])
    cmap = np.zeros((3, 256), dtype=np.uint16)
    cmap[:, :4] = colours.T.astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "p.tif", idx, photometric="palette", colormap=cmap)
    np.testing.assert_allclose(read_image(tmp_path / "p.tif").data, luma[idx], atol=0.51)
    for name in ("p.png", "p.tif"):  # coloured palettes are noted as colour is, in both formats
        (note,) = read_image(tmp_path / name).notes
        assert "colour" in note
    grey = np.repeat(np.arange(256, dtype=np.uint16)[None] * 257, 3, axis=0)  # a grey palette
    tifffile.imwrite(tmp_path / "g.tif", idx, photometric="palette", colormap=grey)
    img = read_image(tmp_path / "g.tif")
    assert img.notes == ()
    np.testing.assert_array_equal(img.data, idx.astype(np.float32))


def test_16bit_tiff_scaled_to_255(tmp_path: Path) -> None:
    x = np.array([[0, 257, 65535, 32896]], dtype=np.uint16).repeat(4, 0)
    tifffile.imwrite(tmp_path / "x.tif", x)
    img = read_image(tmp_path / "x.tif")
    np.testing.assert_allclose(img.data[0], [0, 1, 255, 128], atol=1e-4)
    assert img.source_dtype == "uint16"


def test_float_tiff_on_unit_scale(tmp_path: Path) -> None:
    x = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    tifffile.imwrite(tmp_path / "x.tif", x)
    np.testing.assert_allclose(read_image(tmp_path / "x.tif").data, x * 255, rtol=1e-6)


# --- info bar -----------------------------------------------------------------------------------


def _with_bar(h: int, w: int, bar: int, background: int) -> np.ndarray:
    img = _noisy((h, w), seed=5).astype(np.float64)
    img[h - bar :] = background
    text = 255 - background
    for x0 in range(10, w - 20, 25):  # blocky "text" on the bar
        img[h - bar + 5 : h - bar + 15, x0 : x0 + 6] = text
    img[h - bar + 5 : h - bar + 15, ::7] = text  # text rows keep only ~65 % background
    return img


@pytest.mark.parametrize("background", [0, 255])
def test_detect_info_bar_black_and_white(background: int) -> None:
    img = _with_bar(300, 400, 40, background)
    assert detect_info_bar(img) == 40
    assert detect_info_bar(_noisy((300, 400)).astype(float)) is None
    assert detect_info_bar(np.full((300, 400), 7.0)) is None  # flat: nothing to tell apart
    assert detect_info_bar(img * 1e9) is None  # not on a grey-level scale
    assert detect_info_bar(np.where(img > 0, img, np.nan)) is None


@pytest.mark.parametrize(("background", "frame_rows"), [(255, 1), (0, 3), (255, 0)])
def test_detect_info_bar_includes_frame_lines(background: int, frame_rows: int) -> None:
    """Frame lines of the other extreme right above the bar belong to it (Zeiss, FEI style)."""
    img = _with_bar(300, 400, 40, background)
    img[300 - 40 - frame_rows : 300 - 40] = 255 - background
    assert detect_info_bar(img) == 40 + frame_rows
    assert frame_line_rows(img[: 300 - 40]) == frame_rows
    # At most max_frame_rows of them: a thicker "frame" is left to the image.
    img[300 - 40 - 6 : 300 - 40] = 255 - background
    assert detect_info_bar(img, max_frame_rows=4) == 44
    assert frame_line_rows(img[: 300 - 40], max_rows=4) == 4


@pytest.mark.parametrize("background", [0, 255])
def test_detect_info_bar_through_dense_text_and_a_scale_bar(background: int) -> None:
    """Rows of a bar that are mostly text (more than the background) or a full-width scale
    bar of the other extreme are black and white only: they continue the bar, not end it."""
    img = _with_bar(300, 400, 60, background)
    text = 255 - background
    for x0 in range(0, 400, 40):
        img[300 - 60 + 15 : 300 - 60 + 35, x0 : x0 + 22] = text  # 55 % of those rows
    img[300 - 18 : 300 - 12] = text  # a scale bar across the whole width
    assert detect_info_bar(img) == 60
    # Noisy micrograph rows among them (more than max_gap): the bar is the background rows
    # below them; the text rows between do not make its top.
    img[300 - 60 + 20 : 300 - 60 + 23] = _noisy((3, 400), seed=9)
    assert detect_info_bar(img) == 60 - 35


@pytest.mark.parametrize("background", [0, 255])
def test_detect_info_bar_where_the_picture_runs_past_0_255(background: int) -> None:
    """An unclipped float simulation (values past 0..255) with the vendor's bar put back: the
    bar still reads as black or white on the 0..255 scale, and is found as on the 8-bit
    original, frame line included."""
    img = _with_bar(300, 400, 40, background)
    img[259] = 255 - background  # a frame line over the bar
    assert detect_info_bar(img) == 41
    picture = img[:259] * 2.0 - 60  # about -40..320
    assert picture.min() < -8 and picture.max() > 263
    assert detect_info_bar(np.concatenate([picture, img[259:]])) == 41


def test_detect_info_bar_keeps_noisy_rows_above_the_bar() -> None:
    """A dark but noisy micrograph row over a black bar is no frame line."""
    img = _with_bar(300, 400, 40, 0)
    rng = np.random.default_rng(1)
    img[259] = rng.uniform(0, 40, 400)  # only ~20 % of it within 8 levels of black
    assert detect_info_bar(img) == 40
    assert frame_line_rows(img[:260]) == 0
    assert frame_line_rows(np.full((20, 20), 7.0)) == 0  # flat: no black or white to tell
    assert frame_line_rows(np.zeros((1, 20))) == 0


def test_crop_info_bar_rules() -> None:
    x = np.arange(100 * 3).reshape(100, 3)
    assert crop_info_bar(x).shape == (93, 3)  # round(0.0667 * 100) = 7
    assert crop_info_bar(x, rows=10).shape == (90, 3)
    assert crop_info_bar(x, rows=0).shape == (100, 3)
    assert crop_info_bar(x, fraction=0.2).shape == (80, 3)
    np.testing.assert_array_equal(crop_info_bar(x, rows=10), x[:90])
