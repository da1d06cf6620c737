"""The real EUV resist line/space image (0.827 nm/px, info bar rows 896-959) against SMILE3.

Reference: SMILE3 @dbf9e73 (github IacopoMochi/SMILE3) with its default parameters except
positive tone and the region MATLAB ``A(45:865, 53:1215)`` (0-based rows 44..864, columns
52..1214), the pixel size from the file, run headless on the whole file as SMILE loads it.
Its own outputs: 37 lines, CD 15.677 nm, CD std 0.497 nm, pitch 25.567 nm. The roughness
references are this project's definitions applied to SMILE3's saved edge arrays: LWR 3.037 nm
and LER 2.580 nm (mean of per-line / per-edge 3σ), unbiased (Parseval-consistent, floor
removed) LWR 2.511 nm, LER 2.292 nm. SMILE3's own roughness fields differ by definition:
``standard_LWR`` 3.3016, ``standard_LER`` 2.3271, ``unbiased_LWR`` 3.668, ``unbiased_LER``
3.575 nm.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sem_metrology import measure_lines

LINE_PIXEL_NM = 0.827009  # TIFF tag PixelSize of lines_euv_resist_0p827nm.tif
SMILE_ROI = (44, 865, 52, 1215)
SMILE_REFERENCE = {
    "n_lines": 37,
    "cd_nm": 15.677,
    "cd_std_nm": 0.497,
    "lwr_nm": 3.037,
    "ler_nm": 2.580,
    "lwr_unbiased_nm": 2.511,
    "ler_unbiased_nm": 2.292,
}
#: SMILE3's own roughness fields on its region (headless run of SMILE3 @dbf9e73).
SMILE3_OWN = {"standard_LWR": 3.3016, "standard_LER": 2.3271}


@pytest.fixture(scope="module")
def sem_image(sem_real_dir):
    from sem_physics.io import read_image

    return read_image(sem_real_dir / "lines_euv_resist_0p827nm.tif")


@pytest.fixture(scope="module")
def smile(sem_image):
    return measure_lines(sem_image, roi=SMILE_ROI, convention="smile")


@pytest.fixture(scope="module")
def truth(real_line_image: np.ndarray):
    return measure_lines(real_line_image, LINE_PIXEL_NM, convention="truth")


def _assert_matches_smile(m) -> None:
    ref = SMILE_REFERENCE
    assert m.valid and m.convention == "smile" and m.tone == "bright"
    assert m.n_lines == ref["n_lines"]
    assert abs(m.cd_nm - ref["cd_nm"]) < 0.1
    assert abs(m.cd_std_nm - ref["cd_std_nm"]) < 0.05
    assert m.lwr_nm == pytest.approx(ref["lwr_nm"], rel=0.03)
    assert m.ler_nm == pytest.approx(ref["ler_nm"], rel=0.03)
    assert m.lwr_unbiased_nm == pytest.approx(ref["lwr_unbiased_nm"], rel=0.10)
    assert m.ler_unbiased_nm == pytest.approx(ref["ler_unbiased_nm"], rel=0.10)


def test_smile_convention_reproduces_smile3_on_its_region(smile) -> None:
    _assert_matches_smile(smile)
    assert smile.tilt_deg == pytest.approx(-1.0)  # Radon grid: 89.0°, the frame turned by 1°
    assert smile.levels == (0.0, 106.0)  # zero-padded median: the dark level is 0
    assert smile.crop is not None and "64 rows" in smile.crop


def test_cli_smile_on_the_reference_region(sem_real_dir, smile, capsys) -> None:
    from sem_metrology.cli import main

    path = sem_real_dir / "lines_euv_resist_0p827nm.tif"
    roi = [str(v) for v in SMILE_ROI]
    assert main(["lines", str(path), "--roi", *roi, "--convention", "smile", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pixel_size_nm"] == pytest.approx(LINE_PIXEL_NM)
    assert data["pixel_size_source"].startswith("metadata")
    assert data["crop"] == "info bar: bottom 64 rows removed"
    for key in SMILE_REFERENCE:
        assert data[key] == pytest.approx(getattr(smile, key), abs=1e-9), key


def test_truth_convention_sits_at_the_true_half_level(smile, sem_image) -> None:
    """SMILE's zero dark level puts its 0.5 level below the true half-level between the space
    and line plateaus: its lines are about 2 nm wider on this image."""
    t = measure_lines(sem_image, roi=SMILE_ROI, convention="truth")
    assert t.valid and t.convention == "truth" and t.n_lines >= 36
    space, line = t.levels
    assert 30 < space < 50 and 75 < line < 95
    lo, hi = smile.levels
    smile_level = lo + 0.5 * (hi - lo)
    assert smile_level < 0.5 * (space + line)  # hence wider lines ...
    assert 1.0 < smile.cd_nm - t.cd_nm < 3.0  # ... by 1-3 nm
    assert abs(t.pitch_nm - smile.pitch_nm) < 0.1  # the same lines
    assert t.pitch_nm == pytest.approx(25.5, abs=0.2)


def test_inverted_real_image_is_detected_as_dark_lines(real_line_image, truth) -> None:
    inverted = 255 - real_line_image
    m = measure_lines(inverted, LINE_PIXEL_NM, convention="truth")
    assert truth.tone == "bright" and m.tone == "dark"
    assert "inverted" in m.tone_source and "as recorded" in truth.tone_source
    assert m.n_lines == truth.n_lines and abs(m.cd_nm - truth.cd_nm) < 0.05
    # SMILE's levels cannot measure the inverted image: refused with the reason, not garbage.
    s = measure_lines(inverted[44:865, 52:1215], LINE_PIXEL_NM, convention="smile")
    assert not s.valid and "outside the image's space..line range" in s.reason


@pytest.mark.parametrize("shift", ["left", "up"])
def test_real_image_stable_under_one_pixel_shift(truth, real_line_image, shift) -> None:
    img = real_line_image[:, 1:] if shift == "left" else real_line_image[1:, :]
    m = measure_lines(img, LINE_PIXEL_NM, convention="truth")
    assert abs(m.n_lines - truth.n_lines) <= 1
    assert abs(m.cd_nm - truth.cd_nm) < 3 * truth.cd_se_nm


@pytest.mark.parametrize("k", [1, 3])
def test_real_image_stable_under_90_degree_rotation(truth, real_line_image, k) -> None:
    m = measure_lines(np.rot90(real_line_image, k), LINE_PIXEL_NM, convention="truth")
    assert m.orientation == "horizontal"
    assert m.n_lines == truth.n_lines
    assert abs(m.cd_nm - truth.cd_nm) < 0.05
    assert m.ler_nm == pytest.approx(truth.ler_nm, rel=0.02)


def test_real_image_fit_flags_and_uncertainty(truth) -> None:
    """A PSD fit at a bound is flagged and the unbiased value says which floor it removed."""
    for what, fit in (("LWR", truth.lwr_fit), ("LER", truth.ler_fit)):
        assert fit is not None
        if fit.at_bounds:
            assert any(f.startswith(what) for f in truth.fit_flags)
    if truth.fit_flags:
        assert "high-frequency floor" in truth.unbiased_method
    assert 0 < truth.ler_unbiased_nm < truth.ler_nm and 0 < truth.lwr_unbiased_nm < truth.lwr_nm
    assert 0 < truth.cd_se_nm < 0.2 and 0 < truth.lwr_se_nm < 0.3


def test_cli_default_crops_only_the_detected_info_bar(sem_real_dir, truth, capsys) -> None:
    from sem_metrology.cli import main

    path = sem_real_dir / "lines_euv_resist_0p827nm.tif"
    assert main(["lines", str(path), "--json", "--convention", "truth"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["crop"] == "info bar: bottom 64 rows removed" and data["n_rows"] == 896
    assert data["cd_nm"] == pytest.approx(truth.cd_nm, abs=1e-9)


def test_smile3_own_roughness_fields_are_spreads_across_lines(smile) -> None:
    """What the README says SMILE3's ``standard_LWR``/``standard_LER`` are: 3 x the mean over
    rows of the std across lines (widths) / edges (each about its mean) in each row, computed
    here on the port's edges (equal to SMILE3's): SMILE3's own figures, not the LWR/LER the
    port reports."""
    lead = np.asarray(smile.leading_edges_px) * smile.pixel_size_nm
    trail = np.asarray(smile.trailing_edges_px) * smile.pixel_size_nm
    standard_lwr = 3 * float(np.mean(np.std(trail - lead, axis=0)))
    edges = np.vstack([lead, trail])
    standard_ler = 3 * float(np.mean(np.std(edges - edges.mean(axis=1, keepdims=True), axis=0)))
    assert standard_lwr == pytest.approx(SMILE3_OWN["standard_LWR"], abs=2e-4)
    assert standard_ler == pytest.approx(SMILE3_OWN["standard_LER"], abs=2e-4)
    assert abs(smile.lwr_nm - standard_lwr) > 0.2 and abs(smile.ler_nm - standard_ler) > 0.2


def _turned(image: np.ndarray, angle_deg: float) -> np.ndarray:
    """The image turned by ``angle_deg`` (linear interpolation), 60 px cut at each side so
    that no pixel comes from outside it; the lines' tilt becomes about ``angle_deg - 1``°."""
    from scipy import ndimage

    turned = ndimage.rotate(image.astype(np.float64), angle_deg, reshape=False, order=1)
    return turned[60:-60, 60:-60]


