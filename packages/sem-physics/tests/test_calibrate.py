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
    assert abs(est.rx_px / rx - 1) < 0.02 and abs(est.ry_px / ry - 1) < 0.04, est
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
    focused = make_sample("contacts", (480, 640), seed=2)
    _, defocused = _pair(focused, 8.0, 6.0, 0.3)
    turned = ndi.rotate(focused, 2.0, reshape=False, mode="reflect")
    for wrong in (turned, make_sample("contacts", (480, 640), seed=9)):
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
    write_image(tmp_path / "small.tif", focused[:200])
    assert (
        psf_main(["--reference", str(tmp_path / "small.tif"), str(tmp_path / "defocused.tif")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "defocused.tif" in err[0] and "same field of view" in err[0]
