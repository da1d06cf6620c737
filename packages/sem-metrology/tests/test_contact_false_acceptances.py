"""Images that are no contact-hole array: line ends, random particles, blurred-restored arrays.

Each check has a case it catches and a valid case near its limit that still measures cleanly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sem_metrology import make_contact_image, make_line_image, measure_contacts, render_ellipses
from sem_physics import DegradationParams, degrade

CONTACT_IMAGE = "contacts_0p901nm.tif"
CONTACT_PIXEL_NM = 0.9009
# The limits of sem_metrology.contacts, as literals (these tests also run against older code).
MAX_HOLE_ELLIPTICITY = 0.75  # line segments above (refused)
MAX_SPACING_SPREAD = 0.1  # nearest-neighbour spacing spread above: warning
MAX_HOLE_CD_SPREAD = 0.2  # CD spread above: warning


def _deg(blur_px: float = 1.5, sigma: float = 5.0, dose: float = 30.0) -> DegradationParams:
    return DegradationParams(
        rx_px=blur_px,
        ry_px=blur_px,
        beta=2.0,
        theta_rad=0.0,
        gain=1.0,
        offset=10.0,
        sigma=sigma,
        dose=dose,
    )


def _segments(
    seed: int, *, rows: int, length_px: int, line: float, space: float, n_lines: int = 10
) -> np.ndarray:
    """Line/space blocks (``make_line_image``) whose lines end inside a 480 x 640 field."""
    canvas = np.full((480, 640), space)
    top = (480 - rows * length_px - (rows - 1) * 30) // 2
    for k in range(rows):
        s = make_line_image(
            n_lines=n_lines,
            shape=(length_px, 600),
            pixel_size_nm=1.0,
            line_level=line,
            space_level=space,
            sigma_nm=1.0,
            seed=seed + k,
        )
        r0 = top + k * (length_px + 30)
        canvas[r0 : r0 + length_px, 20:620] = s.clean
    return degrade(canvas, _deg(), np.random.default_rng(seed)).astype(np.float32)


def _hole_grid(
    cds_px: np.ndarray, pitch_px: float, shape: tuple[int, int], seed: int, jitter_px: float = 0.0
) -> np.ndarray:
    """Dark round holes of the given CDs on a square lattice (cycled), blurred and noisy."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[pitch_px / 2 : shape[0] : pitch_px, pitch_px / 2 : shape[1] : pitch_px]
    centres = np.column_stack([xs.ravel(), ys.ravel()]) + rng.normal(0, jitter_px, (xs.size, 2))
    d = np.resize(cds_px, len(centres))
    cov, _ = render_ellipses(shape, centres, np.column_stack([d / 2, d / 2]), np.zeros(len(d)))
    return degrade(140.0 - 100.0 * cov, _deg(), rng).astype(np.float32)


def _particles(seed: int, n: int = 60, shape: tuple[int, int] = (480, 640)) -> np.ndarray:
    """Bright round particles (radius 7-10 px) at random, non-overlapping places."""
    rng = np.random.default_rng(seed)
    centres: list[np.ndarray] = []
    while len(centres) < n:
        p = rng.uniform((0, 0), shape[::-1])
        if all(np.hypot(*(p - q)) > 22 for q in centres):
            centres.append(p)
    r = rng.uniform(7, 10, n)
    cov, _ = render_ellipses(shape, np.array(centres), np.column_stack([r, r]), np.zeros(n))
    return degrade(60.0 + 90.0 * cov, _deg(1.0), rng).astype(np.float32)


# --- line ends and trench segments: refused -------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("line", "space"), [(150.0, 50.0), (50.0, 150.0)])
def test_lines_ending_in_the_field_are_refused(seed: int, line: float, space: float) -> None:
    """Bright or dark lines 150 px long: each closed line reads as one long 'hole'."""
    img = _segments(seed, rows=1, length_px=150, line=line, space=space)
    m = measure_contacts(img, 1.0)
    assert not m.valid
    assert m.reason.startswith("line segments, not contact holes")
    assert "measure them as lines" in m.reason and "nm" in m.reason
    assert m.cd_nm is None and m.holes == []


def test_trench_segments_are_refused() -> None:
    """Three rows of dark trench segments (aspect about 5:1), 42 segments in all."""
    img = _segments(0, rows=3, length_px=120, line=40.0, space=140.0, n_lines=14)
    m = measure_contacts(img, 1.0)
    assert not m.valid and m.reason.startswith("line segments")
    assert f"> {MAX_HOLE_ELLIPTICITY:g}" in m.reason


