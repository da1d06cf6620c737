"""Power spectral density of edge and width profiles, one-sided and Parseval-normalised.

Convention (used everywhere in this package)
--------------------------------------------
A profile ``x_n`` (n = 0..N-1, sampled every ``Δ`` nm along the line, its mean or best-fit line
removed) has the discrete Fourier transform ``X_k = Σ_n x_n exp(-2πi kn/N)``. Its **one-sided**
PSD on the frequencies ``f_k = k / (N Δ)``, ``k = 0..⌊N/2⌋`` (nm⁻¹) is

    P_k = c_k · Δ / N · |X_k|²,   c_k = 1 for k = 0 and for k = N/2 (N even), else 2,

in nm² per nm⁻¹ = nm³. With ``df = 1 / (N Δ)`` Parseval's theorem gives exactly

    Σ_k P_k · df = (1/N) Σ_n x_n² = σ²,

i.e. the PSD integrated over the returned frequency axis (rectangle rule, no extra factors) is
the profile's variance. Averaging over profiles gives the pooled variance. A two-sided PSD
(Mack's convention, defined on ``-f_Nyq..f_Nyq``) is half of this one at ``f > 0``.

SMILE3's "biased" sigma (``Σ|X_k|²/len(rfft)²``) misses the factor 2 of the one-sided
spectrum (off by √2), and SMILE2's unbiased sum uses half the spectrum; neither quirk is
reproduced here.
"""

from __future__ import annotations

import numpy as np

from .errors import MetrologyInputError

__all__ = ["detrend_profiles", "profile_psd", "psd_variance"]


def _finite_profiles(profiles: np.ndarray) -> np.ndarray:
    """``profiles`` as a 2-D float64 array; NaN or inf refused, naming the first bad sample."""
    p = np.atleast_2d(np.asarray(profiles, dtype=np.float64))
    bad = ~np.isfinite(p)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise MetrologyInputError(
            f"profiles contain {int(bad.sum())} NaN or infinite value(s), the first in profile "
            f"{row} at sample {col} (of {p.shape[0]} profiles x {p.shape[1]} samples); fill or "
            "drop them before computing a PSD"
        )
    return p


def detrend_profiles(profiles: np.ndarray, mode: str = "mean") -> np.ndarray:
    """Remove each row's mean (``mode='mean'``) or least-squares line (``mode='linear'``).

    Parameters
    ----------
    profiles : (M, N) array, one profile per row.
    mode : ``'mean'`` or ``'linear'``.

    Returns
    -------
    (M, N) float64 residuals.
    """
    p = _finite_profiles(profiles)
    if mode == "mean":
        return p - p.mean(axis=1, keepdims=True)
    if mode == "linear":
        n = p.shape[1]
        t = np.arange(n, dtype=np.float64) - 0.5 * (n - 1)
        denom = float(np.sum(t * t)) or 1.0
        slope = np.einsum("mn,n->m", p - p.mean(axis=1, keepdims=True), t) / denom
        return p - p.mean(axis=1, keepdims=True) - slope[:, None] * t[None, :]
    raise ValueError(f"mode must be 'mean' or 'linear', got {mode!r}")


def profile_psd(
    profiles: np.ndarray, spacing_nm: float, *, detrend: str | None = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Average one-sided PSD of profiles (see the module docstring for the normalisation).

    Parameters
    ----------
    profiles : (M, N) or (N,) profiles in nm, sampled along the line every ``spacing_nm``.
    spacing_nm : sample spacing along the line (nm), > 0.
    detrend : ``'mean'``, ``'linear'`` or ``None`` (profiles already detrended).

    Returns
    -------
    frequency_per_nm : (N//2 + 1,) frequencies ``k / (N Δ)`` in nm⁻¹, starting at 0.
    psd_nm3 : (N//2 + 1,) PSD averaged over profiles, nm³; ``Σ psd · df`` = mean variance.
    """
    if not (np.isfinite(spacing_nm) and spacing_nm > 0):
        raise ValueError(f"spacing_nm must be a finite number > 0, got {spacing_nm}")
    p = _finite_profiles(profiles)
    n = p.shape[1]
    if n < 2:
        raise ValueError(f"profiles need at least 2 samples along the line, got {n}")
    if detrend is not None:
        p = detrend_profiles(p, detrend)
    spectrum = np.abs(np.fft.rfft(p, axis=1)) ** 2
    weight = np.full(spectrum.shape[1], 2.0)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    psd = weight * spectrum.mean(axis=0) * spacing_nm / n
    freq = np.fft.rfftfreq(n, d=spacing_nm)
    return freq, psd


def psd_variance(frequency_per_nm: np.ndarray, psd_nm3: np.ndarray) -> float:
    """``Σ_k P_k df`` with ``df`` the (uniform) bin width: the variance the PSD represents (nm²)."""
    f = np.asarray(frequency_per_nm, dtype=np.float64)
    if f.size < 2:
        raise ValueError("frequency_per_nm needs at least 2 bins")
    df = float(f[1] - f[0])
    return float(np.sum(np.asarray(psd_nm3, dtype=np.float64)) * df)
