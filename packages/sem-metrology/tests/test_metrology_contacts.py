"""Contact-hole metrology against closed forms, rendered truth and the real contacts image."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import tifffile
from sem_metrology import (
    ContactMeasurement,
    make_contact_image,
    measure_contacts,
    measure_lines,
    polygon_moments,
    render_ellipses,
)
from sem_metrology.cli import load_image, main
from sem_metrology.preprocess import detect_info_bar_rows, trailing_frame_rows
from sem_metrology.report import save_contact_report
from sem_physics import DegradationParams

CONTACT_IMAGE = "contacts_0p901nm.tif"
CONTACT_PIXEL_NM = 0.9009  # CZ_SEM tag of contacts_0p901nm.tif
CONTACT_INFO_BAR_ROW = 676


def _deg(rx: float, sigma: float, dose: float) -> DegradationParams:
    return DegradationParams(
        rx_px=rx, ry_px=rx, beta=2.0, theta_rad=0.0, gain=1.0, offset=10.0, sigma=sigma, dose=dose
    )


NOISE_FREE = _deg(1.0, 0.0, 1e9)
REALISTIC = _deg(2.0, 8.0, 20.0)  # edge spread ~1 px, pixel noise / contrast ~ 0.1


def _match(m: ContactMeasurement, sample) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each measured centre to the nearest true centre, and that hole's index."""
    centres = np.array([[h.centre_x_px, h.centre_y_px] for h in m.holes])
    d = np.linalg.norm(centres[:, None, :] - sample.centres_px[None, :, :], axis=2)
    return d.min(axis=1), d.argmin(axis=1)


def test_polygon_moments_closed_forms() -> None:
    a, b, t = 9.0, 4.0, np.deg2rad(25.0)
    phi = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
    u, v = a * np.cos(phi), b * np.sin(phi)
    xy = np.column_stack([3 + u * np.cos(t) - v * np.sin(t), -2 + u * np.sin(t) + v * np.cos(t)])
    area, cx, cy, cov = polygon_moments(xy)
    assert area == pytest.approx(np.pi * a * b, rel=1e-5)
    assert (cx, cy) == pytest.approx((3.0, -2.0), abs=1e-9)
    assert np.linalg.eigvalsh(cov) == pytest.approx([b * b / 4, a * a / 4], rel=1e-5)
    # Rectangle (exact): area w h, central moments w²/12 and h²/12; orientation-independent.
    rect = np.array([[0.0, 0.0], [6.0, 0.0], [6.0, 2.0], [0.0, 2.0]])
    for poly in (rect, rect[::-1]):
        area, cx, cy, cov = polygon_moments(poly)
        assert (area, cx, cy) == pytest.approx((12.0, 3.0, 1.0))
        assert cov == pytest.approx(np.array([[3.0, 0.0], [0.0, 1.0 / 3.0]]))
    with pytest.raises(ValueError, match="zero area"):
        polygon_moments(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]))


def test_render_ellipses_area_is_exact_to_sampling() -> None:
    centres = np.array([[20.3, 18.7], [60.1, 40.4]])
    semi = np.array([[10.0, 6.0], [7.5, 7.5]])
    cov, areas = render_ellipses((64, 96), centres, semi, np.array([0.4, 0.0]), supersample=16)
    assert cov.min() >= 0 and cov.max() <= 1
    assert areas == pytest.approx(np.pi * semi[:, 0] * semi[:, 1], rel=2e-3)
    assert cov.sum() == pytest.approx(areas.sum())


