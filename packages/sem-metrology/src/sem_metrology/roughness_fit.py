"""Palasantzas roughness model with a white-noise floor, and Mack's unbiased roughness.

Model (one-sided PSD, same normalisation as :mod:`sem_metrology.psd`)::

    PSD(f) = PSD(0) / [1 + (2π f ξ)²]^(H + 1/2) + N

with correlation length ``ξ`` (nm), roughness (Hurst) exponent ``H`` and white-noise floor ``N``
(nm³). Integrating the roughness term over ``0 ≤ f < ∞`` gives its variance::

    σ² = PSD(0) Γ(H) / (4 √π ξ Γ(H + 1/2))           (H = 1/2: PSD(0) = 4 σ² ξ, one-sided)

Image noise adds an uncorrelated (white) component to every edge position; it is flat in
frequency, so Mack's unbiased variance is the measured PSD integral minus the floor's share::

    σ²_unbiased = Σ_k (P_k − N) df     (the floor integrated over the measured band)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import gammaln

__all__ = [
    "PalasantzasFit",
    "fit_palasantzas",
    "high_frequency_floor",
    "noise_variance",
    "palasantzas_psd",
    "palasantzas_variance",
    "unbiased_variance",
]


def palasantzas_psd(
    frequency_per_nm: np.ndarray,
    psd0_nm3: float,
    correlation_length_nm: float,
    roughness_exponent: float,
    noise_floor_nm3: float = 0.0,
) -> np.ndarray:
    """Evaluate ``PSD(0) / [1 + (2π f ξ)²]^(H+1/2) + N`` (nm³) at ``frequency_per_nm``."""
    f = np.asarray(frequency_per_nm, dtype=np.float64)
    arg = 1.0 + (2.0 * np.pi * f * correlation_length_nm) ** 2
    return psd0_nm3 * arg ** (-(roughness_exponent + 0.5)) + noise_floor_nm3


def palasantzas_variance(
    psd0_nm3: float, correlation_length_nm: float, roughness_exponent: float
) -> float:
    """Variance (nm²) of the Palasantzas roughness term integrated over ``0 ≤ f < ∞`` (one-sided).

    ``σ² = PSD(0) Γ(H) / (4 √π ξ Γ(H + 1/2))``.
    """
    h = roughness_exponent
    if not (h > 0 and correlation_length_nm > 0):
        raise ValueError(
            f"roughness_exponent and correlation_length_nm must be > 0, got {h}, "
            f"{correlation_length_nm}"
        )
    log_ratio = gammaln(h) - gammaln(h + 0.5)
    return float(
        psd0_nm3 * math.exp(log_ratio) / (4.0 * math.sqrt(math.pi) * correlation_length_nm)
    )


class PalasantzasFit(BaseModel):
    """Result of fitting the Palasantzas model (with white-noise floor) to a one-sided PSD."""

    # protected_namespaces=(): the field model_variance_nm2 is not pydantic's "model_" API
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    psd0_nm3: float = Field(description="PSD(0) of the roughness term, nm^3")
    correlation_length_nm: float = Field(description="correlation length xi, nm")
    roughness_exponent: float = Field(description="roughness (Hurst) exponent H")
    noise_floor_nm3: float = Field(description="white-noise floor N, nm^3 (0 if not fitted)")
    model_variance_nm2: float = Field(description="variance of the fitted roughness term, nm^2")
    rms_log_residual: float = Field(description="RMS of ln(PSD) - ln(model) over fitted bins")
    success: bool
    message: str = ""
    at_bounds: list[str] = Field(
        default_factory=list, description="fitted parameters sitting at a bound of the search"
    )

    @property
    def trusted(self) -> bool:
        """Converged with every parameter inside its bounds."""
        return self.success and not self.at_bounds

    def evaluate(self, frequency_per_nm: np.ndarray, *, with_noise: bool = True) -> np.ndarray:
        """The fitted model at ``frequency_per_nm`` (nm³), with or without the noise floor."""
        return palasantzas_psd(
            frequency_per_nm,
            self.psd0_nm3,
            self.correlation_length_nm,
            self.roughness_exponent,
            self.noise_floor_nm3 if with_noise else 0.0,
        )


def _initial_guess(f: np.ndarray, p: np.ndarray, fit_noise: bool) -> tuple[float, float, float]:
    n_hi = max(3, f.size // 4)
    noise0 = float(np.median(p[-n_hi:])) if fit_noise else 0.0
    psd0 = float(np.mean(p[: max(1, min(3, f.size // 8))]))
    excess = p - noise0
    half = 0.5 * max(psd0 - noise0, 1e-30)
    below = np.nonzero(excess < half)[0]
    f_half = float(f[below[0]]) if below.size else float(f[-1])
    # For H = 1/2: [1 + (2π f ξ)²] = 2 at the half-power frequency.
    xi0 = 1.0 / (2.0 * np.pi * max(f_half, f[0]))
    return max(psd0, 1e-30), xi0, max(noise0, 1e-30)


def fit_palasantzas(
    frequency_per_nm: np.ndarray,
    psd_nm3: np.ndarray,
    *,
    fit_noise_floor: bool = True,
    roughness_exponent_bounds: tuple[float, float] = (0.05, 2.0),
) -> PalasantzasFit:
    """Least-squares fit of the Palasantzas model to a PSD, in log space.

    The residual ``ln P_k − ln model(f_k)`` is minimised over all bins with ``f > 0`` (log space
    gives every decade its weight and matches the multiplicative scatter of periodogram bins).
    Parameters are fitted as ``ln PSD(0)``, ``ln ξ``, ``H``, ``ln N``.

    Parameters
    ----------
    frequency_per_nm, psd_nm3 : one-sided PSD as returned by :func:`sem_metrology.psd.profile_psd`.
    fit_noise_floor : fit the white-noise floor ``N`` (else ``N = 0``).
    roughness_exponent_bounds : allowed range of ``H``.

    Returns
    -------
    PalasantzasFit (``success`` False, with the reason, when the data cannot be fitted).
    """
    f = np.asarray(frequency_per_nm, dtype=np.float64)
    p = np.asarray(psd_nm3, dtype=np.float64)
    if f.shape != p.shape:
        raise ValueError(f"frequency_per_nm {f.shape} and psd_nm3 {p.shape} differ in shape")
    keep = (f > 0) & np.isfinite(p) & (p > 0)
    f, p = f[keep], p[keep]
    nan_fit: dict[str, Any] = {
        "psd0_nm3": 0.0,
        "correlation_length_nm": 0.0,
        "roughness_exponent": 0.0,
        "noise_floor_nm3": 0.0,
        "model_variance_nm2": 0.0,
        "rms_log_residual": 0.0,
        "success": False,
    }
    n_params = 4 if fit_noise_floor else 3
    if f.size < n_params + 2:
        return PalasantzasFit(**nan_fit, message=f"only {f.size} positive PSD bins to fit")
    psd0, xi0, noise0 = _initial_guess(f, p, fit_noise_floor)
    h_lo, h_hi = roughness_exponent_bounds
    df = float(f[1] - f[0]) if f.size > 1 else float(f[0])
    xi_lo, xi_hi = 0.05 / f[-1], 50.0 / df
    p_max = float(p.max())
    x0 = [math.log(psd0), math.log(np.clip(xi0, xi_lo * 1.01, xi_hi * 0.99)), 0.5]
    lo = [math.log(p_max * 1e-6), math.log(xi_lo), h_lo]
    hi = [math.log(p_max * 1e6), math.log(xi_hi), h_hi]
    if fit_noise_floor:
        n_lo = p_max * 1e-12
        x0.append(math.log(np.clip(noise0, n_lo * 10, p_max)))
        lo.append(math.log(n_lo))
        hi.append(math.log(p_max * 10))
    x0 = list(np.clip(x0, np.array(lo) + 1e-9, np.array(hi) - 1e-9))
    log_p = np.log(p)

    def model(x: np.ndarray) -> np.ndarray:
        noise = math.exp(x[3]) if fit_noise_floor else 0.0
        return palasantzas_psd(f, math.exp(x[0]), math.exp(x[1]), x[2], noise)

    def residual(x: np.ndarray) -> np.ndarray:
        return np.log(model(x)) - log_p

    from scipy.optimize import least_squares  # on first fit: a slow import

    sol = least_squares(residual, x0, bounds=(lo, hi), method="trf", x_scale="jac")
    x = sol.x
    names = ["psd0_nm3", "correlation_length_nm", "roughness_exponent", "noise_floor_nm3"]
    at_bounds = [
        names[i]
        for i in range(len(x))
        if min(x[i] - lo[i], hi[i] - x[i]) <= 1e-3 * max(1.0, abs(hi[i] - lo[i]))
    ]
    psd0_fit, xi_fit, h_fit = math.exp(x[0]), math.exp(x[1]), float(x[2])
    noise_fit = math.exp(x[3]) if fit_noise_floor else 0.0
    return PalasantzasFit(
        psd0_nm3=psd0_fit,
        correlation_length_nm=xi_fit,
        roughness_exponent=h_fit,
        noise_floor_nm3=noise_fit,
        model_variance_nm2=palasantzas_variance(psd0_fit, xi_fit, h_fit),
        rms_log_residual=float(np.sqrt(np.mean(sol.fun**2))),
        success=bool(sol.success),
        message=str(sol.message),
        at_bounds=at_bounds,
    )


def noise_variance(frequency_per_nm: np.ndarray, noise_floor_nm3: float, n_samples: int) -> float:
    """Variance (nm²) a white floor ``N`` contributes to a one-sided PSD of ``n_samples`` points.

    White noise gives ``N`` in the interior bins, ``N/2`` at Nyquist (even ``n``), and nothing
    at ``f = 0`` once the mean is removed, so the share is ``N df (n_interior + ½[n even])``.
    """
    f = np.asarray(frequency_per_nm, dtype=np.float64)
    df = float(f[1] - f[0])
    n_interior = (n_samples - 1) // 2
    share = n_interior + (0.5 if n_samples % 2 == 0 else 0.0)
    return float(noise_floor_nm3 * df * share)


def high_frequency_floor(psd_nm3: np.ndarray, n_bins: int = 50) -> float:
    """White-noise floor read off the PSD: mean of the ``n_bins`` highest-frequency bins below
    Nyquist (SMILE's floor estimate), at most a quarter of the spectrum, at least 3 bins."""
    p = np.asarray(psd_nm3, dtype=np.float64)
    k = int(min(n_bins, max(3, (p.size - 1) // 4)))
    return float(np.mean(p[-(k + 1) : -1])) if p.size > k + 1 else float(np.mean(p[1:]))


def unbiased_variance(
    frequency_per_nm: np.ndarray, psd_nm3: np.ndarray, noise_floor_nm3: float, n_samples: int
) -> float:
    """Mack's unbiased variance: PSD integral minus the noise floor's share, clipped at 0 (nm²)."""
    f = np.asarray(frequency_per_nm, dtype=np.float64)
    df = float(f[1] - f[0])
    total = float(np.sum(np.asarray(psd_nm3, dtype=np.float64)) * df)
    return max(0.0, total - noise_variance(f, noise_floor_nm3, n_samples))