@pytest.fixture(scope="module")
def upright(real_line_image: np.ndarray):
    """The real image turned upright (its lines tilted by -1°, turned by 1°), as cut below."""
    m = measure_lines(_turned(real_line_image, 1.0), LINE_PIXEL_NM, convention="truth")
    assert m.valid and abs(m.tilt_deg) < 0.1
    return m


@pytest.mark.parametrize("angle", [3.3, -1.3])
def test_real_image_tilted_2p3_degrees_measures_as_upright(real_line_image, upright, angle):
    """Lines tilted ±2.3° drift by about one pitch over the 776 rows: the contrast is judged
    along them (the column mean, contrast 0.14-0.16, refused them)."""
    m = measure_lines(_turned(real_line_image, angle), LINE_PIXEL_NM, convention="truth")
    assert m.valid, m.reason
    assert m.tilt_deg == pytest.approx(angle - 1.0, abs=0.1)
    assert m.n_lines == upright.n_lines and abs(m.cd_nm - upright.cd_nm) < 0.05


def test_inverted_tilted_real_image_is_detected_as_dark_lines(real_line_image, upright) -> None:
    """Inverted and tilted 3°: dark lines, from the noise of the phases along the lines (taken
    as bright, the spaces' width was reported as CD: 12.1 nm against 13.5 nm)."""
    m = measure_lines(255.0 - _turned(real_line_image, 4.0), LINE_PIXEL_NM, convention="truth")
    assert m.valid and m.tone == "dark" and "inverted" in m.tone_source
    assert m.n_lines == upright.n_lines and abs(m.cd_nm - upright.cd_nm) < 0.05