def test_noise_free_holes_cd_within_0p15_nm() -> None:
    s = make_contact_image(shape=(256, 320), degradation=NOISE_FREE, seed=1)
    m = measure_contacts(s.image, s.pixel_size_nm)
    assert m.valid and m.tone == "dark"
    dist, j = _match(m, s)
    assert dist.max() < 0.1  # every measured hole is a true hole, centred to 0.1 px
    assert len(set(j.tolist())) == m.n_holes
    # Every hole clear of the border by 3 px is measured; holes cut by it are excluded.
    assert np.sum(s.margin_px > 3) <= m.n_holes <= s.n_complete
    assert m.n_border_excluded > 0
    err = m.cds_nm() - s.cd_nm[j]
    # Residual bias: the 0.5 contour of a blurred convex edge sits ~σ²/(2R) inside.
    assert np.abs(err).max() < 0.15
    assert m.lcdu_nm == pytest.approx(3 * s.cd_nm[j].std(), rel=0.02)
    # LCDU is 3 x the population standard deviation of the measured CDs (3 x cd_std_nm)
    assert m.lcdu_nm == pytest.approx(3 * np.std(m.cds_nm()), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_realistic_noise_cd_bias_and_lcdu(seed: int) -> None:
    s = make_contact_image(shape=(256, 320), degradation=REALISTIC, cd_sigma_nm=1.0, seed=seed)
    m = measure_contacts(s.image, s.pixel_size_nm)
    assert m.valid
    dist, j = _match(m, s)
    assert dist.max() < 0.3
    assert np.sum(s.margin_px > 3) <= m.n_holes <= s.n_complete
    err = m.cds_nm() - s.cd_nm[j]
    assert abs(err.mean()) < 0.3  # CD bias (nm)
    assert np.abs(err).max() < 0.5  # every hole (nm)
    assert m.lcdu_nm == pytest.approx(3 * s.cd_nm[j].std(), rel=0.10)
    assert m.pitch_nm == pytest.approx(44.0, rel=0.01)


def test_noise_specks_do_not_set_the_hole_size() -> None:
    """Without smoothing, very noisy images segment into many specks besides the holes: the
    typical area is area-weighted, so the holes are still measured, the specks dropped."""
    noisy = _deg(2.0, 25.0, 5.0)
    s = make_contact_image(shape=(256, 320), degradation=noisy, seed=1)
    m = measure_contacts(s.image, s.pixel_size_nm, segmentation_sigma_px=0.0)
    assert m.valid and m.n_merged_excluded == 0
    dist, _ = _match(m, s)
    assert dist.max() < 1.0 and np.sum(s.margin_px > 3) <= m.n_holes <= s.n_complete


def test_ellipticity_and_orientation_of_elliptical_holes() -> None:
    s = make_contact_image(
        shape=(256, 320),
        degradation=REALISTIC,
        ellipticity=0.3,
        ellipse_angle_deg=30.0,
        cd_sigma_nm=0.5,
        seed=2,
    )
    m = measure_contacts(s.image, s.pixel_size_nm)
    assert m.ellipticity == pytest.approx(0.3, abs=0.02)
    angles = np.array([h.orientation_deg for h in m.holes])
    assert np.median(angles) == pytest.approx(30.0, abs=2.0)
    for h in m.holes:
        assert h.major_nm * h.minor_nm == pytest.approx(h.cd_nm**2, rel=0.05)


def test_bright_holes_measure_like_dark_ones() -> None:
    s = make_contact_image(shape=(200, 260), degradation=REALISTIC, seed=3)
    dark = measure_contacts(s.image, s.pixel_size_nm)
    bright = measure_contacts(255.0 - s.image, s.pixel_size_nm)
    assert bright.tone == "bright" and bright.n_holes == dark.n_holes
    # Equal up to marching-squares saddle choices (which side is "inside" flips).
    assert bright.cd_nm == pytest.approx(dark.cd_nm, abs=1e-3)
    forced = measure_contacts(s.image, s.pixel_size_nm, tone="dark")
    assert forced.cd_nm == pytest.approx(dark.cd_nm, abs=1e-9)


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (np.full((64, 64), 80.0), "constant"),
        (np.full((64, 64), 255, dtype=np.uint8), "saturated"),
        (np.full((64, 64), 128, dtype=np.uint8), "constant image: every pixel is 128"),
        (np.random.default_rng(0).normal(100, 10, (160, 160)), "below"),
    ],
)
def test_unmeasurable_images_are_flagged(image: np.ndarray, reason: str) -> None:
    m = measure_contacts(image, 1.0)
    assert not m.valid and reason in m.reason
    assert m.cd_nm is None and m.lcdu_nm is None and m.n_holes == 0


