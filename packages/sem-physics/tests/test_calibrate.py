"""The PSF measured from a focused / defocused pair (``estimate_psf_from_pair``, ``sem-psf
--reference``): the simulator's own settings come back, with drift between the frames, where
the blind estimate of the same image cannot fix them; a pair that is not one field of view is
flagged; bad pairs are clear errors."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
from sem_physics import (
    DegradationParams,
    crop_info_bar,
    degrade,
    estimate_degradation,
    estimate_psf_from_pair,
    make_sample,
    read_image,
    write_image,
)
from sem_physics.psf_cli import main as psf_main

DRIFT = (2.3, -1.7)  # rows, columns: the defocused frame's field of view moved by this


def _real_lines() -> np.ndarray:
    folder = os.environ.get("SEM_REAL_DATA")
    path = Path(folder or "") / "lines_euv_resist_0p827nm.tif"
    if not folder or not path.is_file():
        pytest.skip("SEM_REAL_DATA not set or without lines_euv_resist_0p827nm.tif")
    img = read_image(path)
    return crop_info_bar(img.data, img.info_bar_rows)[:600, :800]


def _pair(focused: np.ndarray, rx: float, ry: float, theta: float, seed: int = 1):
    params = DegradationParams(
        rx_px=rx, ry_px=ry, beta=1.95, theta_rad=theta, gain=1.05, offset=12, sigma=3, dose=20
    )
    moved = ndi.shift(focused, DRIFT, order=3, mode="reflect")  # the stage drifted, then blur
    return params, degrade(moved, params, rng=seed)


def _angle_error_deg(a: float, b: float) -> float:
    return abs(math.degrees((a - b + math.pi / 2) % math.pi - math.pi / 2))


@pytest.mark.parametrize("source", ["lines", "real"])
@pytest.mark.parametrize(
    ("rx", "ry", "theta"), [(28.3, 10.2, 0.39), (6.0, 6.0, 0.0), (15.5, 4.0, 1.2)]
)
def test_the_simulators_setting_comes_back_from_a_drifted_pair(source, rx, ry, theta) -> None:
    focused = make_sample("lines", (480, 640), seed=2) if source == "lines" else _real_lines()
    _, defocused = _pair(focused, rx, ry, theta)
    est = estimate_psf_from_pair(focused, defocused)
    assert est.ok, est.reasons
    # (lines carry little of the blur along them: 4 %, else 2 %)
    tol = 0.04 if source == "lines" else 0.02
    assert abs(est.rx_px / rx - 1) < tol and abs(est.ry_px / ry - 1) < 0.04, est
    if rx / ry > 1.5:
        assert _angle_error_deg(est.theta_rad, theta) < 1.5, est
    assert abs(est.rx_px - rx) < 4 * est.rx_px_err + 0.05 and abs(est.gain - 1.05) < 0.03
    assert est.shift_px == pytest.approx(DRIFT, abs=0.1)
    assert est.residual_rms == pytest.approx(est.noise_rms, rel=0.05)  # the model fits to noise
    psf = est.psf_params()
    assert (psf.rx_px, psf.beta) == (est.rx_px, 1.95)


def test_the_pair_fixes_the_blur_where_the_blind_estimate_cannot() -> None:
    """The demo's line case: one harmonic across the lines, so the spectrum of the defocused
    image alone does not place the 28.3 px cut-off (read 26 % short, flagged); the pair does."""
    focused = make_sample("lines", (480, 640), seed=2)
    _, defocused = _pair(focused, 28.3, 10.2, 0.39, seed=3)
    blind = estimate_degradation(defocused)
    pair = estimate_psf_from_pair(focused, defocused)
    assert abs(pair.rx_px / 28.3 - 1) < 0.02
    assert abs(blind.rx_px / 28.3 - 1) > 5 * abs(pair.rx_px / 28.3 - 1), (blind.rx_px, pair.rx_px)


def test_a_pair_that_is_not_one_field_of_view_is_flagged() -> None:
    """Rotated by 2 degrees between the frames, or another area: no Airy blur maps one onto
    the other, and the residual stands well above the defocused image's own noise."""
    focused = make_sample("contacts", (256, 320), seed=2)
    _, defocused = _pair(focused, 8.0, 6.0, 0.3)
    turned = ndi.rotate(focused, 2.0, reshape=False, mode="reflect")
    for wrong in (turned, make_sample("contacts", (256, 320), seed=9)[:, ::-1]):
        est = estimate_psf_from_pair(wrong, defocused)
        assert not est.ok and any("misfit" in r for r in est.reasons), est.reasons
        assert est.residual_rms > 1.2 * est.noise_rms


