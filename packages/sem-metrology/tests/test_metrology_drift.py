"""Scan distortion: the pitch drift across the field, reported apart from CD std."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sem_metrology import make_line_image, measure_lines


@pytest.mark.parametrize("convention", ["truth", "smile"])
def test_pitch_drift_of_a_stretched_scan(convention: str) -> None:
    """Sampling the scene at ``u = x + a x²`` (px) makes the local pitch ``p (1 − 2 a x)``:
    a drift of ``−2 a p_px`` nm per nm, i.e. ``−2000 a p_px`` nm per µm."""
    s = make_line_image(n_lines=20, shape=(256, 640), sigma_nm=0.5, seed=8)
    a = 1.5e-5
    rows, cols = np.mgrid[0:256, 0:600].astype(np.float64)
    warped = ndimage.map_coordinates(s.clean, [rows, cols + a * cols**2], order=3)
    plain = measure_lines(s.clean[:, :600], s.pixel_size_nm, convention=convention)
    m = measure_lines(warped, s.pixel_size_nm, convention=convention)
    pitch_px = s.truth.pitch_nm / s.pixel_size_nm
    expected = -2000.0 * a * pitch_px
    assert m.valid and plain.valid
    assert abs(plain.pitch_drift_nm_per_um) < 0.1 * abs(expected)
    assert m.pitch_drift_nm_per_um == pytest.approx(expected, rel=0.15)
