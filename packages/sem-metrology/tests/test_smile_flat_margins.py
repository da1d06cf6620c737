"""``smile`` on regions with flat stretches: a margin of space (a crop cut mid-space, the end of
an array) or wide spaces. SMILE's low-pass filtered profile has peaks there (noise, the ringing
of its filter) that SMILE3 pairs into lines; the lines the mean profile does not show are
dropped, and the lines measure as on a region without the margin."""

from __future__ import annotations

import numpy as np
import pytest
from sem_metrology import make_line_image, measure_lines
from sem_physics import DegradationParams

PX = 0.827
# Airy blur of 1.5 px, 3 grey levels of Gaussian noise and shot noise (dose 10).
_NOISY = DegradationParams(
    rx_px=1.5, ry_px=1.5, beta=2.0, theta_rad=0.0, gain=1.0, offset=10.0, sigma=3.0, dose=10.0
)


def _dropped_warning(warnings: list[str]) -> str:
    found = [w for w in warnings if "that the mean profile across the lines does not show" in w]
    assert len(found) == 1, warnings
    return found[0]


@pytest.mark.parametrize("seed", [1, 2])
def test_a_crop_with_wide_flat_margins_measures_its_lines(seed: int) -> None:
    """12 lines (pitch 31 px, CD 15 px) with 40 px of flat space on either side: 12 lines, LWR
    within 5 % of the rendered edges' and CD within 0.05 nm of the same lines cropped at half
    a space. SMILE3 (and this convention before) read 18 and 16 lines, LWR 10.0 and 9.3 nm
    against 4.0 and 4.3 nm."""
    n, pitch, margin = 12, 31, 40
    s = make_line_image(
        n, (256, n * pitch + 2 * margin + 4), pitch_nm=pitch * PX, cd_nm=15 * PX,
        sigma_nm=1.0, degradation=_NOISY, seed=seed,
    )  # fmt: skip
    m = measure_lines(s.image, PX, convention="smile")
    assert m.valid and m.n_lines == n, (m.n_lines, m.warnings)
    assert m.lwr_nm == pytest.approx(s.truth.lwr_nm, rel=0.05)
    assert "SMILE3 counts such lines" in _dropped_warning(m.warnings)
    assert not any("paired with more than one leading edge" in w for w in m.warnings)
    a, b = int(s.leading_px.min()) - 8, int(s.trailing_px.max()) + 9  # half a space each side
    tight = measure_lines(s.image[:, a:b], PX, convention="smile")
    assert tight.valid and tight.n_lines == n
    assert m.cd_nm == pytest.approx(tight.cd_nm, abs=0.05)


def test_lines_beside_a_wide_flat_field_are_measured() -> None:
    """8 lines of pitch 30 px in a 512-px field (the end of an array): refused before, 29 % of
    the edge points interpolated, those of 15 lines SMILE paired in the flat field."""
    noise = DegradationParams(**{**_NOISY.model_dump(), "rx_px": 2.0, "ry_px": 2.0, "sigma": 5.0})
    s = make_line_image(8, (256, 512), pitch_nm=30 * PX, degradation=noise, seed=3)
    m = measure_lines(s.image, PX, convention="smile")
    assert m.valid, m.reason
    assert m.n_lines == 8 and m.lwr_nm == pytest.approx(s.truth.lwr_nm, rel=0.05)
    _dropped_warning(m.warnings)


def test_the_margin_before_the_first_line_adds_no_line() -> None:
    """20 lines with a 24-px margin, 5 grey levels of noise: SMILE3 pairs two noise peaks in the
    margin with the first line's trailing edge (22 lines, two of them too wide); 20 now."""
    s = make_line_image(n_lines=20, shape=(512, 640), seed=0)
    image = s.image + np.random.default_rng(100).normal(0.0, 5.0, s.image.shape)
    m = measure_lines(image, PX, convention="smile")
    assert m.valid and m.n_lines == 20
    assert m.lwr_nm == pytest.approx(s.truth.lwr_nm, rel=0.1)
    assert not any("paired with more than one leading edge" in w for w in m.warnings)
    _dropped_warning(m.warnings)


def test_wide_spaces_and_lines_add_no_lines() -> None:
    """3 lines of pitch 60 px, 10 grey levels of noise: SMILE3 reads 14 lines (CD 12.7 nm, LWR
    17 nm); the flat tops and spaces are left out: 3 lines, LWR within 10 % of the truth's."""
    s = make_line_image(n_lines=3, shape=(256, 256), pitch_nm=60 * PX, seed=19)
    image = s.image + np.random.default_rng(1019).normal(0.0, 10.0, s.image.shape)
    m = measure_lines(image, PX, convention="smile")
    assert m.valid and m.n_lines == 3
    assert m.lwr_nm == pytest.approx(s.truth.lwr_nm, rel=0.1)


def test_noise_free_tilted_lines_get_no_line_of_negative_width() -> None:
    """12 lines tilted by 1°, noise-free: the region inset after SMILE's turn starts in a space,
    where a ringing peak paired with the border made a 13th line of CD -7.4 nm."""
    s = make_line_image(n_lines=12, shape=(256, 400), tilt_deg=1.0, seed=0)
    m = measure_lines(s.image, PX, convention="smile")
    assert m.valid and m.n_lines == 12
    assert min(m.line_cd_nm) > 0.5 * s.truth.cd_nm
