"""The ``sem-psf`` command, run in-process through ``main(argv)`` and once as a process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sem_physics import DegradationParams, degrade, make_sample, write_image
from sem_physics.psf_cli import main
from sem_physics.testing import symlink_or_skip

PARAMS = DegradationParams(
    rx_px=9, ry_px=5, beta=1.95, theta_rad=0.6, gain=1.0, offset=10, sigma=4, dose=20
)
KEYS = ("rx_px", "ry_px", "theta_rad", "beta", "sigma", "dose")


@pytest.fixture(scope="module")
def degraded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("psf")
    y = degrade(make_sample("texture", (320, 400), seed=2), PARAMS, rng=0)
    return write_image(folder / "texture.tif", y, "float32")


def test_json_has_every_key_and_uncertainty(
    degraded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(degraded), "--json", "--crop", "none"]) == 0
    rec = json.loads(capsys.readouterr().out)
    for key in KEYS:
        assert isinstance(rec[key], float) and rec[f"{key}_err"] > 0, key
    assert rec["file"] == str(degraded) and rec["rows_cropped"] == 0
    assert rec["shape"] == [320, 400] and rec["quality"]["reasons"] == []
    assert rec["rx_px"] == pytest.approx(9, rel=0.25) and rec["ry_px"] == pytest.approx(5, rel=0.3)
    assert rec["sigma"] == pytest.approx(4, rel=0.2)


def test_bad_file_is_reported_and_the_others_still_estimated(
    degraded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    tiny = write_image(tmp_path / "tiny.png", np.full((20, 20), 9.0), "uint8")
    flat = write_image(tmp_path / "flat.png", np.full((96, 128), 9.0), "uint8")
    files = [bad, flat, degraded, tmp_path / "missing.tif", tiny]
    code = main([*map(str, files), "--json"])
    out, err = capsys.readouterr()
    assert code == 0  # a partial failure, as in sem restore and sem-degrade (--strict: 1)
    lines = [json.loads(line) for line in out.splitlines()]
    assert [rec["file"] for rec in lines] == [str(degraded)]
    *errors, note = err.strip().splitlines()
    assert note == "sem-psf: note: 4 of 5 inputs failed"
    assert len(errors) == 4 and all(e.startswith("sem-psf: error: ") for e in errors)
    assert str(bad) in errors[0] and "missing.tif: no such file" in errors[2]
    assert str(flat) in errors[1] and "uniform image" in errors[1]
    assert str(tiny) in errors[3] and ">= 32 px" in errors[3]
    assert main([*map(str, files), "--json", "--strict"]) == 1
    assert main([str(bad), str(tiny)]) == 2  # nothing estimated


def test_white_noise_has_no_psf_and_no_shot_noise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    noise = np.random.default_rng(0).normal(100, 20, (160, 192))  # no PSF, no shot noise
    path = write_image(tmp_path / "noise.tif", noise, "float32")
    assert main([str(path), "--crop", "none"]) == 0
    out = capsys.readouterr().out
    assert "rx_px n/a" in out and "dose n/a (no shot noise found)" in out
    sigma = float(out.split("sigma ", 1)[1].split()[0])
    assert sigma == pytest.approx(20, rel=0.1)  # the white noise's standard deviation


def test_plain_text_and_info_bar_crop(degraded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(degraded)]) == 0  # default: no bar detected -> the whole frame (as restore)
    out = capsys.readouterr().out
    assert "rx_px" in out and "sigma" in out and "quality: ok" in out
    assert "0 rows cropped" in out
    assert main([str(degraded), "--crop", "info-bar"]) == 0  # no bar -> bottom 6.67 % removed
    assert "21 rows cropped" in capsys.readouterr().out  # round(0.0667 * 320)


def test_help_and_console_script() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sem_physics.psf_cli", "--help"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert proc.returncode == 0 and "usage: sem-psf" in proc.stdout


def test_ctrl_c_prints_one_line_and_exits_130(
    degraded: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sem_physics import psf_cli

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(psf_cli, "_estimate_file", interrupted)
    assert main([str(degraded), str(degraded)]) == 130
    out, err = capsys.readouterr()
    assert out == "" and err == "sem-psf: interrupted\n"
    with pytest.raises(KeyboardInterrupt):  # --debug shows where
        main([str(degraded), "--debug"])


def test_uncertainties_keep_two_significant_digits() -> None:
    from sem_physics.psf_cli import _fmt

    assert _fmt(0.3012, 0.0241) == "0.301 ± 0.024"  # was "0.3 ± 0.0" for the dose
    assert _fmt(5.123, 0.334) == "5.12 ± 0.33"
    assert _fmt(22.08, 17.6) == "22 ± 18"
    assert _fmt(1.5708, 0.9069) == "1.57 ± 0.91"
    assert _fmt(1234.0, 156.0) == "1230 ± 160" and _fmt(98765.0, 4321.0) == "98800 ± 4300"
    assert _fmt(4.0, None) == "4.00" and _fmt(4.0, 0.0) == "4.00" and _fmt(None, 1.0) == "n/a"
    # a value below its error keeps two significant digits: a 1.85 px radius is not "0 px"
    assert _fmt(1.85, 320.0) == "1.9 ± 320" and _fmt(2.04, 79.0) == "2.0 ± 79"
    assert _fmt(0.0123, 0.5) == "0.012 ± 0.50" and _fmt(200.0, 2200.0) == "200 ± 2200"


def test_low_dose_text_shows_the_dose_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    low = PARAMS.model_copy(update={"dose": 0.3, "sigma": 0.5})
    y = np.clip(degrade(make_sample("texture", (256, 320), seed=2), low, rng=0), 0, 255)
    path = write_image(tmp_path / "low.tif", y, "float32")
    assert main([str(path), "--crop", "none"]) == 0
    dose = capsys.readouterr().out.split("dose ", 1)[1].split()
    assert dose[1] == "±" and float(dose[2]) > 0 and len(dose[2].replace("0.", "").lstrip("0")) == 2


def test_scan_line_jitter_is_one_warning_line_and_in_the_json(
    degraded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blurred = degrade(make_sample("contacts", (256, 320), seed=4), PARAMS, 0, poisson=False)
    x = np.arange(320, dtype=np.float64)
    offsets = np.random.default_rng(3).normal(0.0, 1.5, 256)  # rows displaced at random
    rows = [np.interp(x - p, x, row) for row, p in zip(blurred, offsets, strict=True)]
    path = write_image(tmp_path / "jitter.tif", np.stack(rows), "float32")
    assert main([str(path), str(degraded), "--crop", "none"]) == 0
    warned = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert len(warned) == 1 and "scan-line jitter of about" in warned[0]
    assert "px rms between rows: not defocus" in warned[0]
    assert main([str(path), str(degraded), "--json", "--crop", "none"]) == 0
    jittered, clean = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert jittered["row_jitter"]["detected"] and not clean["row_jitter"]["detected"]
    assert jittered["row_jitter"]["rms_px"] == pytest.approx(1.5, rel=0.5)


def test_debug_adds_tracebacks_and_keeps_going_and_the_exit_status(
    degraded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(tmp_path / "missing.tif"), str(degraded), "--strict"]
    assert main(files) == 1
    plain_out, plain_err = capsys.readouterr()
    assert main([*files, "--debug"]) == 1  # the same status, and the second file estimated
    out, err = capsys.readouterr()
    assert out == plain_out and "Traceback (most recent call last)" in err
    said = [line for line in err.splitlines() if line.startswith("sem-psf: ")]
    assert said == plain_err.strip().splitlines()  # the same lines, after the traceback


def test_version_names_the_program_and_its_package(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"sem-psf {version('sem-physics')} (sem-physics)"


def test_python_warnings_are_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dim 32-bit picture: estimate's scale warning reads as sem-psf's own line, and so does
    the reader's note on the dim picture (a log record)."""
    import tifffile

    grey = np.random.default_rng(0).uniform(20, 190, (64, 64))
    tifffile.imwrite(tmp_path / "u32.tif", (grey * 1000).astype(np.uint32))
    assert main([str(tmp_path / "u32.tif")]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("sem-psf: warning: ")]
    assert len(warned) == 2 and warned[0].startswith(f"sem-psf: warning: {tmp_path}"), err
    assert ": dim uint32 picture: " in warned[0]
    assert warned[1].startswith("sem-psf: warning: image spans 0.00"), err
    assert warned[1].endswith(": 0..255 grey levels are expected (multiply a 0..1 image by 255)")
    assert "UserWarning" not in err and "psf_cli.py" not in err and "est = " not in err