def test_bad_arguments_raise() -> None:
    img = np.zeros((32, 32))
    with pytest.raises(ValueError, match="pixel_size_nm is required"):
        measure_contacts(img)
    with pytest.raises(ValueError, match="roi"):
        measure_contacts(img, 1.0, roi=(0, 40, 0, 10))
    with pytest.raises(ValueError, match="threshold"):
        measure_contacts(img, 1.0, threshold=0.0)


def test_json_csv_and_report(tmp_path) -> None:
    s = make_contact_image(shape=(160, 200), degradation=REALISTIC, seed=4)
    m = measure_contacts(s.image, s.pixel_size_nm)
    data = json.loads(m.to_json())
    for key in ("n_holes", "cd_nm", "cd_std_nm", "lcdu_nm", "ellipticity", "pitch_nm"):
        assert data[key] is not None, key
    assert len(data["holes"]) == m.n_holes and "contour_px" not in data["holes"][0]
    assert ContactMeasurement.model_validate_json(m.to_json(include_contours=True)) == m
    summary = list(csv.DictReader(io.StringIO(m.to_csv("summary"))))
    assert float(summary[0]["lcdu_nm"]) == pytest.approx(m.lcdu_nm)
    holes = list(csv.DictReader(io.StringIO(m.to_csv("holes"))))
    assert [float(r["cd_nm"]) for r in holes] == pytest.approx(m.cds_nm().tolist())
    out = save_contact_report(m, s.image, tmp_path / "c.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def real_contacts(sem_real_dir) -> np.ndarray:
    path = sem_real_dir / CONTACT_IMAGE
    if not path.is_file():
        pytest.skip(f"{path} missing: set SEM_REAL_DATA to the folder holding {CONTACT_IMAGE}")
    return tifffile.imread(path)


def test_real_contacts_plausible(real_contacts: np.ndarray) -> None:
    assert detect_info_bar_rows(real_contacts) == real_contacts.shape[0] - CONTACT_INFO_BAR_ROW
    m = measure_contacts(real_contacts[:CONTACT_INFO_BAR_ROW], CONTACT_PIXEL_NM)
    # Hexagonal array, pitch ~44 nm (hp22) = 49 px: 1024 x 676 px hold about 20 x 16 holes.
    assert m.valid and m.tone == "dark"
    assert 250 <= m.n_holes <= 300 and 20 <= m.n_border_excluded <= 70
    assert m.pitch_nm == pytest.approx(43.0, abs=2.0)
    assert 22.0 < m.cd_nm < 30.0 and 1.0 < m.lcdu_nm < 6.0
    assert m.ellipticity < 0.15 and m.n_merged_excluded == 0 and m.n_failed <= 3
    # Stable under a 1-pixel shift and a 90° rotation (same holes, same contours).
    shifted = measure_contacts(real_contacts[1:CONTACT_INFO_BAR_ROW, 1:], CONTACT_PIXEL_NM)
    assert shifted.cd_nm == pytest.approx(m.cd_nm, abs=0.05)
    rotated = measure_contacts(np.rot90(real_contacts[:CONTACT_INFO_BAR_ROW]), CONTACT_PIXEL_NM)
    assert rotated.n_holes == m.n_holes
    assert rotated.cd_nm == pytest.approx(m.cd_nm, abs=1e-3)


def test_cli_contacts_on_real_file(sem_real_dir, tmp_path, capsys) -> None:
    path = sem_real_dir / CONTACT_IMAGE
    if not path.is_file():
        pytest.skip(f"{path} missing: set SEM_REAL_DATA to the folder holding {CONTACT_IMAGE}")
    report = tmp_path / "contacts.png"
    argv = ["contacts", str(path), "--pixel-size-nm", str(CONTACT_PIXEL_NM), "--json"]
    assert main([*argv, "--report", str(report)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert report.read_bytes()[:4] == b"\x89PNG"
    direct = measure_contacts(tifffile.imread(path)[:CONTACT_INFO_BAR_ROW], CONTACT_PIXEL_NM)
    assert data["n_holes"] == direct.n_holes  # the info bar was found and removed
    assert data["cd_nm"] == pytest.approx(direct.cd_nm)
    assert data["pixel_size_source"] == "command line"
    assert main(["contacts", str(path), "--pixel-size-nm", "0.9", "--csv"]) == 0
    assert "lcdu_nm" in capsys.readouterr().out


def test_cli_contacts_flat_image_exit_1(tmp_path, capsys) -> None:
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.full((64, 64), 90, dtype=np.uint8))
    assert main(["contacts", str(flat), "--pixel-size-nm", "1", "--info-bar", "none"]) == 1
    assert capsys.readouterr().err.strip().startswith(f"sem-measure: error: {flat}: not measurable")


def test_detect_info_bar_rows_synthetic() -> None:
    img = np.random.default_rng(0).uniform(40, 200, (120, 80))
    assert detect_info_bar_rows(img) is None
    img[100:] = 255.0
    img[104:110, 10:30] = 0.0  # text on the bar
    assert detect_info_bar_rows(img) == 20
    assert detect_info_bar_rows(img, search_fraction=0.1) is None  # bar taller than allowed
    img[99] = 0.0  # a black frame line above the bar belongs to it
    assert detect_info_bar_rows(img) == 21
    assert trailing_frame_rows(img[:100]) == 1 and trailing_frame_rows(img[:99]) == 0
    assert trailing_frame_rows(np.full((20, 20), 7.0)) == 0


def test_load_image_info_bar_of_the_reader(sem_real_dir, tmp_path) -> None:
    """'auto' takes the rows sem_physics.io found, the contact bar's black frame line included."""
    for name, top in ((CONTACT_IMAGE, CONTACT_INFO_BAR_ROW), ("lines_euv_resist_0p827nm.tif", 896)):
        path = sem_real_dir / name
        if not path.is_file():
            pytest.skip(f"{path} missing: set SEM_REAL_DATA to the folder holding {name}")
        img = load_image(path)
        raw = tifffile.imread(path)
        assert img.data.shape == raw.shape[:2]  # the whole frame is kept ...
        assert img.measured.shape == (top, raw.shape[1])  # ... and the bar left out
        assert img.info_bar_rows == raw.shape[0] - top  # 92 and 64
        last = img.measured[-1]
        assert np.mean(last < 5) < 0.05 and np.mean(last > 250) < 0.05
    # No bar found: nothing is removed (no blind 6.67 % crop).
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.random.default_rng(0).integers(40, 200, (120, 90), dtype=np.uint8))
    assert load_image(plain).info_bar_rows == 0
    assert load_image(plain, "none").measured.shape == (120, 90)
    assert load_image(plain, "8").measured.shape == (112, 90)


def test_cli_contacts_pixel_size_and_bar_from_metadata(sem_real_dir, capsys) -> None:
    from sem_physics.io import read_image

    path = sem_real_dir / CONTACT_IMAGE
    if not path.is_file():
        pytest.skip(f"{path} missing: set SEM_REAL_DATA to the folder holding {CONTACT_IMAGE}")
    assert main(["contacts", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pixel_size_nm"] == pytest.approx(CONTACT_PIXEL_NM, rel=1e-4)
    assert data["pixel_size_source"].startswith("metadata")
    direct = measure_contacts(tifffile.imread(path)[:CONTACT_INFO_BAR_ROW], CONTACT_PIXEL_NM)
    assert data["n_holes"] == direct.n_holes
    assert data["cd_nm"] == pytest.approx(direct.cd_nm, rel=1e-4)
    # The reader's image object measures the same (its info bar is left out).
    sem = measure_contacts(read_image(path))
    assert sem.pixel_size_source.startswith("metadata") and sem.n_holes == direct.n_holes
    assert sem.cd_nm == pytest.approx(direct.cd_nm, rel=1e-4)


def test_wrong_pattern_is_flagged_not_measured(real_contacts, real_line_image) -> None:
    """Lines are no contact holes (every line is cut by the border) and vice versa."""
    holes = measure_contacts(real_line_image, 0.827)
    assert not holes.valid and holes.n_holes == 0 and holes.n_border_excluded >= 30
    lines = measure_lines(real_contacts[:CONTACT_INFO_BAR_ROW], CONTACT_PIXEL_NM)
    assert not lines.valid and "no measurable lines" in lines.reason
