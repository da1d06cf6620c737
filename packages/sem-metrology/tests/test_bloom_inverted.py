"""Edge bloom in an inverted image (``truth``): the rims are dark, below the dark phase, and the
bloom fits, made for bright ridges, see the profile turned over; the CD equals the recorded
image's."""

from __future__ import annotations

import numpy as np
import pytest
from sem_metrology import make_line_image, measure_lines


def _bloomed(seed: int, width_px: float, inset_px: float) -> tuple[object, np.ndarray]:
    """14 lines at 80 on spaces at 60, rims of 30 (1.5 x the contrast), 5 % noise."""
    s = make_line_image(
        n_lines=14,
        shape=(256, 512),
        line_level=80.0,
        space_level=60.0,
        bloom_amplitude=30.0,
        bloom_width_px=width_px,
        bloom_inset_px=inset_px,
        seed=seed,
    )
    return s, s.image + np.random.default_rng(seed).normal(0.0, 1.0, s.image.shape)


@pytest.mark.parametrize(("seed", "width_px", "inset_px"), [(0, 1.0, 0.0), (1, 1.5, 0.0)])
def test_an_inverted_image_measures_the_cd_of_the_recorded_one(
    seed: int, width_px: float, inset_px: float
) -> None:
    # Before: the dark rims were not fitted (offset 0) and the dark lines read 2.5-3.5 nm wide,
    # valid and without a warning, while the recorded image read within 0.1 nm.
    s, image = _bloomed(seed, width_px, inset_px)
    recorded = measure_lines(image, s.pixel_size_nm, convention="truth")
    inverted = measure_lines(255.0 - image, s.pixel_size_nm, convention="truth", tone="dark")
    assert recorded.valid and inverted.valid
    assert recorded.tone == "bright" and inverted.tone == "dark"
    assert inverted.n_lines == recorded.n_lines == 14
    assert abs(recorded.cd_nm - s.truth.cd_nm) < 0.5
    assert inverted.cd_nm == pytest.approx(recorded.cd_nm, abs=0.1)
    # the same correction, towards the dark phase: the lines'
    assert inverted.edge_offset_nm == pytest.approx(-recorded.edge_offset_nm, abs=0.05)
    assert recorded.edge_offset_nm > 0.5


def test_dark_lines_with_bright_rims_keep_the_bright_ridge_fit() -> None:
    # Recorded dark lines (trenches) with bright rims on their edges: the ridge lies above the
    # bright phase (the spaces), as for bright lines; the turned-over fit is not used.
    from sem_metrology._truth import _dark_ridge_only

    t = np.arange(-8.0, 8.25, 0.25)
    step = 0.5 * (1.0 + np.tanh(t / 0.8))
    ridge = 0.6 * np.exp(-0.5 * ((t - 1.0) / 1.0) ** 2)
    assert not _dark_ridge_only(t, step + ridge)  # bright ridge
    assert _dark_ridge_only(-t[::-1], 1.0 - (step + ridge)[::-1])  # the same turned over
    assert not _dark_ridge_only(t, step)  # no ridge
    ringing = step + 0.2 * np.sin(2.0 * t) * np.exp(-0.5 * (t / 2.0) ** 2)
    assert not _dark_ridge_only(t, ringing)  # blur ringing: both sides
