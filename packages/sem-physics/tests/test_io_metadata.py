"""Vendor metadata variants, pixel-size bounds, the size limit and the SEMImage helpers."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from sem_physics import SourceRecord
from sem_physics.io import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    check_pixel_size_nm,
    max_pixels_limit,
    read_image,
    write_image,
)

HITACHI = "TIFF tag 40092 (Hitachi PixelSize)"


def _noisy(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 20, shape).clip(0, 255).astype(np.uint8)


def _tiff(path: Path, tags: list[tuple], x: np.ndarray | None = None) -> Path:
    tifffile.imwrite(path, _noisy((40, 50)) if x is None else x, extratags=tags)
    return path


def _hitachi(path: Path, raw: bytes) -> Path:
    return _tiff(path, [(40092, "B", len(raw), raw, True)])


# --- Hitachi tag 40092 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "nm"),
    [
        (b"SerialNumber=1\r\nPixelSize=0.827009\r\n\x00", 0.827009),  # ASCII, NUL-terminated
        (b"PixelSize=0.827009\x00\x00\x00", 0.827009),  # several NULs
        (b"PixelSize=0,827\r\nMag=100000\r\n", 0.827),  # comma decimal
        (b"PixelSize=0,827\x00", 0.827),  # both
        ("PixelSize=1.5\r\n".encode("utf-16-le") + b"\x00\x00", 1.5),  # UTF-16 + terminator
        ("PixelSize=2,25\r\n".encode("utf-16-le"), 2.25),  # UTF-16 comma decimal
        ("PixelSize=3.5".encode("utf-16"), 3.5),  # with a byte-order mark
    ],
)
def test_hitachi_variants_keep_the_pixel_size(tmp_path: Path, raw: bytes, nm: float) -> None:
    img = read_image(_hitachi(tmp_path / "h.tif", raw))
    assert img.pixel_size_nm == pytest.approx(nm, rel=1e-12)
    assert img.pixel_size_source == HITACHI


def test_hitachi_out_of_range_is_ignored_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    img = read_image(_hitachi(tmp_path / "h.tif", b"PixelSize=1e-30\x00"))
    assert img.pixel_size_nm is None
    assert img.pixel_size_source.startswith(f"none (ignored: {HITACHI} = 1e-30 nm")
    assert "pixel size ignored" in caplog.text and "h.tif" in caplog.text


def test_out_of_range_source_falls_back_to_the_next_one(tmp_path: Path) -> None:
    raw = b"PixelSize=5e9\x00"  # 5 m per pixel: a unit mistake
    desc = '{"sem_physics": {"pixel_size_nm": 0.5}}'
    path = tmp_path / "two.tif"
    tifffile.imwrite(
        path, _noisy((40, 50)), description=desc, extratags=[(40092, "B", len(raw), raw, True)]
    )
    img = read_image(path)
    assert img.pixel_size_nm == 0.5
    assert img.pixel_size_source == "ImageDescription sem_physics.pixel_size_nm"


# --- Zeiss and FEI ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "nm", "source"),
    [
        ("\r\nAP_PIXEL_SIZE\r\nPixel Size = 2.5 nm\r\n", 2.5, "CZ_SEM ap_pixel_size"),
        ("\r\nAP_PIXEL_SIZE\r\nPixel Size = 2,5 nm\r\n", 2.5, "CZ_SEM ap_pixel_size"),
        ("\r\nAP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = 900,9 pm\r\n", 0.9009, None),
    ],
)
def test_zeiss_variants_name_the_key_used(
    tmp_path: Path, text: str, nm: float, source: str | None
) -> None:
    img = read_image(_tiff(tmp_path / "z.tif", [(34118, "s", 0, text, True)]))
    assert img.pixel_size_nm == pytest.approx(nm)
    assert img.pixel_size_source == (source or "CZ_SEM ap_image_pixel_size")


@pytest.mark.parametrize(
    ("text", "nm", "source"),
    [
        ("[Scan]\r\nDwell=1e-06\r\n[EScan]\r\nPixelWidth=8.27e-10\r\n", 0.827, "EScan"),
        ("[Scan]\r\nPixelWidth=8,27e-10\r\n[EScan]\r\nPixelWidth=1e-9\r\n", 0.827, "Scan"),
        ("[Scan]\r\nPixelWidth=1e-30\r\n[EScan]\r\nPixelWidth=2e-9\r\n", 2.0, "EScan"),
        ("[EScan]\r\nPixelWidth=3e-09\r\n", 3.0, "EScan"),
    ],
)
def test_fei_scan_falls_back_to_escan(tmp_path: Path, text: str, nm: float, source: str) -> None:
    img = read_image(_tiff(tmp_path / "f.tif", [(34682, "s", 0, text, True)]))
    assert img.pixel_size_nm == pytest.approx(nm)
    assert img.pixel_size_source == f"FEI metadata {source}.PixelWidth"


# --- pixel-size bounds --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1e-3, 0.827, 1e6])
def test_pixel_size_bounds_accept(value: float) -> None:
    assert check_pixel_size_nm(value) == value


@pytest.mark.parametrize("value", [1e-30, 0.0, -1.0, 9.99e-4, 1.0001e6, float("nan"), "abc", None])
def test_pixel_size_bounds_refuse_with_the_range(value: object) -> None:
    with pytest.raises(ValueError, match=r"--pixel-size-nm must be"):
        check_pixel_size_nm(value, "--pixel-size-nm")


def test_write_and_with_pixel_size_check_the_bounds(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match=r"x\.tif: pixel_size_nm must be within"):
        write_image(tmp_path / "x.tif", np.zeros((4, 4)), pixel_size_nm=1e-30)
    assert not list(tmp_path.iterdir())
    img = read_image(write_image(tmp_path / "y.tif", np.zeros((4, 4)), pixel_size_nm=2.0))
    with pytest.raises(ValueError, match="1 pm to 1 mm"):
        img.with_pixel_size(1e7, "--pixel-size-nm")


# --- size limit before decoding -----------------------------------------------------------------


def _forged_tiff(path: Path, width: int, height: int) -> Path:
    """A 16 x 16 TIFF whose tags then claim ``width`` x ``height`` (a decompression bomb)."""
    tifffile.imwrite(path, _noisy((16, 16)))
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(width)
        tif.pages[0].tags["ImageLength"].overwrite(height)
    return path


def _forged_png(path: Path, width: int, height: int) -> Path:
    """A small PNG whose IHDR claims ``width`` x ``height`` (CRC recomputed)."""
    Image.fromarray(_noisy((16, 16))).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 4  # signature, chunk length
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 4 + 13]))
    data[ihdr + 4 + 13 : ihdr + 4 + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("forge", [_forged_tiff, _forged_png])
def test_declared_size_is_refused_before_decoding(tmp_path: Path, forge: object) -> None:
    ext = ".tif" if forge is _forged_tiff else ".png"
    path = forge(tmp_path / f"bomb{ext}", 30000, 30000)  # type: ignore[operator]
    assert path.stat().st_size < 5000
    with pytest.raises(
        ImageReadError, match=r"bomb\.(tif|png): declares 30000x30000 px = 900,000,000 px"
    ):
        read_image(path)


def test_pixel_counts_in_messages_keep_their_order() -> None:
    from sem_physics.io import pixel_count

    counts = [1, 999, 999_999, 1_000_000, 1_000_001, 1_234_567, 100_000_000, 100_000_001]
    for n in counts:
        text = pixel_count(n)
        assert text.startswith(f"{n:,} px")  # the exact count, whatever the size
    # two different counts never read the same (the rounded Mpx alone could)
    assert len({pixel_count(n) for n in counts}) == len(counts)


def test_limit_from_argument_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(_noisy((16, 20))).save(path)  # 320 px
    assert max_pixels_limit() == DEFAULT_MAX_PIXELS == 100_000_000
    # the counts in px, exactly: the image above the limit must read as above it
    with pytest.raises(ImageReadError, match=r"= 320 px, above the limit of 300 px "):
        read_image(path, max_pixels=300)
    assert read_image(path, max_pixels=320).data.shape == (16, 20)
    monkeypatch.setenv("SEM_MAX_PIXELS", "100")
    with pytest.raises(ImageReadError, match="SEM_MAX_PIXELS"):
        read_image(path)
    assert read_image(path, max_pixels=1000).data.shape == (16, 20)  # the argument wins
    monkeypatch.setenv("SEM_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="environment variable SEM_MAX_PIXELS must be an integer"):
        read_image(path)
    with pytest.raises(ValueError, match="max_pixels must be an integer"):
        read_image(path, max_pixels=0)


def test_uint16_and_float64_conversions_stay_exact_in_float32(tmp_path: Path) -> None:
    """The float32 paths give the float64 formula's values, rounded once."""
    rng = np.random.default_rng(7)
    u16 = rng.integers(0, 65536, (300, 70), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "u.tif", u16)
    expected = (u16.astype(np.float64) * (255.0 / 65535.0)).astype(np.float32)
    np.testing.assert_array_equal(read_image(tmp_path / "u.tif").data, expected)
    f64 = rng.normal(100, 50, (300, 70))
    tifffile.imwrite(tmp_path / "f.tif", f64)
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif").data, f64.astype(np.float32))
    tifffile.imwrite(tmp_path / "big.tif", np.array([[1e300, 0.0]]))
    with pytest.raises(ImageReadError, match=r"big\.tif: pixel values beyond the float32 range"):
        read_image(tmp_path / "big.tif")


