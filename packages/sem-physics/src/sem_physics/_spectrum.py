"""Power-spectrum helpers of the blind estimator: boundary-free FFT, polar bins, the Airy OTF.

* Periodic + smooth decomposition (Moisan 2011): ``u = p + s`` with ``s`` smooth and ``p``
  periodic, so the transform of ``p`` has no cross of leakage from the frame's edges. ``s`` is
  found from the jumps across opposite borders by one division in the Fourier domain.
* Polar bins: the half plane of a real FFT is cut into angular sectors and log-spaced radial
  rings; each bin keeps its count, mean periodogram and mean frequency.
* OTF table: the transform of the simulator's own sampled, truncated, unit-sum kernel
  (``sem_physics.airy_psf``) as a function of the normalised frequency
  ``rho = |diag(Rx, Ry) R(theta) f|``; zero (up to ripple) beyond ``rho = 1``
  (arXiv 2604.05960, Sec. 3.1: the Airy^2 OTF is the autocorrelation of a disc).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft as sfft

from .psf import PSFParams, airy_psf

__all__ = ["PolarBins", "otf_table", "periodic_spectrum", "polar_bins", "rfft_weights"]


def periodic_spectrum(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real FFT of the periodic component of ``u`` and of its smooth component.

    Returns ``(P, S)`` on the ``rfft2`` grid with ``u = irfft2(P) + irfft2(S)``.
    """
    h, w = u.shape
    v = np.zeros_like(u)
    v[0, :] = u[-1, :] - u[0, :]
    v[-1, :] = -v[0, :]
    v[:, 0] += u[:, -1] - u[:, 0]
    v[:, -1] += u[:, 0] - u[:, -1]
    smooth = sfft.rfft2(v, workers=-1)
    del v  # each full-frame array is freed before the next is made (64 Mpx: 0.5 GB each)
    cy = np.cos(2 * np.pi * np.arange(h) / h)[:, None]
    cx = np.cos(2 * np.pi * np.arange(w // 2 + 1) / w)[None, :]
    denom = 2 * cy + 2 * cx - 4
    denom[0, 0] = 1.0
    smooth /= denom  # in place
    del denom
    smooth[0, 0] = 0.0
    periodic = sfft.rfft2(u, workers=-1)
    periodic -= smooth
    return periodic, smooth


def rfft_weights(w: int) -> np.ndarray:
    """How many full-plane frequencies each ``rfft`` column stands for (1 or 2)."""
    n = w // 2 + 1
    wt = np.full(n, 2.0)
    wt[0] = 1.0
    if w % 2 == 0:
        wt[-1] = 1.0
    return wt


@dataclass(frozen=True)
class PolarBins:
    """Sector x ring bins of an ``rfft2`` grid (``index`` -1 = unused frequency)."""

    index: np.ndarray  # (H, W//2+1) int, bin of each frequency
    n_sectors: int
    n_rings: int
    count: np.ndarray  # (n_bins,)
    fx: np.ndarray  # mean column frequency of each bin, cycles/px
    fy: np.ndarray  # mean row frequency of each bin, cycles/px
    sector: np.ndarray  # sector of each bin

    def mean(self, values: np.ndarray) -> np.ndarray:
        """Mean of ``values`` (on the rfft grid) in every bin."""
        # The unused frequencies go to one extra bin, dropped: no selected copies of the grid.
        n = self.count.size
        flat = np.where(self.index >= 0, self.index, n).ravel()
        tot = np.bincount(flat, weights=values.ravel(), minlength=n + 1)[:n]
        return tot / np.maximum(self.count, 1)


def ring_edges(h: int, w: int, ring_ratio: float, f_low_cycles: float) -> np.ndarray:
    """Ring edges from ``f_low_cycles / min(h, w)`` to the corner: log-spaced by ``ring_ratio``
    but never narrower than one frequency step ``1 / min(h, w)``."""
    step = 1.0 / min(h, w)
    edges = [f_low_cycles * step]
    while edges[-1] < np.sqrt(0.5):
        edges.append(edges[-1] + max(edges[-1] * (ring_ratio - 1.0), step))
    return np.array(edges)


@lru_cache(maxsize=8)
def polar_bins(
    h: int, w: int, n_sectors: int = 24, ring_ratio: float = 1.05, f_low_cycles: float = 1.5
) -> PolarBins:
    """Bins of the ``rfft2`` grid of an (h, w) image (see :func:`ring_edges`).

    Built with one grid-sized array alive at a time besides ``index`` where it can (a 64-Mpx
    frame's grid is 0.27 GB per array)."""
    shape = (h, w // 2 + 1)
    fy = sfft.fftfreq(h)[:, None]
    fx = sfft.rfftfreq(w)[None, :]
    phi = np.arctan2(fy, fx)  # (-pi/2, pi/2] on the half plane
    phi += np.pi / 2
    phi /= np.pi
    phi *= n_sectors
    index = phi.astype(int)  # the sector, then the bin
    del phi
    np.minimum(index, n_sectors - 1, out=index)
    edges = ring_edges(h, w, ring_ratio, f_low_cycles)
    n_rings = edges.size - 1
    ring = np.searchsorted(edges, np.hypot(fx, fy), side="right")
    ring -= 1
    outside = (ring < 0) | (ring >= n_rings)
    np.clip(ring, 0, n_rings - 1, out=ring)
    index *= n_rings
    index += ring
    del ring
    index[outside] = -1
    del outside
    n_bins = n_sectors * n_rings
    flat = np.where(index >= 0, index, n_bins).ravel()  # unused frequencies: an extra bin
    count = np.bincount(flat, minlength=n_bins + 1)[:n_bins].astype(np.float64)
    safe = np.maximum(count, 1)
    mfx = np.bincount(flat, np.broadcast_to(fx, shape).ravel(), n_bins + 1)[:n_bins] / safe
    mfy = np.bincount(flat, np.broadcast_to(fy, shape).ravel(), n_bins + 1)[:n_bins] / safe
    del flat
    index.flags.writeable = False
    return PolarBins(
        index, n_sectors, n_rings, count, mfx, mfy, np.repeat(np.arange(n_sectors), n_rings)
    )


@lru_cache(maxsize=8)
def otf_table(beta: float, step: float = 0.004) -> tuple[np.ndarray, np.ndarray]:
    """``(rho, otf)``: ring-averaged transform of the simulator's kernel on a uniform ``rho`` grid
    (step ``step``) from 0 to 1.6.

    Computed once per ``beta`` from ``airy_psf`` at ``R = 24`` px on a 1024-point grid (the
    kernel truncation ``k = ceil(6R)`` scales with ``R``, so the table holds for every radius).
    """
    r_px, n = 24.0, 1024
    k = airy_psf(PSFParams(rx_px=r_px, ry_px=r_px, beta=beta))
    s = k.shape[0]
    buf = np.zeros((n, n))
    buf[:s, :s] = k
    buf = np.roll(buf, (-(s // 2), -(s // 2)), axis=(0, 1))
    otf = sfft.rfft2(buf).real
    rho = np.hypot(sfft.fftfreq(n)[:, None], sfft.rfftfreq(n)[None, :]) * r_px
    edges = np.arange(0.0, 1.6 + step, step)
    idx = np.digitize(rho.ravel(), edges) - 1
    sel = (idx >= 0) & (idx < edges.size - 1)
    cnt = np.bincount(idx[sel], minlength=edges.size - 1)
    tot = np.bincount(idx[sel], weights=otf.ravel()[sel], minlength=edges.size - 1)
    centres = 0.5 * (edges[:-1] + edges[1:])
    good = cnt > 0
    grid = np.arange(edges.size) * step  # uniform: the fit indexes it directly
    table = np.interp(
        grid, np.concatenate([[0.0], centres[good]]), np.r_[1.0, tot[good] / cnt[good]]
    )
    return grid, table
