"""What reading says about a file: the JPEG warning, the value scale of the file's pixels."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from sem_physics import make_sample, read_image
from sem_physics.io import JPEG_NOTE


def lines(shape=(64, 80)) -> np.ndarray:
    return make_sample("lines", shape, seed=0).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg"])
def test_a_jpeg_is_noted_and_logged_naming_the_file(tmp_path: Path, caplog, suffix) -> None:
    path = tmp_path / f"x{suffix}"
    Image.fromarray(lines()).save(path, format="JPEG", quality=90)
    with caplog.at_level(logging.WARNING, logger="sem_physics.io"):
        img = read_image(path)
    assert JPEG_NOTE in img.notes
    assert [r.getMessage() for r in caplog.records] == [f"{path}: {JPEG_NOTE}"]


def test_a_jpeg_compressed_tiff_is_noted(tmp_path: Path) -> None:
    """tifffile decodes it with the optional imagecodecs, Pillow's libtiff without it: either
    way the image carries the JPEG note (never read silently)."""
    path = tmp_path / "x.tif"
    Image.fromarray(lines()).save(path, compression="jpeg")  # Pillow's libtiff writes it
    assert int(tifffile.TiffFile(path).pages[0].compression) == 7
    assert JPEG_NOTE in read_image(path).notes


def test_lossless_files_carry_no_jpeg_note(tmp_path: Path, caplog) -> None:
    Image.fromarray(lines()).save(tmp_path / "x.png")
    tifffile.imwrite(tmp_path / "x.tif", lines())
    with caplog.at_level(logging.WARNING, logger="sem_physics.io"):
        assert read_image(tmp_path / "x.png").notes == ()
        assert read_image(tmp_path / "x.tif").notes == ()
    assert not caplog.records


def _sem_psf(path: Path) -> subprocess.CompletedProcess[str]:
    """``sem-psf PATH`` run as a process of its own (its stderr as a user sees it)."""
    code = "import sys; from sem_physics.psf_cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )


def test_sem_psf_shows_the_jpeg_warning(tmp_path: Path) -> None:
    path = tmp_path / "lines.jpg"
    Image.fromarray(lines((96, 128))).save(path, quality=90)
    done = _sem_psf(path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [f"sem-psf: warning: {path}: {JPEG_NOTE}"]


@pytest.mark.parametrize(
    ("array", "scale"),
    [
        (lines(), 1.0),
        (lines().astype(np.uint16) * 257, 255 / 65535),
        (lines().astype(np.float32) / 255, 255.0),
        (lines().astype(np.float32), 1.0),
    ],
)
def test_value_scale_is_what_reading_multiplied_by(tmp_path: Path, array, scale) -> None:
    tifffile.imwrite(tmp_path / "x.tif", array)
    img = read_image(tmp_path / "x.tif")
    assert img.value_scale == pytest.approx(scale, rel=1e-12)
    np.testing.assert_allclose(img.data, array.astype(np.float64) * scale, rtol=1e-6)


def test_the_jpeg_warning_is_logged_once_per_file(tmp_path: Path, caplog) -> None:
    """Training reads each file every epoch: the warning comes once, the note every time."""
    path = tmp_path / "again.jpg"
    Image.fromarray(lines()).save(path, quality=90)
    with caplog.at_level(logging.WARNING, logger="sem_physics.io"):
        assert all(JPEG_NOTE in read_image(path).notes for _ in range(3))
    assert len(caplog.records) == 1


def _tiff_with_a_tag_past_the_end(path: Path) -> np.ndarray:
    """A readable TIFF one of whose tags points beyond the end of the file (tifffile logs it
    and reads the image); returns the pixels written."""
    pixels = lines()
    tifffile.imwrite(path, pixels, extratags=[(40001, "s", 0, "x" * 200, False)], metadata=None)
    with tifffile.TiffFile(path) as tif:
        entry = tif.pages[0].tags[40001].offset  # the tag's 12-byte entry in the IFD
    with open(path, "r+b") as fh:
        fh.seek(entry + 8)  # its value offset
        fh.write((10_000_000).to_bytes(4, "little"))
    return pixels


def test_what_tifffile_logs_about_a_readable_file_is_a_note_of_it(tmp_path: Path, caplog) -> None:
    """tifffile's own log line (no file name, no command name) is held back: the file's note
    names the file, once."""
    path = tmp_path / "odd_tag.tif"
    pixels = _tiff_with_a_tag_past_the_end(path)
    with caplog.at_level(logging.WARNING):
        img = read_image(path)
        again = read_image(path)
    np.testing.assert_array_equal(img.data, pixels)
    assert len(img.notes) == 1 and img.notes == again.notes
    assert img.notes[0].startswith("TIFF reader: ") and "invalid value offset" in img.notes[0]
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("sem_physics.io", f"{path}: {img.notes[0]}")
    ]


def test_a_truncated_tiff_is_one_error_and_no_tifffile_log_line(tmp_path: Path) -> None:
    """sem-psf on a TIFF cut short after its tags (a copy interrupted): one stderr line, the
    error naming the file; tifffile's complaint about the missing tag value printed before it
    as a bare line of its own."""
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, lines((256, 256)), extratags=[(40001, "s", 0, "x" * 200, False)])
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[:300])  # the tags' entries, not their values or pixels
    done = _sem_psf(cut)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"sem-psf: error: {cut}: cannot decode as TIFF (corrupt, truncated")