# --- SEMImage helpers and the source record -----------------------------------------------------


def test_sem_image_helpers_keep_the_pixel_size_source(tmp_path: Path) -> None:
    x = _noisy((60, 50)).astype(np.float32)
    x[48:] = 0.0  # a flat black bottom band: detected as an info bar of 12 rows
    x[50:55, 10:20] = 255.0
    path = write_image(tmp_path / "s.tif", x, "float32", pixel_size_nm=0.75)
    img = read_image(path)
    assert img.info_bar_rows == 12
    cropped = img.without_info_bar()
    assert cropped.data.shape == (48, 50) and cropped.cropped_rows == 12
    assert cropped.info_bar_rows == 0
    assert (cropped.pixel_size_nm, cropped.pixel_size_source) == (0.75, img.pixel_size_source)
    np.testing.assert_array_equal(cropped.data, x[:48])
    again = cropped.without_info_bar(rows=8)
    assert again.cropped_rows == 20 and again.data.shape == (40, 50)
    flagged = cropped.with_pixel_size(1.5, "--pixel-size-nm")
    assert (flagged.pixel_size_nm, flagged.pixel_size_source) == (1.5, "--pixel-size-nm")
    assert img.pixel_size_nm == 0.75  # the original is unchanged (frozen)

    record = SourceRecord.from_image(cropped)
    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record.shape == (48, 50) and record.cropped_rows == 12
    assert (
        record.pixel_size_source
        == img.pixel_size_source
        == ("ImageDescription sem_physics.pixel_size_nm")
    )
    assert SourceRecord.model_validate_json(record.model_dump_json()) == record
    with pytest.raises(ValueError, match="pixel_size_nm"):
        SourceRecord(path="x", shape=(1, 1), pixel_size_nm=1e-30)