def test_reference_as_the_only_input_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    focused = write_image(tmp_path / "only" / "a.tif", make_sample("texture", (128, 160), seed=4))
    line = (
        "sem-psf: error: nothing to estimate: the only image given is the --reference FOCUSED "
        "itself (give the defocused IMAGEs to fit against it)"
    )
    assert main(["--reference", str(focused), str(focused)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [line]
    assert main(["--reference", str(focused), str(tmp_path / "only")]) == 2  # in a folder
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines()[-1] == line


@pytest.mark.parametrize("crop", [[], ["--crop", "detected"], ["--crop", "none"]])
def test_crop_fraction_without_a_fraction_crop_is_refused(
    degraded: Path, capsys: pytest.CaptureFixture[str], crop: list[str]
) -> None:
    assert main([str(degraded), *crop, "--crop-fraction", "0.2"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [
        "sem-psf: error: --crop-fraction needs --crop fraction (or --crop info-bar, whose "
        f"fallback it is), got --crop {crop[-1] if crop else 'detected'}"
    ]
    assert main([str(degraded), "--crop", "fraction", "--crop-fraction", "0.2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows_cropped"] == 64


def test_a_folder_of_linked_folders_is_estimated_and_a_loop_named_once(
    degraded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder is read as ``sem train --data`` reads one: the images of a linked folder (a
    corpus gathered from other disks) are estimated, where they were passed over and the
    folder said to hold no images; a link loop is not followed and named in one warning."""
    root, lab = tmp_path / "corpus", tmp_path / "other_disk" / "lab A"
    lab.mkdir(parents=True)
    shutil.copy(degraded, lab / "texture.tif")
    root.mkdir()
    symlink_or_skip(root / "lab A", lab, target_is_directory=True)
    symlink_or_skip(root / "loop", root, target_is_directory=True)
    assert main([str(root), "--json", "--crop", "none"]) == 0
    out, err = capsys.readouterr()
    (rec,) = [json.loads(line) for line in out.splitlines()]
    assert rec["file"] == str(root / "lab A" / "texture.tif")
    assert rec["rx_px"] == pytest.approx(9, rel=0.25)  # the degraded image, estimated
    assert err.strip().splitlines() == [
        f"sem-psf: warning: 1 linked folder(s) under {root} not followed: loop (a link loop: "
        f"it leads to {os.path.realpath(root)}, which holds it)"
    ]
