"""The ``sem-degrade`` command, run in-process through ``main(argv)``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sem_physics import Manifest, ParameterRanges, read_image, write_samples
from sem_physics.cli import main


def _err_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("sem-degrade: error: ")
    return err[0]


def test_make_samples_sample_seed_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples, out = tmp_path / "samples", tmp_path / "out"
    argv = ["--make-samples", str(samples), "--n-samples", "1", "--sample", "--seed", "3"]
    assert main([*argv, "-o", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3 and len(list(samples.glob("*.png"))) == 3
    ranges = ParameterRanges()
    for row in rows:
        for name in ParameterRanges.model_fields:
            lo, hi = getattr(ranges, name)
            assert lo <= row[name] <= hi
        assert (out / row["output"]).is_file()
    manifest = Manifest.load(out / "manifest.json")
    assert manifest.mode == "sample" and manifest.master_seed == 3
    assert [e.output for e in manifest.entries] == [r["output"] for r in rows]
    # The same command again gives the same bytes; replay verifies them.
    assert main([*argv, "-o", str(tmp_path / "again")]) == 0
    for e in manifest.entries:
        assert (out / e.output).read_bytes() == (tmp_path / "again" / e.output).read_bytes()
    capsys.readouterr()
    assert main(["--replay", str(out / "manifest.json")]) == 0
    # the recipe is what is verified: the line must not claim the files on disk were checked
    line = capsys.readouterr().err
    assert "recipe verified: 3 outputs" in line and "files on disk were not read" in line


def test_explicit_parameters_fill_in_midpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_samples(tmp_path / "s", n_per_kind=1, shape=(64, 64), seed=0)[0]
    out = tmp_path / "o"
    assert (
        main([str(src), "--rx-px", "2", "--ry-px", "3.5", "--dose", "7", "-o", str(out), "--json"])
        == 0
    )
    (row,) = json.loads(capsys.readouterr().out)
    mid = ParameterRanges().midpoint()
    assert (row["rx_px"], row["ry_px"], row["dose"]) == (2.0, 3.5, 7.0)
    assert (row["beta"], row["gain"], row["sigma"]) == (mid.beta, mid.gain, mid.sigma)
    assert Manifest.load(out / "manifest.json").mode == "explicit"


def test_midpoint_with_crop_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_samples(tmp_path / "s", n_per_kind=1, shape=(200, 220), seed=0)
    out = tmp_path / "o"
    argv = [str(tmp_path / "s"), "--midpoint", "--crop", "fraction", "--format", "uint16-png"]
    assert main([*argv, "-o", str(out)]) == 0
    m = Manifest.load(out / "manifest.json")
    assert m.mode == "midpoint" and all(e.crop_rows == 13 for e in m.entries)
    img = read_image(out / m.entries[0].output)
    assert img.data.shape == (187, 220) and img.source_dtype == "uint16"
    assert 0 <= img.data.min() and img.data.max() <= 255


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--rx-px", "-1"], "--rx-px must be in (0, 1000], got -1"),
        (["--dose", "0"], "--dose must be in [0.01, 1e9], got 0"),
        (["--dose", "1e-300"], "--dose must be in [0.01, 1e9], got 1e-300"),
        (["--gain", "1e-9"], "--gain must be in [0.01, 100], got 1e-9"),
        (["--sigma", "300"], "--sigma must be in [0, 255], got 300"),
        (["--sample", "--rx-px", "2"], "cannot be combined with --sample"),
        (["--seed", "-2"], "--seed must be >= 0"),
        (["--crop-fraction", "1.5"], "--crop-fraction must be in [0, 1)"),
    ],
)
def test_out_of_range_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], words: str
) -> None:
    src = write_samples(tmp_path / "s", n_per_kind=1, shape=(64, 64))[0]
    assert main([str(src), "-o", str(tmp_path / "o"), *extra]) == 2
    assert words in _err_line(capsys)


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        (["--rx-px", "0"], "--rx-px must be in (0, 1000], got 0"),
        (["--dose", "1e-300"], "--dose must be in [0.01, 1e9], got 1e-300"),
        (["--theta-rad", "7"], "--theta-rad must be in [-6.283185307, 6.283185307], got 7"),
        (
            ["--rx-px", "0", "--beta", "11"],
            "--rx-px must be in (0, 1000], got 0; --beta must be in (0, 10], got 11",
        ),
    ],
)
def test_out_of_range_parameters_state_the_accepted_range_and_the_value(
    capsys: pytest.CaptureFixture[str], extra: list[str], line: str
) -> None:
    """Checked before any input is read: the exact one line, naming option, range and value."""
    assert main(["image.tif", "-o", "x", *extra]) == 2
    assert _err_line(capsys) == f"sem-degrade: error: {line}"


def test_unreadable_and_missing_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage")
    assert main([str(bad), "-o", str(tmp_path / "o")]) == 2
    assert "broken.tif" in _err_line(capsys)
    assert main([str(tmp_path / "nope.png"), "-o", str(tmp_path / "o")]) == 2
    assert "nope.png: no such file or folder" in _err_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 2
    assert "folder holds no images" in _err_line(capsys)
    assert main(["-o", str(tmp_path / "o")]) == 2
    assert "no input images" in _err_line(capsys)


def test_image_smaller_than_kernel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_samples(tmp_path / "s", n_per_kind=1, shape=(64, 64))[0]
    assert main([str(src), "--rx-px", "30", "-o", str(tmp_path / "o")]) == 2
    assert "smaller than the PSF kernel 181x181" in _err_line(capsys)


def test_replay_reports_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_samples(tmp_path / "s", n_per_kind=1, shape=(64, 64))[0]
    out = tmp_path / "o"
    assert main([str(src), "--rx-px", "2", "--ry-px", "2", "-o", str(out)]) == 0
    doc = json.loads((out / "manifest.json").read_text())
    doc["entries"][0]["seed"] += 1
    (out / "manifest.json").write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["--replay", str(out / "manifest.json")]) == 2
    assert "1 output of 1 differs" in _err_line(capsys)
    np.testing.assert_equal(read_image(out / doc["entries"][0]["output"]).data.ndim, 2)


def test_debug_adds_the_traceback_and_keeps_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(tmp_path / "nope.tif"), "-o", str(tmp_path / "o")]
    assert main(argv) == 2
    plain = capsys.readouterr().err
    assert main([*argv, "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1] == plain.strip()


def test_version_names_the_program_and_its_package(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"sem-degrade {version('sem-physics')} (sem-physics)"


def test_replay_refuses_every_option_and_input_it_does_not_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_samples(tmp_path / "s", n_per_kind=1, shape=(64, 64))[0]
    out, manifest = tmp_path / "o", str(tmp_path / "o" / "manifest.json")
    assert main([str(src), "--rx-px", "2", "--ry-px", "2", "-o", str(out)]) == 0
    capsys.readouterr()
    extra, samples = tmp_path / "extra.tif", tmp_path / "smp_x"
    argv = ["--replay", manifest, "--rx-px", "9", "--seed", "5", "--max-pixels", "10"]
    argv += ["--format", "uint16-png", "--make-samples", str(samples), str(extra)]
    assert main(argv) == 2
    assert _err_line(capsys) == (
        "sem-degrade: error: --replay takes the recipe from the manifest, not from --seed, "
        f"--rx-px, --format, --make-samples, --max-pixels, the input {extra} (it takes only "
        "-o/--out, --overwrite, --json, --debug)"
    )
    assert not samples.exists()
    assert main(["--replay", manifest, "--n-samples", "3", "--strict"]) == 2
    assert "not from --n-samples, --strict (it takes only" in _err_line(capsys)
    # what a replay uses still runs
    assert main(["--replay", manifest, "-o", str(tmp_path / "r"), "--overwrite", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checked"] == 1


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        (
            ["--crop-fraction", "0.2"],
            "--crop-fraction needs --crop fraction (or --crop info-bar, whose fallback it is), "
            "got --crop keep",
        ),
        (
            ["--crop", "none", "--crop-fraction", "0.2"],
            "--crop-fraction needs --crop fraction (or --crop info-bar, whose fallback it is), "
            "got --crop none",
        ),
        (["--n-samples", "3"], "--n-samples needs --make-samples DIR (the samples it counts)"),
    ],
)
def test_an_option_without_the_one_it_needs_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], line: str
) -> None:
    src = write_samples(tmp_path / "s", n_per_kind=1, shape=(64, 64))[0]
    assert main([str(src), "-o", str(tmp_path / "o"), *extra]) == 2
    assert _err_line(capsys) == f"sem-degrade: error: {line}"
    assert not (tmp_path / "o").exists()


def test_python_warnings_of_a_replay_are_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """write_image's clipping warning, issued inside the replay, reads as sem-degrade's own."""
    src = write_samples(tmp_path / "s", n_per_kind=1, shape=(64, 64))[0]
    out = tmp_path / "o"
    argv = [str(src), "--rx-px", "2", "--ry-px", "2", "--sigma", "80", "--format", "uint16-png"]
    assert main([*argv, "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["--replay", str(out / "manifest.json"), "-o", str(tmp_path / "rep")]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("sem-degrade: warning: ")]
    assert len(warned) == 1, err
    assert warned[0].startswith(f"sem-degrade: warning: {tmp_path / 'rep'}")
    assert "clipped to 0..255 by uint16" in warned[0]
    assert all(line.startswith("sem-degrade: ") for line in err.splitlines()), err
    assert "UserWarning" not in err and "protocol.py" not in err and "write_image(" not in err


def test_clipped_share_reads_as_a_plain_percentage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sem_physics.cli import _percent

    assert [_percent(v) for v in (100.0, 57.3, 5.73, 0.012345, 1e-6)] == [
        "100", "57", "5.7", "0.012", "0.0000010"
    ]  # fmt: skip
    src = write_samples(tmp_path / "s", n_per_kind=1, shape=(64, 64))[0]
    argv = [str(src), "--rx-px", "2", "--ry-px", "2", "--offset", "255", "--gain", "100"]
    assert main([*argv, "--format", "uint16-png", "-o", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert (
        "sem-degrade: note: uint16-png clipped 100 % of the pixels to 0..255 (4,096 of 4,096" in err
    )
