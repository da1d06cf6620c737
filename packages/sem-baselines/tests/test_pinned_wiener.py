"""Pinned against independent computations and closed forms (the adaptive Wiener's own filter)."""

from __future__ import annotations

import numpy as np
import pytest
from sem_baselines import get_restorer
from sem_physics import PSFParams, airy_psf


def _centred_transfer(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    buf = np.zeros(shape)
    k0, k1 = kernel.shape
    buf[:k0, :k1] = kernel
    return np.fft.fft2(np.roll(buf, (-(k0 // 2), -(k1 // 2)), axis=(0, 1)))


@pytest.mark.parametrize("balance", [0.05, 0.5])
def test_adaptive_wiener_with_a_given_balance_is_the_laplacian_regularised_closed_form(balance):
    """X = conj(H) Y / (|H|^2 + lambda |D|^2), D the 5-point Laplacian (module docstring),
    written out with numpy's complex FFT. The existing closed-form test runs the ``paper``
    preset (scikit-image's own Laplacian), so the adaptive path's regulariser is not pinned."""
    rng = np.random.default_rng(0)
    y = rng.uniform(20, 230, (96, 112))
    psf = PSFParams(rx_px=2.5, ry_px=1.5, theta_rad=0.4)
    out = get_restorer("wiener", psf=psf, balance=balance, boundary="none", clip=False).restore(y)
    lap = np.array([[0.0, -1, 0], [-1, 4, -1], [0, -1, 0]])
    h = _centred_transfer(airy_psf(psf), y.shape)
    d = _centred_transfer(lap, y.shape)
    ref = np.real(
        np.fft.ifft2(np.conj(h) * np.fft.fft2(y) / (np.abs(h) ** 2 + balance * np.abs(d) ** 2))
    )
    np.testing.assert_allclose(out, ref, atol=2e-3)
