"""Pinned against independent computations and closed forms (sub-pixel polynomial edge finder)."""

from __future__ import annotations

import numpy as np
import pytest
from sem_metrology.edges import subpixel_edges


@pytest.mark.parametrize("x0", [20.13, 20.5, 20.87])
def test_polynomial_edge_of_an_exactly_polynomial_profile_is_exact(x0):
    """Rows that are exactly a cubic in x (curved at the crossing) are fitted exactly by the degree-4
    polynomial, whose 0.5 crossing is x0 by construction: the finder (0.25-px scan plus Newton
    steps inside the bracket) must return x0 to 1e-6 px; a linear interpolation on the scan
    grid alone is off by ~1e-3 px on this curved profile."""
    x = np.arange(48, dtype=np.float64)
    u = (x - x0) / 6.0
    row = 0.5 + 0.3 * u + 0.2 * u**2 + 0.05 * u**3  # crosses 0.5 rising only at x0 in the window
    img = np.tile(row, (5, 1))
    pred = np.full((1, 5), round(x0))
    out = subpixel_edges(img, pred, rising=True, half_window_px=6, method="polynomial", degree=4)
    np.testing.assert_allclose(out, x0, atol=1e-6)
