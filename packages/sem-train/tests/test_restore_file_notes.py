"""``sem restore`` on the files users have: float 0..1 TIFFs, EXIF tags, JPEGs, repeated
inputs, unknown settings; every such case says what happened in one line."""

from __future__ import annotations

import json
import logging
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps
from sem_physics import make_sample, read_image
from sem_physics.io import JPEG_NOTE
from sem_train import restore
from sem_train.cli import main
from sem_train.restoration import MANIFEST_NAME

PSF = ["--psf", "2,2,0,2"]
BAR = 12


def run(*argv) -> int:
    return main(["restore", *map(str, argv)])


def record(out: Path) -> dict:
    return json.loads((out / MANIFEST_NAME).read_text())


def frame01(shape=(64, 80)) -> np.ndarray:
    """A 0..1 float picture above a black info bar with a white label."""
    img = 0.15 + 0.7 * make_sample("lines", shape, seed=0) / 255.0
    bar = np.zeros((BAR, shape[1]))
    bar[3:-3, 4:30] = 1.0
    return np.concatenate([img, bar]).astype(np.float32)


def test_a_float_tiff_on_0_1_is_written_back_on_0_1(tmp_path, capsys):
    frame = frame01()
    src = tmp_path / "float01.tif"
    tifffile.imwrite(src, frame)
    out = tmp_path / "out"
    assert run(src, "-o", out, *PSF, "--info-bar-rows", BAR) == 0
    restored = tifffile.imread(out / "float01.tif")
    assert restored.dtype == np.float32 and restored.shape == frame.shape
    np.testing.assert_array_equal(restored[-BAR:], frame[-BAR:])  # bar bit-identical
    assert 0.0 <= restored[:-BAR].min() and restored[:-BAR].max() <= 1.0 + 1e-6
    ref = restore(read_image(src).data[:-BAR], "richardson-lucy", psf="2,2,0,2").image
    np.testing.assert_allclose(restored[:-BAR] * 255.0, ref, rtol=1e-6, atol=1e-4)
    item = record(out)["restored"][0]
    assert item["input_value_scale"] == item["output_value_scale"] == 255.0
    assert any("written back on 0..1" in n for n in item["output_notes"])
    assert f"sem: note: {src}: float input on 0..1" in capsys.readouterr().err
    # read back, the restoration has the input's brightness again
    assert abs(float(read_image(out / "float01.tif").data[:-BAR].mean()) - ref.mean()) < 0.01


def test_a_float_input_past_0_255_says_its_values_come_back_clipped(tmp_path, capsys):
    sample = make_sample("texture", (64, 80), seed=1).astype(np.float32)
    frame = sample * np.float32(280.0 / sample.max())
    tifffile.imwrite(tmp_path / "hot.tif", frame)
    assert run(tmp_path / "hot.tif", "-o", tmp_path / "out", *PSF, "--info-bar-rows", 0) == 0
    assert tifffile.imread(tmp_path / "out" / "hot.tif").max() <= 255.0
    note = f"float input runs past 0..255 ({frame.min():.4g}..{frame.max():.4g})"
    assert any(n.startswith(note) for n in record(tmp_path / "out")["restored"][0]["output_notes"])
    assert note in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "cool.tif", sample)  # within 0..255: nothing to say
    assert run(tmp_path / "cool.tif", "-o", tmp_path / "out2", *PSF, "--info-bar-rows", 0) == 0
    assert "past 0..255" not in capsys.readouterr().err


def test_float32_of_an_integer_input_stays_on_0_255(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.rint(frame01() * 255).astype(np.uint8))
    assert run(tmp_path / "a.tif", "-o", tmp_path / "out", *PSF, "--float32") == 0
    assert tifffile.imread(tmp_path / "out" / "a.tif").max() > 1.5
    assert record(tmp_path / "out")["restored"][0]["output_value_scale"] == 1.0