def test_source_record_from_pixels_hashes_what_was_used_and_the_whole_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``from_pixels`` is ``from_image``'s record when given no frame; given the whole frame,
    its hash is that of the frame as read (the cropped rows included), that of the pixels used
    when none was cropped; the path is recorded as given, not normalised."""
    x = _noisy((40, 30)).astype(np.float32)
    write_image(tmp_path / "s.tif", x, "float32", pixel_size_nm=0.5)
    monkeypatch.chdir(tmp_path)
    img = read_image("./s.tif")
    used = img.data[:32]
    args = {"pixel_size_nm": img.pixel_size_nm, "pixel_size_source": img.pixel_size_source}
    record = SourceRecord.from_pixels("./s.tif", used, cropped_rows=8, frame=img.data, **args)
    frame_digest = hashlib.sha256(f"{img.data.dtype.str}{img.data.shape}".encode())
    frame_digest.update(np.ascontiguousarray(img.data).tobytes())
    assert record.frame_pixels_sha256 == frame_digest.hexdigest() != record.pixels_sha256
    assert record.path == "./s.tif" and record.shape == (32, 30) and record.cropped_rows == 8
    assert record.sha256 == hashlib.sha256((tmp_path / "s.tif").read_bytes()).hexdigest()
    whole = SourceRecord.from_pixels("s.tif", img.data, frame=img.data, **args)
    assert whole.frame_pixels_sha256 == whole.pixels_sha256 == record.frame_pixels_sha256
    cropped = img.without_info_bar(rows=8)
    assert SourceRecord.from_image(cropped) == SourceRecord.from_pixels(
        "s.tif", used, cropped_rows=8, **args
    )
    assert SourceRecord.from_pixels("gone.tif", used, hash_file=False, **args).sha256 is None
