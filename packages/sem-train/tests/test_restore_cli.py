"""``sem restore``: files in, files out (info bar, sample type, metadata), folders, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from sem_physics import make_sample, read_image
from sem_physics.testing import dead_pid, main_in_fresh_interpreter
from sem_train.cli import main
from sem_train.restoration import MANIFEST_NAME

PSF = ["--psf", "2,2,0,2"]
REAL_LINES = "lines_euv_resist_0p827nm.tif"
REAL_CONTACTS = "contacts_0p901nm.tif"
BAR_ROWS = 14


def with_bar(img: np.ndarray, rows: int = BAR_ROWS) -> np.ndarray:
    """``img`` (0..1) above a black vendor-style info bar with white text blocks."""
    w = img.shape[1]
    bar = np.zeros((rows, w))
    bar[3:-3, 4 : w // 4] = 1.0  # "text": a white label on the black bar
    bar[4:-4, w // 2 : w // 2 + 6] = 1.0
    return np.concatenate([0.15 + 0.7 * img, bar], axis=0)


def sample(shape=(64, 80), seed=0) -> np.ndarray:
    return make_sample("lines", shape, seed=seed) / 255.0


def run(*argv: str) -> int:
    return main(["restore", *map(str, argv)])


def manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST_NAME).read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("dtype", "scale"), [(np.uint8, 255), (np.uint16, 65535)])
def test_info_bar_and_sample_type_survive(tmp_path, dtype, scale):
    frame = np.rint(with_bar(sample()) * scale).astype(dtype)
    src = tmp_path / "in" / "a.tif"
    src.parent.mkdir()
    tifffile.imwrite(src, frame)
    assert read_image(src).info_bar_rows == BAR_ROWS  # the detector sees the drawn bar
    assert run(src, "-o", tmp_path / "out", *PSF) == 0
    out = tifffile.imread(tmp_path / "out" / "a.tif")
    assert out.dtype == dtype and out.shape == frame.shape
    np.testing.assert_array_equal(out[-BAR_ROWS:], frame[-BAR_ROWS:])  # bar bit-identical
    assert not np.array_equal(out[:-BAR_ROWS], frame[:-BAR_ROWS])  # the micrograph changed
    rec = manifest(tmp_path / "out")["restored"][0]
    assert rec["info_bar_rows"] == BAR_ROWS
    assert rec["input_dtype"] == rec["output_dtype"] == np.dtype(dtype).name


@pytest.mark.parametrize("top", [2**32 - 1, 200_000])  # full range, and 18-bit counts (dim)
def test_a_32_bit_file_gives_a_32_bit_file_on_its_own_scale(tmp_path, capsys, top):
    """uint32 counts come back as uint32 counts: the micrograph's mean kept (the brightness
    policy), the bar to float32 precision (24 bits: 2**-23 of the full range)."""
    frame = np.rint(with_bar(sample()) * top).astype(np.uint32)
    tifffile.imwrite(tmp_path / "a.tif", frame)
    assert read_image(tmp_path / "a.tif").info_bar_rows == BAR_ROWS  # found, dim or not
    assert run(tmp_path / "a.tif", "-o", tmp_path / "out", "--method", "wiener", *PSF) == 0
    err = capsys.readouterr().err
    assert "Warning" not in err and "grey levels are expected" not in err  # no raw warning
    assert (f"sem: warning: {tmp_path / 'a.tif'}: dim picture" in err) == (top < 2**31), err
    out = tifffile.imread(tmp_path / "out" / "a.tif")
    assert out.dtype == np.uint32 and out.shape == frame.shape
    bar, micrograph = out[-BAR_ROWS:].astype(np.float64), out[:-BAR_ROWS].astype(np.float64)
    np.testing.assert_allclose(bar, frame[-BAR_ROWS:], rtol=0, atol=2.0**-23 * 2**32)
    assert micrograph.mean() == pytest.approx(frame[:-BAR_ROWS].mean(), rel=0.01)
    assert micrograph.std() > 0.5 * frame[:-BAR_ROWS].std()  # an image, not a flat level
    rec = manifest(tmp_path / "out")["restored"][0]
    assert rec["input_dtype"] == rec["output_dtype"] == "uint32"
    assert rec["output_value_scale"] == pytest.approx(255 / (2**32 - 1), rel=1e-12)


def test_restored_part_is_the_restoration_of_the_cropped_image(tmp_path):
    """The file holds exactly sem_train.restore() of the micrograph above the bar."""
    from sem_train import restore

    frame = np.rint(with_bar(sample()) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", frame)
    assert run(tmp_path / "a.tif", "-o", tmp_path / "out", "--float32", *PSF) == 0
    out = tifffile.imread(tmp_path / "out" / "a.tif")
    assert out.dtype == np.float32
    micrograph = read_image(tmp_path / "a.tif").data[:-BAR_ROWS]
    ref = restore(micrograph, "richardson-lucy", psf="2,2,0,2").image
    np.testing.assert_array_equal(out[:-BAR_ROWS], ref)
    np.testing.assert_allclose(out[-BAR_ROWS:], frame[-BAR_ROWS:] * (255 / 65535), rtol=1e-6)


def test_info_bar_rows_override(tmp_path):
    frame = np.rint(with_bar(sample()) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", frame)
    assert run(tmp_path / "a.tif", "-o", tmp_path / "o", "--info-bar-rows", "0", *PSF) == 0
    assert manifest(tmp_path / "o")["restored"][0]["info_bar_rows"] == 0
    out = tifffile.imread(tmp_path / "o" / "a.tif")
    assert not np.array_equal(out[-BAR_ROWS:], frame[-BAR_ROWS:])  # restored through the bar
    # sem-measure's spelling: --info-bar none is the same as --info-bar-rows 0
    assert run(tmp_path / "a.tif", "-o", tmp_path / "n", "--info-bar", "none", *PSF) == 0
    assert np.array_equal(tifffile.imread(tmp_path / "n" / "a.tif"), out)


def test_real_image_keeps_bar_pixel_size_dtype_and_vendor_tags(tmp_path, real_image):
    src = real_image(REAL_LINES)
    assert run(src, "-o", tmp_path, "--method", "wiener", *PSF) == 0
    dst = tmp_path / REAL_LINES
    a, b = read_image(src), read_image(dst)
    assert b.source_dtype == a.source_dtype == "uint8"
    assert b.pixel_size_nm == a.pixel_size_nm and b.pixel_size_source == a.pixel_size_source
    raw_in, raw_out = tifffile.imread(src), tifffile.imread(dst)
    rows = a.info_bar_rows
    assert rows == 64
    np.testing.assert_array_equal(raw_out[-rows:], raw_in[-rows:])
    assert not np.array_equal(raw_out[:-rows], raw_in[:-rows])
    with tifffile.TiffFile(src) as t_in, tifffile.TiffFile(dst) as t_out:
        tags_in, tags_out = t_in.pages[0].tags, t_out.pages[0].tags
        for code in (40092, 40093):  # Hitachi metadata, byte for byte
            assert tags_out[code].value == tags_in[code].value
        for code in (282, 283):  # resolution (a rational, possibly reduced)
            (n_in, d_in), (n_out, d_out) = tags_in[code].value, tags_out[code].value
            assert n_in * d_out == n_out * d_in
        assert tags_out[296].value == tags_in[296].value
    rec = manifest(tmp_path)["restored"][0]
    assert rec["input_sha256"] == sha256(src)
    assert rec["pixel_size_nm"] == a.pixel_size_nm and rec["method"] == "wiener"


def test_real_palette_tiff_with_zeiss_metadata(tmp_path, real_image):
    src = real_image(REAL_CONTACTS)
    assert run(src, "-o", tmp_path, "--method", "wiener", *PSF) == 0
    a, b = read_image(src), read_image(tmp_path / REAL_CONTACTS)
    assert b.pixel_size_nm == a.pixel_size_nm and b.pixel_size_source == a.pixel_size_source
    assert b.source_dtype == "uint8"
    rows = a.info_bar_rows
    np.testing.assert_array_equal(b.data[-rows:], a.data[-rows:])


def test_png_jpeg_bmp(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    img = np.rint(with_bar(sample()) * 255).astype(np.uint8)
    Image.fromarray(img).save(src / "a.png")
    Image.fromarray(img).save(src / "b.jpg", quality=95)
    Image.fromarray(img).save(src / "c.bmp")
    assert run(src, "-o", tmp_path / "out", *PSF) == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST_NAME, "a.png", "b.tif", "c.tif"]
    )
    png = np.asarray(Image.open(out / "a.png"))
    assert png.dtype == np.uint8
    np.testing.assert_array_equal(png[-BAR_ROWS:], img[-BAR_ROWS:])
    np.testing.assert_array_equal(tifffile.imread(out / "c.tif")[-BAR_ROWS:], img[-BAR_ROWS:])


def test_folder_recursive_with_output_inside_input(tmp_path, folder_writer):
    root = tmp_path / "images"
    paths = folder_writer(root, 6, size=40)
    out = root / "restored"  # inside the input folder
    assert run(root, "-o", out, *PSF) == 0
    first = manifest(out)
    assert len(first["restored"]) == len(paths) and not first["failed"]
    for p in paths:  # same sub-folder structure below -o
        rel = p.relative_to(root)
        assert (
            out / rel.with_suffix(rel.suffix if p.suffix in (".tif", ".tiff", ".png") else ".tif")
        ).is_file()
    assert {r["input_sha256"] for r in first["restored"]} == {sha256(p) for p in paths}
    assert run(root, "-o", out, "--overwrite", *PSF) == 0  # outputs are not inputs now
    assert len(manifest(out)["restored"]) == len(paths)


def test_existing_outputs_are_never_overwritten_without_flag(tmp_path, capsys):
    frame = np.rint(sample() * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", frame)
    out = tmp_path / "out"
    assert run(tmp_path / "a.tif", "-o", out, *PSF) == 0
    before = (out / "a.tif").read_bytes()
    capsys.readouterr()
    assert run(tmp_path / "a.tif", "-o", out, "--psf", "3,3,0,2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exist" in err[0] and "--overwrite" in err[0]
    assert (out / "a.tif").read_bytes() == before
    assert run(tmp_path / "a.tif", "-o", out, "--psf", "3,3,0,2", "--overwrite") == 0
    assert (out / "a.tif").read_bytes() != before
    assert json.loads((out / MANIFEST_NAME).read_text())["restored"][0]["psf"]["rx_px"] == 3


def test_output_equal_to_input_is_refused(tmp_path, capsys):
    frame = np.rint(sample() * 255).astype(np.uint8)
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, frame)
    before = src.read_bytes()
    assert run(src, "-o", tmp_path, *PSF, "--overwrite") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would overwrite the input" in err[0]
    assert src.read_bytes() == before


def test_two_images_with_one_output_name_are_refused(tmp_path, capsys):
    frame = np.rint(sample() * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "x.tif", frame)
    tifffile.imwrite(tmp_path / "x.tiff", frame)
    Image.fromarray(frame).save(tmp_path / "x.jpg")
    assert run(tmp_path / "x.tif", tmp_path / "x.jpg", "-o", tmp_path / "out", *PSF) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would both be written to" in err[0] and "x.jpg" in err[0]
    assert not (tmp_path / "out").exists()
    # x.tiff keeps its own suffix: no clash
    assert run(tmp_path / "x.tif", tmp_path / "x.tiff", "-o", tmp_path / "ok", *PSF) == 0


@pytest.mark.parametrize("folds", [True, False])
def test_output_names_differing_only_in_case(tmp_path, capsys, monkeypatch, folds):
    """``img.tif`` and ``IMG.tif`` are one file where the file system ignores case (Windows'
    and macOS' defaults, a mounted share): refused there, two outputs elsewhere."""
    from sem_train.restoration import batch

    monkeypatch.setattr(batch, "folds_case", lambda folder: folds)
    frame = np.rint(sample() * 255).astype(np.uint8)
    for rel in ("d1/img.tif", "d2/IMG.tif"):
        (tmp_path / rel).parent.mkdir()
        tifffile.imwrite(tmp_path / rel, frame)
    code = run(tmp_path / "d1/img.tif", tmp_path / "d2/IMG.tif", "-o", tmp_path / "out", *PSF)
    err = capsys.readouterr().err.strip().splitlines()
    if folds:
        assert code == 2 and len(err) == 1 and "whose file system ignores case" in err[0]
        assert "out/img.tif and " in err[0] and "out/IMG.tif" in err[0]
        assert not (tmp_path / "out").exists()
    else:
        assert code == 0
        assert (tmp_path / "out/img.tif").is_file() and (tmp_path / "out/IMG.tif").is_file()


def test_the_case_probe_tells_this_file_system(tmp_path):
    """Linux file systems here keep case: the probe says so, and leaves nothing behind."""
    from sem_train.restoration.batch import folds_case

    assert folds_case(tmp_path / "not" / "yet") is (sys.platform in ("win32", "darwin"))
    assert list(tmp_path.iterdir()) == []


def test_a_file_of_unknown_format_fails_alone_even_when_its_name_clashes(tmp_path, capsys):
    frame = np.rint(sample() * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "x.tif", frame)
    np.save(tmp_path / "x.npy", frame)
    out = tmp_path / "out"
    assert run(tmp_path / "x.npy", tmp_path / "x.tif", "-o", out, *PSF) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.npy" in err[0] and "unknown image format" in err[0]
    m = manifest(out)
    assert [Path(r["input"]).name for r in m["restored"]] == ["x.tif"]
    assert [Path(f["input"]).name for f in m["failed"]] == ["x.npy"]
    assert read_image(out / "x.tif").data.shape == frame.shape


def test_output_folder_equal_to_input_folder_is_refused(tmp_path, capsys, folder_writer):
    root = tmp_path / "images"
    paths = folder_writer(root, 3, size=40)
    before = {p: p.read_bytes() for p in paths}
    assert run(root, "-o", root, *PSF, "--overwrite") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would overwrite the input" in err[0]
    assert {p: p.read_bytes() for p in paths} == before
    assert not (root / MANIFEST_NAME).exists()


def write_bad_files(folder: Path) -> dict[str, str]:
    """Broken inputs and the words their one-line reasons must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.tif").write_bytes(b"II*\x00" + b"\xff" * 64)
    tifffile.imwrite(folder / "one_pixel.tif", np.array([[7]], np.uint8))
    tifffile.imwrite(folder / "nan.tif", np.full((32, 32), np.nan, np.float32))
    return {"corrupt.tif": "TIFF", "one_pixel.tif": "1x1 px", "nan.tif": "NaN"}


def test_bad_files_in_a_folder_are_reported_and_the_rest_restored(tmp_path, capsys):
    root = tmp_path / "in"
    bad = write_bad_files(root)
    tifffile.imwrite(root / "good.tif", np.rint(sample() * 255).astype(np.uint8))
    assert run(root, "-o", tmp_path / "out", *PSF) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(bad)
    for name, words in bad.items():
        line = next(line for line in err if name in line)
        assert line.startswith("sem: error: ") and words in line
    m = manifest(tmp_path / "out")
    assert [Path(r["input"]).name for r in m["restored"]] == ["good.tif"]
    assert {Path(f["input"]).name for f in m["failed"]} == set(bad)
    assert run(root, "-o", tmp_path / "strict", "--strict", *PSF) == 1


@pytest.mark.parametrize("name", ["corrupt.tif", "one_pixel.tif", "nan.tif"])
def test_one_bad_file_is_one_line_and_nonzero(tmp_path, capsys, name):
    write_bad_files(tmp_path / "in")
    assert run(tmp_path / "in" / name, "-o", tmp_path / "out", *PSF) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0]
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["missing.tif"], "missing.tif: no such file or folder"),
        (["notes.txt", "empty.png"], "none of the 2 inputs is a readable image file"),
        (["notes.txt"], "notes.txt: unknown image format '.txt'"),
        (["a.tif", "--checkpoint", "nowhere"], "--checkpoint nowhere does not exist"),
        (
            ["a.tif", "--set", "checkpoint_dir=nowhere"],
            "--set checkpoint_dir=nowhere does not exist",
        ),
        (
            ["a.tif", "--set", "sem-foundation.checkpoint_dir=nowhere"],
            "--set checkpoint_dir=nowhere does not exist",
        ),
        (["a.tif", "-o", "done"], "1 output file(s) already exist"),
    ],
)
def test_bad_input_is_refused_before_the_model_code_is_imported(tmp_path, argv, words):
    """Inputs, outputs and the checkpoint path are checked before the method's model code is
    imported: the process refusing them has not loaded torch (sem-foundation: 10 s saved)."""
    tifffile.imwrite(tmp_path / "a.tif", np.rint(sample() * 255).astype(np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "a.tif").write_bytes(b"an earlier output")
    argv = ["restore", *argv, "--method", "sem-foundation"]
    argv += [] if "-o" in argv else ["-o", "out"]
    run = main_in_fresh_interpreter("sem_train.cli", argv, cwd=tmp_path)
    assert (run.status, run.loaded, run.stdout) == (2, [], []), run
    assert len(run.stderr) == 1 and words in run.stderr[0], run.stderr


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--method", "no-such"], "unknown method 'no-such'"),
        (["--method", "n2v"], "needs --checkpoint"),
        (["--method", "n2v", "--checkpoint", "nowhere"], "does not exist"),
        (["--method", "bm3d", *PSF], "takes no --psf"),
        (["--psf", "1,2,3,4,5"], "--psf"),
        (["--set", "iterations=0", *PSF], "setting iterations"),
        (["--set", "=3", *PSF], "KEY=VALUE"),
        (["--set", "psf.rx_px=3"], "psf is given with --psf"),
        (
            ["--method", "sem-foundation", "--set", "checkpoint_dir=x", "--checkpoint", "y"],
            "--set checkpoint_dir=x and --checkpoint y: give the weights once",
        ),
        (
            ["--method", "sem-foundation", "--set", "sem-foundation.clip=true", "--set", "clip=1"],
            "--set clip is given twice (also as sem-foundation.clip)",
        ),
        (
            ["--method", "wiener", "--set", "checkpoint_dir=.", *PSF],
            "checkpoint_dir: not a setting",
        ),
        (["--psf", "-3,2,0,2"], "--psf '-3,2,0,2': rx_px must be in (0, 1000], got -3"),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, argv, words):
    tifffile.imwrite(tmp_path / "a.tif", np.rint(sample() * 255).astype(np.uint8))
    assert run(tmp_path / "a.tif", "-o", tmp_path / "out", *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sem: error: ") and words in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_file_other_than_the_weights_is_refused_naming_it(tmp_path, capsys):
    """``--checkpoint FOLDER/model_v2.safetensors`` once restored with FOLDER/model.safetensors
    (the file never read, restore.json naming it); a file elsewhere was named by its folder."""
    from sem_models import RestorationModel, build_mae, save_model
    from sem_models.testing import MICRO_MAE

    save_model(RestorationModel(build_mae("tiny", in_chans=1, **MICRO_MAE)), tmp_path / "ckf")
    (tmp_path / "ckf" / "model_v2.safetensors").write_bytes(os.urandom(1000))
    tifffile.imwrite(tmp_path / "a.tif", np.rint(sample() * 255).astype(np.uint8))
    for given in (tmp_path / "ckf" / "model_v2.safetensors", tmp_path / "a.tif"):
        argv = ["--method", "sem-foundation", "--checkpoint", given]
        assert run(tmp_path / "a.tif", "-o", tmp_path / "out", *argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"sem: error: --checkpoint={given}: "), err
        assert "--checkpoint takes a 'sem train' run folder, an export folder" in err[0]
        assert not (tmp_path / "out").exists()


def test_weights_given_with_set_are_the_checkpoint(tmp_path):
    """``--set sem-foundation.checkpoint_dir=DIR`` (sem benchmark's spelling) and ``--set
    checkpoint_dir=DIR`` restore as ``--checkpoint DIR`` does, and restore.json names DIR as
    the checkpoint (it recorded none: the weights came through the settings)."""
    from sem_models import RestorationModel, build_mae, save_model
    from sem_models.testing import MICRO_MAE

    save_model(RestorationModel(build_mae("tiny", in_chans=1, **MICRO_MAE)), tmp_path / "ck")
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, np.rint(sample() * 255).astype(np.uint8))
    ways = {
        "flag": ["--checkpoint", str(tmp_path / "ck")],
        "set": ["--set", f"checkpoint_dir={tmp_path / 'ck'}"],
        "prefixed": ["--set", f"sem-foundation.checkpoint_dir={tmp_path / 'ck'}"],
    }
    outputs = {}
    for way, argv in ways.items():
        assert run(src, "-o", tmp_path / way, "--method", "sem-foundation", *argv) == 0
        record = manifest(tmp_path / way)
        assert record["checkpoint"] == str(tmp_path / "ck") and record["options"] == {}
        outputs[way] = tifffile.imread(tmp_path / way / "a.tif")
    assert all(np.array_equal(outputs["flag"], out) for out in outputs.values())


@pytest.mark.parametrize(
    ("psf", "line"),
    [
        ("-5,5", "--psf '-5,5': rx_px must be in (0, 1000], got -5"),
        ("5,1e300", "--psf '5,1e300': ry_px must be in (0, 1000], got 1e300"),
        ("5,5,7", "--psf '5,5,7': theta_rad must be in [-6.283185307, 6.283185307], got 7"),
        ("5,5,0,0", "--psf '5,5,0,0': beta must be in (0, 10], got 0"),
        (
            "0,0",
            "--psf '0,0': rx_px must be in (0, 1000], got 0; ry_px must be in (0, 1000], got 0",
        ),
    ],
)
def test_psf_out_of_range_states_the_accepted_range_and_the_value(tmp_path, capsys, psf, line):
    tifffile.imwrite(tmp_path / "a.tif", np.rint(sample() * 255).astype(np.uint8))
    assert run(tmp_path / "a.tif", "-o", tmp_path / "out", "--psf", psf) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"sem: error: {line}"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "words"),
    [(["--info-bar-rows", "-1"], "--info-bar-rows"), (["--no-such-flag"], "unrecognized")],
)
def test_usage_errors_are_one_line(tmp_path, capsys, argv, words):
    with pytest.raises(SystemExit) as stop:
        run(tmp_path / "a.tif", "-o", tmp_path / "out", *argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sem") and words in err[0], err
    assert ": error: " in err[0] and "usage:" not in err[0]


def test_uniform_image_is_one_line_and_restores_with_a_given_psf(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "flat.tif", np.full((96, 128), 100, np.uint8))
    assert run(tmp_path / "flat.tif", "-o", tmp_path / "blind", "--method", "wiener") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "uniform image" in err[0] and "nothing to restore" in err[0], err
    assert "--psf" not in err[0]  # no PSF changes it: the advice is to check the file
    assert run(tmp_path / "flat.tif", "-o", tmp_path / "given", "--method", "wiener", *PSF) == 0
    out = read_image(tmp_path / "given" / "flat.tif").data
    np.testing.assert_allclose(out, 100, atol=1)  # deconvolving a constant leaves it constant


def test_colour_input_is_restored_with_a_warning(tmp_path, capsys):
    grey = np.rint(sample((64, 80)) * 255).astype(np.uint8)
    rgb = np.stack([grey, grey, np.roll(grey, 3, axis=1)], axis=-1)  # the channels differ
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert run(tmp_path / "rgb.png", "-o", tmp_path / "out", "--method", "wiener", *PSF) == 0
    err = capsys.readouterr().err
    assert "sem: warning: " in err and "colour image" in err
    (item,) = manifest(tmp_path / "out")["restored"]
    assert len(item["input_notes"]) == 1 and item["warnings"] == []


def test_scan_line_jitter_is_a_warning_for_that_image(tmp_path, capsys):
    x = np.arange(320, dtype=np.float64)
    offsets = np.random.default_rng(3).normal(0.0, 1.5, 256)  # rows displaced at random
    clean = make_sample("contacts", (256, 320), seed=4)
    rows = [np.interp(x - p, x, row) for row, p in zip(clean, offsets, strict=True)]
    tifffile.imwrite(tmp_path / "jitter.tif", np.rint(np.stack(rows)).astype(np.uint8))
    tifffile.imwrite(tmp_path / "clean.tif", np.rint(clean).astype(np.uint8))
    files = (tmp_path / "jitter.tif", tmp_path / "clean.tif")
    assert run(*files, "-o", tmp_path / "out", "--method", "wiener", *PSF) == 0
    err = capsys.readouterr().err.strip().splitlines()
    got = {Path(r["input"]).name: r["warnings"] for r in manifest(tmp_path / "out")["restored"]}
    assert got["clean.tif"] == [] and len(got["jitter.tif"]) == 1
    (warning,) = got["jitter.tif"]
    assert warning.startswith("scan-line jitter of about ") and "not defocus" in warning
    assert "no restoration here corrects it" in warning
    assert f"sem: warning: {tmp_path / 'jitter.tif'}: {warning}" in err


def test_debug_is_accepted_after_the_command(tmp_path, capsys):
    # --debug: the traceback, then the same one line and exit status 2
    assert run(tmp_path / "a.tif", "-o", tmp_path / "out", "--set", "psf.rx_px=3", "--debug") == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("sem: error: ") and "psf is given with --psf" in last


def test_json_prints_the_manifest(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.rint(sample() * 255).astype(np.uint8))
    assert (
        run(tmp_path / "a.tif", "-o", tmp_path / "out", "--json", *PSF, "--set", "iterations=5")
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == manifest(tmp_path / "out")
    assert printed["restored"][0]["parameters"]["iterations"] == 5
    assert printed["restored"][0]["psf_source"] == "given"


def test_default_run_uses_the_blind_estimate_per_image(tmp_path, monkeypatch, capsys):
    """`sem restore IMG -o OUT`: Richardson-Lucy with each image's own blind PSF, recorded."""
    import sem_physics
    from sem_physics import PSFParams

    class Quality:
        def __init__(self, ok: bool) -> None:
            self.ok, self.reasons = ok, [] if ok else ["saturated: 3 % of pixels clipped"]

    class Estimate:
        def __init__(self, rx: float) -> None:
            self.rx_px, self.ry_px, self.theta_rad, self.beta = rx, rx, 0.0, 2.0
            self.sigma, self.dose, self.noise_floor = 1.0, 20.0, 1.05
            self.quality = Quality(ok=rx < 2.5)

        def psf_params(self) -> PSFParams:
            return PSFParams(rx_px=self.rx_px, ry_px=self.ry_px)

    def fake(image: np.ndarray) -> Estimate:  # a different radius for each image width
        return Estimate(1.0 + image.shape[1] / 40)

    monkeypatch.setattr(sem_physics, "estimate_degradation", fake, raising=False)
    for w in (40, 80):
        tifffile.imwrite(tmp_path / f"w{w}.tif", np.rint(sample((48, w)) * 255).astype(np.uint8))
    assert run(tmp_path / "w40.tif", tmp_path / "w80.tif", "-o", tmp_path / "out") == 0
    m = manifest(tmp_path / "out")
    assert m["method"] == "richardson-lucy" and m["psf"] == "auto"
    got = {Path(r["input"]).name: r for r in m["restored"]}
    for name, rx in (("w40.tif", 2.0), ("w80.tif", 3.0)):
        assert got[name]["psf_source"] == "blind"
        assert got[name]["psf"]["rx_px"] == got[name]["parameters"]["psf"]["rx_px"] == rx
        assert got[name]["estimate"]["dose"] == 20.0
    assert got["w40.tif"]["warnings"] == []  # a flagged estimate is said, the image restored
    assert got["w80.tif"]["warnings"] == ["blind PSF estimate: saturated: 3 % of pixels clipped"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"sem: warning: {tmp_path / 'w80.tif'}: {got['w80.tif']['warnings'][0]}",
        "sem: note: the blind PSF estimate of 1 image(s) flags itself; if the PSF is known, give "
        "it: --psf RX,RY,THETA,BETA (radii in px, angle in rad)",
    ]


def _two_images(folder: Path) -> Path:
    folder.mkdir()
    for seed in (0, 1):
        tifffile.imwrite(
            folder / f"im{seed}.tif", np.rint(sample(seed=seed) * 255).astype(np.uint8)
        )
    return folder


def test_a_second_restore_into_a_busy_folder_stops_at_once(
    tmp_path, capsys, hold_folder, monkeypatch
):
    import sem_train.restoration as restoration

    src = _two_images(tmp_path / "src")
    out = tmp_path / "out"
    child = hold_folder(out, "sem restore src -o out")
    real_prepare = restoration.prepare
    monkeypatch.setattr(restoration, "prepare", lambda *a, **k: 1 / 0)  # before any model loads
    assert run(src, "-o", out, *PSF) == 1  # a run failure, not a bad input
    monkeypatch.setattr(restoration, "prepare", real_prepare)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"sem: error: {out}: another run (pid {child.pid}, sem restore src")
    assert [p.name for p in out.iterdir()] == [".sem-lock"]  # nothing written
    child.kill()  # kill -9: the folder is free again; the lock file it leaves is no output
    child.wait()
    assert run(src, "-o", out, *PSF) == 0
    assert sorted(p.name for p in out.iterdir()) == ["im0.tif", "im1.tif", MANIFEST_NAME]


def test_an_interrupted_overwrite_rerun_leaves_no_stale_restore_json(tmp_path, capsys, monkeypatch):
    from sem_train.restoration import batch

    src = _two_images(tmp_path / "src")
    out = tmp_path / "out"
    assert run(src, "-o", out, *PSF) == 0
    record = (out / MANIFEST_NAME).read_text()
    # A rerun that restores nothing changes no file: the earlier record stays, still true.
    monkeypatch.setattr(batch, "read_input", lambda path: 1 / 0)
    assert run(src, "-o", out, *PSF, "--overwrite") == 2
    assert (out / MANIFEST_NAME).read_text() == record
    monkeypatch.undo()
    real, written = batch.write_restored, []

    def interrupted(path, *args):
        if written:
            raise KeyboardInterrupt  # Ctrl-C after the first output was replaced
        written.append(path)
        return real(path, *args)

    monkeypatch.setattr(batch, "write_restored", interrupted)
    assert run(src, "-o", out, "--psf", "3,3,0,2", "--overwrite") == 130
    assert written == [out / "im0.tif"] and "interrupted" in capsys.readouterr().err
    assert not (out / MANIFEST_NAME).exists()  # no record naming im0.tif as it was before
    # the folder mixes one new and one old output: marked so, until a rerun completes
    marker = out / "INCOMPLETE"
    assert "mixes outputs of an interrupted run" in marker.read_text()
    assert run(src, "-o", out, "--psf", "3,3,0,2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "outputs of an interrupted run" in err[0] and "--overwrite" in err[0]
    monkeypatch.undo()
    assert run(src, "-o", out, "--psf", "3,3,0,2", "--overwrite") == 0
    assert not marker.exists() and len(manifest(out)["restored"]) == 2


def test_an_interrupted_first_run_is_named_when_a_rerun_is_refused(tmp_path, capsys, monkeypatch):
    from sem_train.restoration import batch

    src = _two_images(tmp_path / "src")
    (src / "INCOMPLETE").write_text("an interrupted run\n")  # no input: not an image
    out = tmp_path / "out"
    real, seen = batch.write_restored, []

    def interrupted(path, *args):
        seen.append((out / "INCOMPLETE").is_file())  # marked before the first output
        if len(seen) > 1:
            raise KeyboardInterrupt  # Ctrl-C after the first output
        return real(path, *args)

    monkeypatch.setattr(batch, "write_restored", interrupted)
    assert run(src, "-o", out, *PSF) == 130
    assert seen == [True, True]
    assert sorted(p.name for p in out.iterdir()) == ["INCOMPLETE", "im0.tif"]
    capsys.readouterr()
    monkeypatch.undo()
    assert run(src, "-o", out, *PSF) == 2  # never silently replaced...
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exist" in err[0]
    assert f"{out} holds the outputs of an interrupted run" in err[0] and "--overwrite" in err[0]
    # an input whose output clashes with nothing there is refused too: the interrupted run's
    # outputs are not left beside a record that does not name them
    assert run(src / "im1.tif", "-o", out, *PSF) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exist" not in err[0]
    assert f"{out} holds the outputs of an interrupted run" in err[0] and "--overwrite" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["INCOMPLETE", "im0.tif"]
    assert run(src, "-o", out, *PSF, "--overwrite") == 0  # ... but on request
    assert sorted(p.name for p in out.iterdir()) == ["im0.tif", "im1.tif", MANIFEST_NAME]
    assert not manifest(out)["failed"]


@pytest.mark.skipif(os.name != "posix", reason="process checks are POSIX-only")
def test_a_restore_removes_the_temporaries_a_killed_run_left(tmp_path):
    src = _two_images(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".im0.{dead_pid()}.tmp.tif"
    live = out / f".im9.{os.getpid()}.tmp.tif"  # a write in progress: kept
    for path in (stale, live):
        path.write_bytes(b"x" * 100)
    assert run(src, "-o", out, *PSF) == 0
    assert not stale.exists() and live.is_file()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "im0.tif",
        "im1.tif",
        MANIFEST_NAME,
    ]


def _visible_files(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )


def test_an_overwrite_rerun_removes_the_outputs_its_restore_json_no_longer_lists(tmp_path):
    src = _two_images(tmp_path / "src")
    (src / "sub").mkdir()
    tifffile.imwrite(src / "sub" / "im2.tif", np.rint(sample(seed=2) * 255).astype(np.uint8))
    out = tmp_path / "out"
    assert run(src, "-o", out, *PSF) == 0
    assert _visible_files(out) == ["im0.tif", "im1.tif", MANIFEST_NAME, "sub/im2.tif"]
    (out / "notes.tif").write_bytes(b"the user's own file, named by no restore.json")
    # renamed and fewer inputs, one of them an earlier output (-o above its folder): the
    # earlier outputs not rewritten go once the new restore.json is written, never an input
    assert run(out / "sub", "-o", out, *PSF, "--overwrite") == 0
    assert _visible_files(out) == ["im2.tif", "notes.tif", MANIFEST_NAME, "sub/im2.tif"]
    assert [r["output"] for r in manifest(out)["restored"]] == ["im2.tif"]
    assert not any(p.name.startswith(".") for p in out.rglob("*"))  # no note left
    assert run(src / "im1.tif", "-o", out, *PSF, "--overwrite") == 0
    assert _visible_files(out) == ["im1.tif", "notes.tif", MANIFEST_NAME, "sub/im2.tif"]
    # a restore.json that cannot be parsed names nothing: the files are left alone
    (out / MANIFEST_NAME).write_text("{not json")
    assert run(src / "im0.tif", "-o", out, *PSF, "--overwrite") == 0
    assert {"im0.tif", "im1.tif", "notes.tif"} <= set(_visible_files(out))


def test_a_rerun_reads_the_outputs_of_a_record_with_fields_it_does_not_know(tmp_path):
    """A restore.json written by a later version (a field this one does not know, per file and
    per run) still names its outputs: the overwrite rerun removes the ones it does not rewrite."""
    src = _two_images(tmp_path / "src")
    out = tmp_path / "out"
    assert run(src, "-o", out, *PSF) == 0
    doc = manifest(out)
    doc["a_later_field"] = {"schema": 2}
    for record in doc["restored"]:
        record["a_later_per_file_field"] = [1, 2]
    (out / MANIFEST_NAME).write_text(json.dumps(doc), encoding="utf-8")
    assert run(src / "im0.tif", "-o", out, *PSF, "--overwrite") == 0
    assert _visible_files(out) == ["im0.tif", MANIFEST_NAME]


def test_a_rerun_removes_the_subfolders_it_empties_and_keeps_the_others(tmp_path):
    src = _two_images(tmp_path / "src")
    for sub in ("a/deep", "b"):
        (src / sub).mkdir(parents=True)
        tifffile.imwrite(src / sub / "im.tif", np.rint(sample(seed=3) * 255).astype(np.uint8))
    out = tmp_path / "out"
    assert run(src, "-o", out, *PSF) == 0
    (out / "b" / "notes.txt").write_text("the user's own file")
    assert run(src / "im0.tif", "-o", out, *PSF, "--overwrite") == 0
    assert _visible_files(out) == ["b/notes.txt", "im0.tif", MANIFEST_NAME]
    assert not (out / "a").exists()  # a/deep emptied, then a


def test_an_interrupted_overwrite_rerun_still_removes_the_earlier_outputs(tmp_path, monkeypatch):
    from sem_train.restoration import batch

    src = _two_images(tmp_path / "src")
    out = tmp_path / "out"
    assert run(src, "-o", out, *PSF) == 0

    def killed(path, *args):
        raise KeyboardInterrupt  # before the first output; the earlier restore.json went

    monkeypatch.setattr(batch, "write_restored", killed)
    assert run(src / "im1.tif", "-o", out, *PSF, "--overwrite") == 130
    monkeypatch.undo()
    assert _visible_files(out) == ["INCOMPLETE", "im0.tif", "im1.tif"]
    # the next complete run still knows the earlier outputs (a hidden note) and removes them
    assert run(src / "im1.tif", "-o", out, *PSF, "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["im1.tif", MANIFEST_NAME]


def test_the_zero_shot_row_says_it_does_not_deblur(tmp_path, capsys):
    """The paper's zero-shot row restores (with the shipped pretrained MAE) but says once, in
    the run's notes and on stderr, that it is no restorer; a deconvolution says nothing."""
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, (with_bar(sample((96, 112))) * 255).astype(np.uint8))
    assert run(str(src), "-o", str(tmp_path / "z"), "--method", "sem-foundation-zero-shot") == 0
    (note,) = manifest(tmp_path / "z")["notes"]
    assert note.startswith("sem-foundation-zero-shot: the paper's zero-shot row")
    assert capsys.readouterr().err.count("does not deblur") == 1
    assert run(str(src), "-o", str(tmp_path / "w"), "--method", "wiener", *PSF) == 0
    assert manifest(tmp_path / "w")["notes"] == []


def test_the_bar_names_the_file_and_its_clock_ticks_during_a_long_image(capsys):
    """A single image restored for seconds: the bar shows its name and a clock that moves."""
    import time

    from sem_train.restoration.batch import RestoreJob, _progress

    jobs = [RestoreJob(input=Path("big_8k.tif"), output=Path("out.tif"))]
    for _job in _progress(jobs, True):
        time.sleep(2.3)
    frames = capsys.readouterr().err.replace("\r", "\n").splitlines()
    during = [f for f in frames if "0/1" in f and "big_8k.tif" in f]
    assert any("[00:01<" in f for f in during) and any("[00:02<" in f for f in during)


def test_the_noise_floor_warning_names_the_setting_as_given_on_this_command_line(tmp_path, capsys):
    """Under 32 px a side the noise level cannot be estimated: the warning asks for it with the
    spelling ``sem restore`` takes (``--set noise_var=...``), and following it is accepted and
    silences it; the Python API keeps the keyword spelling, which ``restore`` takes."""
    from sem_train import restore
    from sem_train.restoration import RestoreWarning

    strip = np.clip(np.random.default_rng(0).normal(120, 20, (31, 300)), 0, 255)
    tifffile.imwrite(tmp_path / "strip.tif", np.rint(strip).astype(np.uint8))
    argv = ["strip.tif", "--method", "wiener", *PSF, "--info-bar", "none"]
    assert run(tmp_path / argv[0], *argv[1:], "-o", tmp_path / "floor") == 0
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "noise" in line]
    assert "noise level not estimated" in warning and "(noise_var=" not in warning
    hint = warning.rsplit("(", 1)[1].removesuffix(")")
    assert hint == "--set noise_var=..."
    given = [*hint.removesuffix("...").split(" ", 1)]
    given[1] += "400"  # the variance of the strip's noise: 20²
    assert run(tmp_path / argv[0], *argv[1:], *given, "-o", tmp_path / "given") == 0
    assert "noise" not in capsys.readouterr().err
    per_image = manifest(tmp_path / "given")["restored"][0]["parameters"]["per_image"]
    assert per_image["noise_var"] == 400
    with pytest.warns(RestoreWarning, match=r"noise level not estimated") as issued:
        restore(strip, "wiener", psf="2,2,0,2")
    python_hint = str(issued[0].message).rsplit("(", 1)[1].removesuffix(")")
    assert python_hint == "noise_var=..."
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the keyword is accepted and the note not issued
        restore(strip, "wiener", psf="2,2,0,2", **{python_hint.removesuffix("=..."): 400.0})


@pytest.mark.parametrize(
    ("method", "words", "not_said"),
    [
        (
            "mae-imagenet",
            [
                "needs its weights, given as --checkpoint FILE or --set weights_path=FILE",
                "ImageNet MAE weights file (.pth or .safetensors)",
                "mae_pretrain_vit_large.pth",
                "vit_large_patch16_224.mae",
            ],
            "'sem train'",
        ),
        ("n2v", ["needs --checkpoint: a 'sem train baseline' run folder"], "'sem train' run"),
    ],
)
def test_a_method_without_weights_names_what_it_loads_and_how_to_give_it(
    tmp_path, capsys, method, words, not_said
):
    """One line naming the weights the method reads (the ImageNet MAE file for mae-imagenet,
    not a 'sem train' run folder) and the options that give them; each option named is taken:
    a file given either way reaches the loader, which refuses it as no weights."""
    tifffile.imwrite(tmp_path / "a.tif", np.rint(sample() * 255).astype(np.uint8))
    base = [tmp_path / "a.tif", "-o", tmp_path / "out", "--method", method]
    assert run(*base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"sem: error: method {method!r} needs"), err
    assert all(w in err[0] for w in words) and not_said not in err[0], err
    if method != "mae-imagenet":
        return
    garbage = tmp_path / "mae_pretrain_vit_large.pth"
    garbage.write_bytes(os.urandom(256))
    tiny = ["--set", "preset=tiny"]  # the architecture of the file: no ViT-large is built
    for given in (["--checkpoint", garbage], ["--set", f"weights_path={garbage}"]):
        assert run(*base, *given, *tiny) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(garbage) in err[0] and "needs its weights" not in err[0]
    assert not (tmp_path / "out").exists()
