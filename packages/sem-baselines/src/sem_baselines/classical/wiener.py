"""Wiener(-Hunt) deconvolution with the regularisation chosen from the image's noise level.

With ``H`` the transfer function of the PSF, ``D`` that of the discrete Laplacian
``[[0, -1, 0], [-1, 4, -1], [0, -1, 0]]`` (scikit-image's default regulariser) and
``lambda`` the balance, the estimate in the Fourier domain is::

    X = conj(H) Y / (|H|^2 + lambda |D|^2)

* ``preset="adaptive"`` (default): ``lambda`` by the discrepancy principle -- the largest
  residual ``||y - h ⊛ x||^2 / n`` allowed is ``tau`` times the mean noise variance, found by
  bisection on ``log lambda`` (the residual grows monotonically with ``lambda``). The noise
  variance and, when no PSF is given, the PSF come from :func:`sem_physics.estimate_degradation`.
* ``preset="paper"``: the paper's deployment, balance 0.01 and the fixed PSF, through
  ``skimage.restoration.wiener`` on the [0, 1] scale with its [-1, 1] clip switched off.

The FFT makes the image periodic; boundaries: see :mod:`.deconv`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.fft as sfft
from pydantic import Field

from ..restorer import register
from .deconv import DeconvConfig, DeconvRestorer, PSFChoice, irfft2_inplace, transfer

__all__ = ["WienerConfig", "WienerRestorer", "WienerTruePSF", "discrepancy_balance"]

_LAPLACIAN = np.array([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
PAPER_BALANCE = 0.01
BAND_OTF = 0.05  # |H| above which a frequency counts as carrying signal


class WienerConfig(DeconvConfig):
    """Adaptive by default; ``preset="paper"`` gives the paper's balance 0.01 and fixed PSF."""

    balance: float | None = Field(
        default=None, gt=0, le=1e6, description="lambda; None = discrepancy (adaptive) or 0.01"
    )


def discrepancy_balance(
    spectrum: np.ndarray,
    h: np.ndarray,
    d2: np.ndarray,
    noise_var: float,
    weights: np.ndarray,
    tau: float = 1.0,
    band: float = BAND_OTF,
) -> float:
    """``lambda`` whose in-band residual equals the noise: the discrepancy principle.

    Only frequencies where ``|H| > band`` count: beyond the OTF cut-off the data is noise that
    no ``lambda`` can fit, so the whole-image residual would already match the noise level at
    ``lambda -> 0``. The residual mean square there,
    ``sum |Y lambda D^2 / (H^2 + lambda D^2)|^2 / (n n_band)``, grows with ``lambda``; the
    root of ``residual = tau * noise_var`` is found by bisection on ``log lambda``.
    """
    # One real spectrum-sized scratch array serves |H|^2, then |Y|^2 w, then the weights.
    buf = _abs2(h, np.empty(spectrum.shape))
    sel = buf > band**2
    h2, d2s = buf[sel], d2[sel]
    y2 = np.multiply(_abs2(spectrum, buf), weights, out=buf)[sel]
    buf[...] = weights  # the values of ``weights * ones``, so the sums are exactly those
    n_total = float(np.sum(buf))
    n_band = float(np.sum(buf[sel]))
    del buf, sel
    target = tau * noise_var
    # In-band scratch arrays, reused by every evaluation of the bisection.
    num, den = np.empty_like(d2s), np.empty_like(d2s)

    def residual(log_lam: float) -> float:
        lam = np.exp(log_lam)
        np.multiply(lam, d2s, out=num)
        np.add(h2, num, out=den)
        ratio = np.divide(num, den, out=num)  # lam D^2 / (H^2 + lam D^2)
        terms = np.multiply(y2, ratio, out=den)
        np.multiply(terms, ratio, out=terms)  # y2 * ratio * ratio
        return float(np.sum(terms)) / (n_total * n_band)

    lo, hi = np.log(1e-9), np.log(1e6)
    if residual(lo) >= target:
        return float(np.exp(lo))
    if residual(hi) <= target:
        return float(np.exp(hi))
    while hi - lo > 1e-3:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if residual(mid) > target else (mid, hi)
    return float(np.exp(0.5 * (lo + hi)))


@register("wiener", WienerConfig)
class WienerRestorer(DeconvRestorer):
    """Wiener-Hunt deconvolution, Laplacian prior; what it used is kept in ``last_params``."""

    config: WienerConfig
    strength_field = "balance"
    paper_strength = PAPER_BALANCE

    @staticmethod
    def paper_deconvolve(ext01: np.ndarray, kernel: np.ndarray, strength: float) -> np.ndarray:
        # imported here: skimage.restoration loads scipy.signal, scipy.stats and more, which
        # the default (adaptive) preset never needs: 0.9 of 4 s CPU of a ``sem restore``
        # (benchmarks/bench_classical_startup.py)
        from skimage.restoration import wiener

        return wiener(ext01, kernel, strength, clip=False)

    def adaptive(
        self, ext: np.ndarray, kernel: np.ndarray, choice: PSFChoice, pad: int
    ) -> tuple[np.ndarray, dict[str, Any]]:
        cfg = self.config
        shape = ext.shape
        # The real |D|^2 first: its complex transform is freed before H and Y exist.
        d2 = np.abs(transfer(_LAPLACIAN, shape))
        np.square(d2, out=d2)
        h = transfer(kernel, shape)
        spec = sfft.rfft2(ext)
        balance = cfg.balance
        if balance is None:
            wts = np.full(spec.shape[1], 2.0)
            wts[0] = 1.0
            if shape[1] % 2 == 0:
                wts[-1] = 1.0
            balance = discrepancy_balance(
                spec, h, d2, float(choice.noise_var or 0.0), wts[None, :], cfg.tau
            )
        # conj(H) Y / (|H|^2 + lambda |D|^2), each step in place in an array no longer needed
        den = np.abs(h)
        np.square(den, out=den)
        np.add(den, np.multiply(balance, d2, out=d2), out=den)
        del d2
        np.multiply(np.conj(h, out=h), spec, out=spec)
        del h
        np.divide(spec, den, out=spec)
        del den
        return irfft2_inplace(spec, shape), {"balance": balance}


def _abs2(z: np.ndarray, out: np.ndarray, rows: int = 256) -> np.ndarray:
    """``z.real**2 + z.imag**2`` into ``out``, a block of rows at a time: the same values
    without two full-size temporaries."""
    for i in range(0, z.shape[0], rows):
        block = slice(i, i + rows)
        np.add(z.real[block] ** 2, z.imag[block] ** 2, out=out[block])
    return out


@register("wiener-true-psf", WienerConfig, psf_from_case=True)
class WienerTruePSF(WienerRestorer):
    """Wiener given each input's true PSF by the evaluation (the reference for the blind
    estimate; the noise level is still estimated)."""