@pytest.mark.parametrize("seed", [0, 1])
def test_slots_near_the_elongation_limit_still_measure(seed: int) -> None:
    """Slot contacts of ellipticity 0.72 (3.6:1, the limit is 0.75) are measured, no warning."""
    s = make_contact_image(
        (256, 320),
        pixel_size_nm=1.0,
        pitch_nm=70.0,
        cd_nm=24.0,
        cd_sigma_nm=0.5,
        ellipticity=0.72,
        ellipse_angle_deg=20.0 + 40.0 * seed,
        degradation=_deg(),
        seed=seed,
    )
    m = measure_contacts(s.image, 1.0)
    assert m.valid and m.warnings == []
    assert 0.69 < m.ellipticity < MAX_HOLE_ELLIPTICITY
    assert m.cd_nm == pytest.approx(np.mean(s.cd_nm), rel=0.03)


# --- random particles: warning --------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_particles_warn_of_no_array(seed: int) -> None:
    m = measure_contacts(_particles(seed), 1.0)
    assert m.valid  # measurable blobs; a warning says they lie on no lattice
    spacing = [w for w in m.warnings if w.startswith("hole centres on no regular array")]
    assert len(spacing) == 1 and "nm" in spacing[0]
    assert f"limit {100 * MAX_SPACING_SPREAD:g} %" in spacing[0]


def test_jittered_array_measures_without_spacing_warning() -> None:
    """Placement jitter of 2 px on a 40-px pitch (spacing spread about 4 %) is still an array."""
    img = _hole_grid(np.array([16.0]), 40.0, (320, 400), seed=1, jitter_px=2.0)
    m = measure_contacts(img, 1.0)
    assert m.valid and m.warnings == []
    assert m.pitch_nm == pytest.approx(40.0, rel=0.1)  # nearest of jittered neighbours
    assert m.cd_nm == pytest.approx(16.0, rel=0.05)


# --- uneven sizes (as after strong blur and restoration): warning ---------------------------


def test_holes_of_very_uneven_size_warn() -> None:
    """A lattice of holes of 16 and 30 px mixed 2:3 (CD spread 28 %) is flagged."""
    img = _hole_grid(np.array([16.0, 30.0, 30.0, 16.0, 30.0]), 48.0, (336, 432), seed=0)
    m = measure_contacts(img, 1.0)
    assert m.valid
    spread = [w for w in m.warnings if w.startswith("hole CDs spread by")]
    assert len(spread) == 1 and "CD and LCDU doubtful" in spread[0]
    assert f"limit {100 * MAX_HOLE_CD_SPREAD:g} %" in spread[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_wide_but_plausible_cd_spread_measures_without_warning(seed: int) -> None:
    """CD sigma 3.9 nm on 26 nm (spread 12-16 %, limit 20 %): a valid array, no warning."""
    s = make_contact_image(
        (320, 400),
        pixel_size_nm=1.0,
        pitch_nm=50.0,
        cd_nm=26.0,
        cd_sigma_nm=3.9,
        degradation=_deg(),
        seed=seed,
    )
    m = measure_contacts(s.image, 1.0)
    assert m.valid and m.warnings == []
    assert 0.1 < m.cd_std_nm / m.cd_nm < MAX_HOLE_CD_SPREAD


@pytest.mark.slow
def test_real_array_blurred_and_restored_warns(sem_real_dir) -> None:
    """The real array blurred by a 30-px PSF and Wiener-restored: CD +24 %, now with a warning;
    the focused image keeps no warning."""
    pytest.importorskip("sem_baselines")
    from sem_baselines.restorer import get_restorer
    from sem_metrology.cli import load_image
    from sem_physics import ParameterRanges

    path = sem_real_dir / CONTACT_IMAGE
    if not path.is_file():
        pytest.skip(f"{path} missing: set SEM_REAL_DATA to the folder holding {CONTACT_IMAGE}")
    real = np.asarray(load_image(path).measured, dtype=np.float64)  # info bar left out
    focused = measure_contacts(real, CONTACT_PIXEL_NM)
    assert focused.valid and focused.warnings == []
    mid = ParameterRanges().midpoint().model_dump()
    blurred = degrade(real, DegradationParams(**{**mid, "rx_px": 30.0, "ry_px": 30.0}), 0)
    restored = get_restorer("wiener").restore(np.asarray(blurred, dtype=np.float32))
    m = measure_contacts(np.asarray(restored, dtype=np.float64), CONTACT_PIXEL_NM)
    assert m.valid and m.cd_nm > 1.15 * focused.cd_nm  # the false CD the warning is about
    assert any(w.startswith("hole CDs spread by") for w in m.warnings)
    assert math.isfinite(m.lcdu_nm)