def tiff_with_exif(path: Path, image: np.ndarray, unique_id: str) -> None:
    """An 8-bit TIFF whose first page points to an EXIF IFD holding ImageUniqueID (as FEI and
    Thermo microscopes write them; tifffile cannot write one)."""
    h, w = image.shape
    data = image.astype(np.uint8).tobytes()
    ifd0 = 8 + len(data) + (len(data) % 2)
    entries = [
        (256, 3, 1, w), (257, 3, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
        (273, 4, 1, 8), (277, 3, 1, 1), (278, 3, 1, h), (279, 4, 1, len(data)),
    ]  # fmt: skip
    exif = ifd0 + 2 + 12 * (len(entries) + 1) + 4
    entries.append((34665, 4, 1, exif))
    text = unique_id.encode() + b"\0"
    text_at = exif + 2 + 12 + 4

    def entry(code, kind, count, value):
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        return struct.pack("<HHI", code, kind, count) + packed

    out = b"II" + struct.pack("<HI", 42, ifd0) + data + b"\0" * (len(data) % 2)
    out += struct.pack("<H", len(entries)) + b"".join(entry(*e) for e in entries)
    out += struct.pack("<I", 0)
    out += struct.pack("<H", 1) + entry(42016, 2, len(text), text_at) + struct.pack("<I", 0)
    path.write_bytes(out + text)


def test_an_exif_ifd_is_named_as_not_copied_and_tifffile_says_nothing(tmp_path, capsys, caplog):
    src = tmp_path / "fei.tif"
    tiff_with_exif(src, make_sample("contacts", (48, 64), seed=1), "B9E0139F1B5F2A27")
    with tifffile.TiffFile(src) as tif:  # the file is what a microscope writes
        assert tif.pages[0].tags[34665].value == {"ImageUniqueID": "B9E0139F1B5F2A27"}
    with caplog.at_level(logging.WARNING):
        assert run(src, "-o", tmp_path / "out", *PSF) == 0
    assert not [r for r in caplog.records if "extratag" in r.getMessage()]
    item = record(tmp_path / "out")["restored"][0]
    assert item["output_notes"] == [
        "TIFF tag 34665 (EXIF IFD: ImageUniqueID) not copied to the output: the writer cannot "
        "copy a sub-directory of tags"
    ]
    err = capsys.readouterr().err
    assert f"sem: note: {src}: TIFF tag 34665 (EXIF IFD: ImageUniqueID) not copied" in err
    assert "extratag" not in err and ".tmp" not in err


def test_a_jpeg_input_is_named_once_with_the_reason(tmp_path, capsys, caplog):
    src = tmp_path / "lines.jpg"
    Image.fromarray(make_sample("lines", (48, 64), seed=2).astype(np.uint8)).save(src, quality=90)
    with caplog.at_level(logging.WARNING):
        assert run(src, "-o", tmp_path / "out", *PSF) == 0
    err = capsys.readouterr().err
    assert err.count("JPEG input") == 1
    assert f"sem: warning: {src}: {JPEG_NOTE}" in err
    assert not [r for r in caplog.records if "JPEG" in r.getMessage()]  # said once, not logged
    assert record(tmp_path / "out")["restored"][0]["input_notes"] == [JPEG_NOTE]


def test_the_same_file_given_twice_is_restored_once(tmp_path, capsys):
    src = tmp_path / "in" / "a.tif"
    src.parent.mkdir()
    tifffile.imwrite(src, np.rint(frame01() * 255).astype(np.uint8))
    out = tmp_path / "out"
    assert run(src, src.parent / "." / "a.tif", "-o", out, *PSF) == 0
    rec = record(out)
    assert [r["output"] for r in rec["restored"]] == ["a.tif"] and not rec["failed"]
    assert rec["notes"] == [f"{src} is given more than once: restored once"]
    assert f"sem: note: {src} is given more than once: restored once" in capsys.readouterr().err
    # a file and the folder holding it: one input too
    assert run(src.parent, src, "-o", tmp_path / "out2", *PSF) == 0
    assert len(record(tmp_path / "out2")["restored"]) == 1


def test_an_unknown_setting_lists_the_accepted_ones(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.rint(frame01() * 255).astype(np.uint8))
    assert run(tmp_path / "a.tif", "-o", tmp_path / "out", "--method", "wiener",
               "--set", "iterations=10") == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err == (
        "sem: error: method 'wiener', setting iterations: not a setting of this method "
        "(accepted: balance, boundary, clip, noise_var, preset, tau)\n"
    )
    assert run(tmp_path / "a.tif", "-o", tmp_path / "out", "--method", "bm3d",
               "--set", "balance=1") == 2  # fmt: skip
    assert "(accepted: clip, correct_highpass, profile, sigma, threads)" in capsys.readouterr().err


def test_the_pixel_size_of_an_imagej_tiff_reads_back_the_same(tmp_path):
    src = tmp_path / "fiji.tif"
    tifffile.imwrite(
        src,
        make_sample("lines", (64, 80), seed=2).astype(np.uint8),
        description="ImageJ=1.54f\nunit=\\u00B5m\nmin=0.0\nmax=255.0\n",
        metadata=None,
        resolution=(1 / 0.000827, 1 / 0.000827),
    )
    a = read_image(src)
    assert a.pixel_size_nm == pytest.approx(0.827, rel=1e-6)
    out = tmp_path / "out"
    assert run(src, "-o", out, "--method", "wiener", *PSF, "--info-bar-rows", 0) == 0
    b = read_image(out / "fiji.tif")
    assert b.pixel_size_nm == a.pixel_size_nm and b.pixel_size_source == a.pixel_size_source
    assert record(out)["restored"][0]["pixel_size_nm"] == a.pixel_size_nm


VENDOR_TEXT = "Zeiss SEM\r\nAP_PIXEL_SIZE\r\nPixel Size = 2.0 nm"


def layout_tiff(path: Path, kind: str) -> None:
    """A TIFF whose ImageDescription states a layout other than one grey page, calibrated
    2 nm per pixel (XResolution per cm, or ImageJ's unit=nm)."""
    page = make_sample("lines", (64, 80), seed=2).astype(np.uint8)
    per_cm = {"resolution": (1e7 / 2.0, 1e7 / 2.0), "resolutionunit": "CENTIMETER"}
    if kind == "2-page stack":  # tifffile's {"shape": [2, 64, 80]}
        tifffile.imwrite(path, np.stack([page, page]), **per_cm)
    elif kind == "stack with vendor text":  # the vendor's text first, tifffile's shape second
        tifffile.imwrite(path, np.stack([page, page]), description=VENDOR_TEXT, **per_cm)
    elif kind == "rgb":  # {"shape": [64, 80, 3]}
        tifffile.imwrite(path, np.stack([page] * 3, axis=-1), **per_cm)
    else:  # an ImageJ stack: images=2, slices=2, hyperstack=true, unit=nm
        tifffile.imwrite(
            path, np.stack([page, page]), imagej=True, resolution=(1 / 2.0, 1 / 2.0),
            metadata={"axes": "ZYX", "unit": "nm", "spacing": 1.0},
        )  # fmt: skip


@pytest.mark.parametrize("kind", ["2-page stack", "stack with vendor text", "rgb", "imagej"])
def test_a_description_of_another_layout_is_rewritten_for_the_one_grey_page(tmp_path, caplog, kind):
    """The output is one grey page: the input's description of a stack or colour layout
    (tifffile's shape, ImageJ's images=/slices=/hyperstack=) made tifffile fail or warn on it;
    a vendor's text and ImageJ's calibration stay, and so does the pixel size."""
    src = tmp_path / "in.tif"
    layout_tiff(src, kind)
    a = read_image(src)
    assert a.pixel_size_nm == pytest.approx(2.0)
    out = tmp_path / "out"
    assert run(src, "-o", out, "--method", "wiener", *PSF, "--info-bar-rows", 0) == 0
    caplog.clear()
    with (
        caplog.at_level(logging.DEBUG, logger="tifffile"),
        warnings.catch_warnings(record=True) as issued,
    ):
        warnings.simplefilter("always")
        with tifffile.TiffFile(out / "in.tif") as tif:
            data = tif.asarray()
            description = tif.pages[0].description
            assert len(tif.pages) == 1 and len(tif.series) == 1
    assert not issued and not [r for r in caplog.records if r.name.startswith("tifffile")]
    assert data.shape == (64, 80) and data.dtype == np.uint8
    assert '"shape"' not in description and "images=" not in description
    if kind == "stack with vendor text":
        assert description == VENDOR_TEXT
    if kind == "imagej":
        assert description.splitlines() == ["ImageJ=1.11a", "unit=nm", "spacing=1.0"]
    b = read_image(out / "in.tif")
    assert b.pixel_size_nm == a.pixel_size_nm
    if kind in ("stack with vendor text", "imagej"):  # read from the same tags
        assert b.pixel_size_source == a.pixel_size_source


def test_an_ome_description_is_left_out_and_named(tmp_path):
    """OME-XML describes every plane of the input: copied to the one-page output, tifffile
    read that page as a stack of two."""
    src = tmp_path / "ome.tif"
    page = make_sample("lines", (64, 80), seed=2).astype(np.uint8)
    tifffile.imwrite(src, np.stack([page, page]), ome=True, metadata={"axes": "ZYX"})
    out = tmp_path / "out"
    assert run(src, "-o", out, "--method", "wiener", *PSF, "--info-bar-rows", 0) == 0
    with tifffile.TiffFile(out / "ome.tif") as tif:
        assert not tif.is_ome and tif.asarray().shape == (64, 80)
    assert record(out)["restored"][0]["output_notes"] == [
        "TIFF tag 270 (ImageDescription: OME-XML) not copied to the output: it describes the "
        "input's planes, not the one grey page written"
    ]


def test_a_tiff_tag_the_reader_cannot_read_is_said_once_naming_the_file(tmp_path, capsys, caplog):
    """tifffile logs a tag whose value lies past the end of the file each time the file is
    opened (read, then its tags copied to the output): one warning line naming the file, not
    tifffile's own lines without it."""
    src = tmp_path / "odd_tag.tif"
    tifffile.imwrite(
        src,
        make_sample("lines", (48, 64), seed=3).astype(np.uint8),
        extratags=[(40001, "s", 0, "x" * 200, False)],
        metadata=None,
    )
    with tifffile.TiffFile(src) as tif:
        entry = tif.pages[0].tags[40001].offset
    with open(src, "r+b") as fh:
        fh.seek(entry + 8)  # the tag's value offset: past the end of the file
        fh.write(struct.pack("<I", 10_000_000))
    with caplog.at_level(logging.WARNING):
        assert run(src, "-o", tmp_path / "out", *PSF) == 0
    err = capsys.readouterr().err
    assert err.count("invalid value offset") == 1
    assert f"sem: warning: {src}: TIFF reader: <TiffTag.fromfile> raised" in err
    assert not [r for r in caplog.records if r.name == "tifffile"]
    note = record(tmp_path / "out")["restored"][0]["input_notes"]
    assert len(note) == 1 and note[0].startswith("TIFF reader: ")


@pytest.mark.parametrize("bar", [True, False])
def test_an_oriented_tiff_output_is_shown_turned_as_its_input(tmp_path, bar):
    """A frame with an info bar is read as stored (its Orientation tag not applied), one
    without is turned when read: either way a viewer shows the output in the input's frame."""
    frame = np.rint(frame01() * 255.0).astype(np.uint8)
    if not bar:
        frame = frame[:-BAR]
    src = tmp_path / "in" / "x.tif"
    src.parent.mkdir()
    tifffile.imwrite(src, frame, photometric="minisblack", extratags=[(274, "H", 1, 3, True)])
    assert (read_image(src).info_bar_rows is not None) == bar
    assert run(src, "-o", tmp_path / "out", "--method", "input") == 0
    with Image.open(src) as a, Image.open(tmp_path / "out" / "x.tif") as b:
        shown_in, shown_out = ImageOps.exif_transpose(a), ImageOps.exif_transpose(b)
        np.testing.assert_array_equal(np.asarray(shown_out), np.asarray(shown_in))


def test_an_lzw_float_tiff_on_0_1_keeps_its_info_bar_bit_identical(tmp_path):
    """An LZW TIFF (as image editors save them; tifffile needs the optional imagecodecs for
    it) is restored like its uncompressed twin, its bar copied from the file as stored."""
    frame = frame01()
    plain, packed = tmp_path / "plain" / "x.tif", tmp_path / "packed" / "x.tif"
    for path, options in ((plain, {}), (packed, {"compression": "tiff_lzw"})):
        path.parent.mkdir()
        Image.fromarray(frame).save(path, **options)
        assert run(path, "-o", path.parent / "out", *PSF, "--info-bar-rows", BAR) == 0
    assert int(tifffile.TiffFile(packed).pages[0].compression) == 5
    restored = tifffile.imread(packed.parent / "out" / "x.tif")
    np.testing.assert_array_equal(restored[-BAR:], frame[-BAR:])
    np.testing.assert_array_equal(restored, tifffile.imread(plain.parent / "out" / "x.tif"))


def test_an_oriented_png_or_jpeg_with_an_info_bar_keeps_its_tag(tmp_path):
    """A PNG or JPEG with an info bar is read as stored under its EXIF Orientation tag: the
    PNG output carries the tag in its EXIF, the TIFF made of a JPEG as its TIFF tag."""
    frame = np.rint(frame01() * 255.0).astype(np.uint8)
    exif = Image.Exif()
    exif[274] = 3
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(frame).save(src / "x.png", exif=exif)
    Image.fromarray(frame).save(src / "y.jpg", exif=exif, quality=95)
    assert read_image(src / "x.png").info_bar_rows is not None
    assert run(src, "-o", tmp_path / "out", "--method", "input") == 0
    with Image.open(src / "x.png") as a, Image.open(tmp_path / "out" / "x.png") as b:
        shown_in, shown_out = ImageOps.exif_transpose(a), ImageOps.exif_transpose(b)
        np.testing.assert_array_equal(np.asarray(shown_out), np.asarray(shown_in))
    page = tifffile.TiffFile(tmp_path / "out" / "y.tif").pages[0]
    assert page.tags[274].value == 3