@pytest.mark.parametrize(
    ("focused", "defocused", "match"),
    [
        (np.zeros((100, 120)) + 1, np.ones((100, 121)), r"100 x 120 px and the defocused one 100 x 121"),
        (np.ones((40, 300)), np.ones((40, 300)), r"too small: both sides must be >= 64 px"),
        (np.full((100, 100), 7.0), np.random.default_rng(0).random((100, 100)), r"focused image is uniform"),
        (np.full((100, 100), np.nan), np.ones((100, 100)), r"focused image.*NaN"),
    ],
)  # fmt: skip
def test_bad_pairs_are_clear_errors(focused, defocused, match) -> None:
    with pytest.raises(ValueError, match=match):
        estimate_psf_from_pair(focused, defocused)


def test_sem_psf_reference_prints_the_measurement_and_the_restore_option(tmp_path, capsys) -> None:
    focused = make_sample("texture", (256, 320), seed=4)
    _, defocused = _pair(focused, 9.0, 5.0, 0.5)
    write_image(tmp_path / "focused.tif", focused)
    write_image(tmp_path / "defocused.tif", np.clip(defocused, 0, 255))
    args = ["--reference", str(tmp_path / "focused.tif"), str(tmp_path / "defocused.tif")]
    assert psf_main(args) == 0
    out = capsys.readouterr().out
    assert "against" in out and "drift 2." in out and "restore with: sem restore --psf 9." in out
    assert psf_main([*args, "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["reference"].endswith("focused.tif") and abs(rec["ry_px"] - 5.0) < 0.2
    assert (
        psf_main(["--reference", str(tmp_path / "nope.tif"), str(tmp_path / "defocused.tif")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sem-psf: error: --reference {tmp_path / 'nope.tif'}: no such file"]
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")  # read once, refused once
    args = ["--reference", str(tmp_path / "broken.tif"), str(tmp_path / "defocused.tif")]
    assert psf_main([*args, str(tmp_path / "defocused.tif")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"sem-psf: error: --reference {tmp_path}")
    write_image(tmp_path / "small.tif", focused[:200])
    assert (
        psf_main(["--reference", str(tmp_path / "small.tif"), str(tmp_path / "defocused.tif")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "defocused.tif" in err[0] and "same field of view" in err[0]


def test_pairs_that_are_not_a_blur_are_flagged_in_bounded_time() -> None:
    """One frame given twice (shared noise, no blur), an inverted copy, a scrambled one (no
    common field: the radius stays within its bound, the kernel within the crop), and a large
    drift over a shared field, which is fitted, not flagged."""
    import time

    focused = make_sample("contacts", (256, 256), seed=2)
    _, defocused = _pair(focused, 9.0, 6.0, 0.3)
    same = estimate_psf_from_pair(defocused, defocused)
    assert any("share their noise" in r for r in same.reasons)
    inverted = estimate_psf_from_pair(255.0 - focused, defocused)
    assert any("inverted contrast" in r for r in inverted.reasons)
    scrambled = np.random.default_rng(0).permutation(focused.ravel()).reshape(focused.shape)
    # CPU time of this process (all its threads): other work on the machine does not count
    t0 = time.process_time()
    est = estimate_psf_from_pair(scrambled, defocused)
    assert time.process_time() - t0 < 30 and est.rx_px <= 256 / 6 + 1e-6
    assert any("misfit" in r for r in est.reasons)
    big = make_sample("texture", (320, 320), seed=5)
    moved = ndi.shift(big, (60, 50), order=3, mode="reflect")
    params = DegradationParams(
        rx_px=9, ry_px=9, beta=1.95, theta_rad=0, gain=1.05, offset=12, sigma=3, dose=20
    )
    est = estimate_psf_from_pair(big, degrade(moved, params, rng=1))
    assert est.ok, est.reasons
    assert est.shift_px == pytest.approx((60, 50), abs=0.1)
    assert abs(est.rx_px - 9) < 0.3, est


def test_sem_psf_reference_skips_the_reference_in_a_folder(tmp_path, capsys) -> None:
    focused = make_sample("texture", (128, 160), seed=4)
    _, defocused = _pair(focused, 5.0, 5.0, 0.0)
    write_image(tmp_path / "a_focused.tif", focused)
    write_image(tmp_path / "b_defocused.tif", np.clip(defocused, 0, 255))
    assert psf_main(["--reference", str(tmp_path / "a_focused.tif"), str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["file"] for line in captured.out.splitlines()] == [
        str(tmp_path / "b_defocused.tif")
    ]
    assert "a_focused.tif skipped: it is the reference" in captured.err


def test_sem_psf_reference_crops_both_frames_when_only_one_shows_its_info_bar(
    real_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A defocused frame whose info bar was blurred with the picture (no bar detected) is the
    same frame as its reference: both lose the reference's bar, not refused for their sizes."""
    source = real_dir / "lines_euv_resist_0p827nm.tif"
    frame = read_image(source)
    bar = frame.info_bar_rows
    assert bar and bar > 0  # the precondition: the reference's bar is found
    params = DegradationParams(
        rx_px=9.0, ry_px=5.0, beta=1.95, theta_rad=0.5, gain=1.05, offset=12, sigma=3, dose=20
    )
    defocused = write_image(
        tmp_path / "defocused.tif", degrade(frame.data, params, rng=3), "float32"
    )
    assert not read_image(defocused).info_bar_rows  # the blurred bar is not detected
    assert psf_main(["--reference", str(source), str(defocused), "--json"]) == 0
    captured = capsys.readouterr()
    rec = json.loads(captured.out)
    h, w = frame.data.shape
    assert rec["rows_cropped"] == bar and rec["shape"] == [h - bar, w]
    assert rec["rx_px"] == pytest.approx(9.0, rel=0.05) and rec["reasons"] == []
    assert rec["ry_px"] == pytest.approx(5.0, rel=0.05)
    assert f"both cropped by {bar} rows" in captured.err


def test_sem_psf_reference_flags_a_pair_recorded_at_two_pixel_sizes(tmp_path, capsys) -> None:
    """Two frames that record different pixel sizes are two magnifications: the fit is not
    trusted (a reason naming both sizes, a warning line); equal sizes within 1 % or a file
    recording none leave the fit as it is."""
    focused = make_sample("texture", (128, 160), seed=4)
    _, defocused = _pair(focused, 5.0, 5.0, 0.0)
    write_image(tmp_path / "focused.tif", focused, pixel_size_nm=0.83)
    for name, size in (("same.tif", 0.832), ("other.tif", 1.66), ("none.tif", None)):
        write_image(tmp_path / name, np.clip(defocused, 0, 255), pixel_size_nm=size)
    ref = ["--reference", str(tmp_path / "focused.tif"), "--json"]
    recs = {}
    for name in ("same.tif", "other.tif", "none.tif"):
        assert psf_main([*ref, str(tmp_path / name)]) == 0
        captured = capsys.readouterr()
        recs[name] = (json.loads(captured.out), captured.err)
    assert recs["same.tif"][0]["reasons"] == recs["none.tif"][0]["reasons"] == []
    assert "pixel size" not in recs["same.tif"][1] + recs["none.tif"][1]
    other, err = recs["other.tif"]
    want = "pixel size 1.66 nm against the reference's 0.83 nm (another magnification"
    assert other["reasons"][-1].startswith(want) and want in err
    assert other["rx_px"] == recs["none.tif"][0]["rx_px"]  # the fit itself is unchanged
