"""Metrics of measured line edges, per convention: CD, LWR, LER, PSDs, unbiased values,
standard errors (bootstrap over lines) and the pitch drift across the field."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .psd import detrend_profiles, profile_psd, psd_variance
from .roughness_fit import (
    PalasantzasFit,
    fit_palasantzas,
    high_frequency_floor,
    noise_variance,
)

_HF_METHOD = "high-frequency floor (mean of the highest-frequency PSD bins; SMILE's estimate)"


def _unbiased(
    freq: np.ndarray,
    psd: np.ndarray,
    n_rows: int,
    convention: str,
    fit_noise_floor: bool,
    what: str,
    flags: list[str],
    warnings: list[str],
) -> tuple[PalasantzasFit | None, float, str]:
    """The Palasantzas fit (flagged when untrusted) and the floor removed for unbiased values."""
    fit = fit_palasantzas(freq, psd, fit_noise_floor=fit_noise_floor)
    if not fit.success:
        flags.append(f"{what} fit failed: {fit.message}")
    elif fit.at_bounds:
        flags.append(f"{what} fit at bound: {', '.join(fit.at_bounds)}")
    if convention == "truth" and fit.trusted and fit_noise_floor:
        return fit, fit.noise_floor_nm3, "Palasantzas fit floor"
    if convention == "truth":
        warnings.append(
            f"{what} PSD fit not trusted ({flags[-1] if flags else 'no floor'}): "
            "unbiased value uses the high-frequency floor"
        )
    return (fit if fit.success else None), high_frequency_floor(psd), _HF_METHOD


#: Smoothed edges (restored, or blurred without noise): the Palasantzas fit's H at least this.
#: Rough edges: 0.91 (LER) on the focused real image, <= 1.07 on noise-free Palasantzas edges of
#: H <= 1; Richardson-Lucy and Wiener outputs of blurred images (truth): a fit >= 1.37.
SMOOTH_MIN_EXPONENT = 1.25
#: ... and the PSD still falling over its two highest octaves (log-log slope at most this): image
#: noise leaves a white floor there (slope ≈ 0). Focused and defocused images with H >= 1.25
#: (generated lines' Gaussian-correlated edges fit H = 2): slope >= -0.61; restored outputs
#: with H >= 1.25: -1.07 .. -3.45.
SMOOTH_MAX_HF_SLOPE = -1.0


def high_frequency_slope(freq: np.ndarray, psd: np.ndarray) -> float | None:
    """Log-log slope of a PSD over its two highest octaves (``f_N/4 <= f < f_N``): about 0 where
    a white noise floor dominates, ``-(2H+1)`` on a noise-free Palasantzas edge."""
    f, p = np.asarray(freq, dtype=np.float64), np.asarray(psd, dtype=np.float64)
    if f.size < 2:
        return None
    sel = (f >= 0.25 * f[-1]) & (f < f[-1]) & (p > 0)
    if np.count_nonzero(sel) < 4:
        return None
    return float(np.polyfit(np.log(f[sel]), np.log(p[sel]), 1)[0])


def smoothed_edge_flag(
    what: str, fit: PalasantzasFit | None, freq: np.ndarray, psd: np.ndarray
) -> str | None:
    """A fit flag when the PSD is that of smoothed edges: steeper than a rough edge's (fitted H
    >= 1.25) and still falling at the highest frequencies, with no noise floor. Rough edges in
    a noisy image, focused or defocused, never show both."""
    if fit is None or not fit.success:
        return None
    slope = high_frequency_slope(freq, psd)
    h = fit.roughness_exponent
    if slope is None or h < SMOOTH_MIN_EXPONENT or slope > SMOOTH_MAX_HF_SLOPE:
        return None
    return (
        f"{what} PSD of smoothed edges: H = {h:.2f} (>= {SMOOTH_MIN_EXPONENT:g}) and log-log "
        f"slope {slope:.2f} over the two highest octaves (<= {SMOOTH_MAX_HF_SLOPE:g}: no noise "
        "floor)"
    )


_SMOOTHING_WARNING = (
    "smoothed edges (blurred or restored image): the edge PSD falls steeply up to the highest "
    "frequencies, with no noise floor (fit_flags); LWR/LER and their unbiased values can "
    "underestimate the roughness of the imaged edges"
)


def _pitch_drift(centres_nm: np.ndarray) -> float | None:
    """Slope of the local pitch against position across the field, nm per µm."""
    if centres_nm.size < 4:
        return None
    d = np.diff(centres_nm)
    mid = 0.5 * (centres_nm[1:] + centres_nm[:-1])
    return float(np.polyfit(mid, d, 1)[0] * 1000.0)


def lwr_from_psd(freq: np.ndarray, psd: np.ndarray) -> float | None:
    """``3 sqrt(Σ PSD_LWR Δf)`` (nm): the LWR the width PSD holds, its noise included."""
    if freq.size < 2:
        return None
    var = psd_variance(freq, psd)
    return 3.0 * math.sqrt(var) if var >= 0 and math.isfinite(var) else None


def line_metrics(
    lead: np.ndarray,
    trail: np.ndarray,
    pixel_size_nm: float,
    slope_px_per_row: float,
    convention: str,
    *,
    fit_noise_floor: bool,
    bootstrap_samples: int,
    warnings: list[str],
) -> dict[str, Any]:
    """Every scalar and PSD of :class:`~sem_metrology.LineMeasurement` from (L, R) edges (px)."""
    n_lines, n_rows = lead.shape
    cos_t = 1.0 / math.sqrt(1.0 + slope_px_per_row**2)
    scale, spacing = pixel_size_nm * cos_t, pixel_size_nm / cos_t
    widths = (trail - lead) * scale
    smile = convention == "smile"
    line_cd = np.median(widths, axis=1) if smile else widths.mean(axis=1)
    w_res = detrend_profiles(widths, "mean")
    detrend = "mean" if smile else "linear"
    lead_res = detrend_profiles(lead * scale, detrend)
    trail_res = detrend_profiles(trail * scale, detrend)
    edges_res = np.vstack([lead_res, trail_res])
    var_w = np.mean(w_res**2, axis=1)  # per line
    var_l, var_t = np.mean(lead_res**2, axis=1), np.mean(trail_res**2, axis=1)

    def sigma3(var: np.ndarray) -> float:
        # smile: mean of per-profile 3σ; truth: 3σ of the pooled variance.
        return float(3.0 * (np.mean(np.sqrt(var)) if smile else math.sqrt(np.mean(var))))

    freq, psd_lwr = profile_psd(w_res, spacing, detrend=None)
    _, psd_ler = profile_psd(edges_res, spacing, detrend=None)
    flags: list[str] = []
    lwr_fit, floor_w, method = _unbiased(
        freq, psd_lwr, n_rows, convention, fit_noise_floor, "LWR", flags, warnings
    )
    ler_fit, floor_e, method_e = _unbiased(
        freq, psd_ler, n_rows, convention, fit_noise_floor, "LER", flags, warnings
    )
    smooth = [
        flag
        for flag in (
            smoothed_edge_flag("LWR", lwr_fit, freq, psd_lwr),
            smoothed_edge_flag("LER", ler_fit, freq, psd_ler),
        )
        if flag
    ]
    if smooth:
        flags.extend(smooth)
        warnings.append(_SMOOTHING_WARNING)
    share_w = noise_variance(freq, floor_w, n_rows)
    share_e = noise_variance(freq, floor_e, n_rows)

    def unbiased(var: np.ndarray, share: float) -> float:
        return float(3.0 * math.sqrt(max(0.0, float(np.mean(var)) - share)))

    centres = 0.5 * (lead.mean(axis=1) + trail.mean(axis=1)) * scale
    pitch: float | None
    if smile and n_lines > 1:
        pitch = float(
            np.median(
                np.r_[np.median(np.diff(lead, axis=0), 1), np.median(np.diff(trail, axis=0), 1)]
            )
            * scale
        )
    else:
        pitch = float(np.median(np.diff(centres))) if n_lines > 1 else None
    var_e = np.r_[var_l, var_t]
    out: dict[str, Any] = {
        "n_lines": n_lines,
        "cd_nm": float(line_cd.mean()),
        "cd_std_nm": float(line_cd.std()) if n_lines > 1 else None,  # no spread of one line
        "pitch_nm": pitch,
        "pitch_drift_nm_per_um": _pitch_drift(np.sort(centres)),
        "lwr_nm": sigma3(var_w),
        "ler_nm": sigma3(var_e),
        "ler_leading_nm": sigma3(var_l),
        "ler_trailing_nm": sigma3(var_t),
        "lwr_unbiased_nm": unbiased(var_w, share_w),
        "lwr_psd_nm": lwr_from_psd(freq, psd_lwr),
        "ler_unbiased_nm": unbiased(var_e, share_e),
        "unbiased_method": method if method == method_e else f"LWR: {method}; LER: {method_e}",
        "fit_flags": flags,
        "noise_floor_nm3": floor_e,
        "correlation_length_nm": ler_fit.correlation_length_nm if ler_fit else None,
        "roughness_exponent": ler_fit.roughness_exponent if ler_fit else None,
        "lwr_fit": lwr_fit,
        "ler_fit": ler_fit,
        "psd_frequency_per_nm": freq.tolist(),
        "psd_lwr_nm3": psd_lwr.tolist(),
        "psd_ler_nm3": psd_ler.tolist(),
        "psd_lwr_fit_nm3": lwr_fit.evaluate(freq).tolist() if lwr_fit else [],
        "psd_ler_fit_nm3": ler_fit.evaluate(freq).tolist() if ler_fit else [],
        "line_cd_nm": line_cd.tolist(),
        "line_lwr_nm": (3.0 * np.sqrt(var_w)).tolist(),
    }
    if bootstrap_samples and n_lines > 1:
        rng = np.random.default_rng(0)
        idx = rng.integers(0, n_lines, size=(bootstrap_samples, n_lines))
        ve = np.stack([var_l, var_t], axis=1)[idx].reshape(bootstrap_samples, -1)
        if smile:
            lwr_b = 3.0 * np.sqrt(var_w[idx]).mean(axis=1)
            ler_b = 3.0 * np.sqrt(ve).mean(axis=1)
        else:
            lwr_b = 3.0 * np.sqrt(var_w[idx].mean(axis=1))
            ler_b = 3.0 * np.sqrt(ve.mean(axis=1))
        out.update(
            cd_se_nm=float(line_cd[idx].mean(axis=1).std()),
            cd_std_se_nm=float(line_cd[idx].std(axis=1).std()),
            lwr_se_nm=float(lwr_b.std()),
            ler_se_nm=float(ler_b.std()),
            lwr_unbiased_se_nm=float(
                (3.0 * np.sqrt(np.clip(var_w[idx].mean(axis=1) - share_w, 0, None))).std()
            ),
            ler_unbiased_se_nm=float(
                (3.0 * np.sqrt(np.clip(ve.mean(axis=1) - share_e, 0, None))).std()
            ),
        )
    return out


#: Fewest periods across the profile for a period to count: one to three lines give none, and
#: slow variations of the background (3.3-3.6 periods across lines blurred by 30 px, stronger
#: there than the lines' own period) are left out.
MIN_PERIODS = 4.0
#: Share of the profile's (Hann-windowed) varying power the dominant peak's main lobe must hold
#: for the profile to count as periodic: the real image 0.98; one or two lines (their side
#: lobes) and pure noise give no period.
MIN_PERIODIC_SHARE = 0.3
#: A sub-harmonic peak holding at least this share of the dominant peak's power is the
#: fundamental (bloom ridges on both edges can make the second harmonic the largest).
SUBHARMONIC_SHARE = 0.2


def _profile_spectrum(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int] | None:
    """Power spectrum of a mean profile (Hann window, 8x zero padding), its first bin of a
    period spanning the profile :data:`MIN_PERIODS` times, and the main lobe's half-width in
    bins; None for a profile too short or not finite."""
    p = np.asarray(profile, dtype=np.float64)
    n = p.size
    if n < 16 or not np.all(np.isfinite(p)):
        return None
    x = (p - p.mean()) * np.hanning(n)
    n_fft = 8 * (1 << math.ceil(math.log2(n)))
    power = np.abs(np.fft.rfft(x, n_fft)) ** 2
    first = math.ceil(MIN_PERIODS * n_fft / n)
    return power, np.fft.rfftfreq(n_fft), first, round(2.0 * n_fft / n)


def dominant_period_px(profile: np.ndarray) -> float | None:
    """The period (px) of a line pattern's mean profile across the lines, from its spectrum.

    The largest peak of the Hann-windowed, 8x zero-padded power spectrum among periods
    spanning the profile at least :data:`MIN_PERIODS` times, refined by a parabola; a peak
    at ``f/2`` or ``f/3`` with :data:`SUBHARMONIC_SHARE` of its power is taken instead. None
    when the profile is too short or not periodic (the peak's main lobe holds less than
    :data:`MIN_PERIODIC_SHARE` of the power): one or two lines, noise.
    """
    found = _main_peak(profile)
    if found is None:
        return None
    power, freq, first, k, share = found
    if k in (first, power.size - 1):
        return None  # the band's edge, not a peak
    if share < MIN_PERIODIC_SHARE:
        return None
    for m in (3, 2):  # the lowest strong sub-harmonic is the fundamental
        centre = round(k / m)  # a harmonic series: within 4 % of f/m
        reach = max(2, round(0.04 * k / m))
        lo, hi = max(first, centre - reach), centre + reach + 1
        if hi - lo < 3:
            continue
        j = lo + int(np.argmax(power[lo:hi]))
        if lo < j < hi - 1 and power[j] >= SUBHARMONIC_SHARE * power[k]:
            k = j
            break
    a, b, c = np.log(power[k - 1 : k + 2] + 1e-300)
    shift = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c < 0 else 0.0
    return float(1.0 / ((k + float(np.clip(shift, -0.5, 0.5))) * (freq[1] - freq[0])))


def period_support(profile: np.ndarray, period_px: float) -> float:
    """Largest power within the main lobe around ``1/period_px`` as a share of the largest
    power of any period spanning the profile :data:`MIN_PERIODS` times (0 outside them): how
    far the profile itself shows a pitch measured from the lines."""
    spec = _profile_spectrum(profile)
    if spec is None or not period_px > 0:
        return 0.0
    power, freq, first, lobe = spec
    k = round(1.0 / (period_px * (freq[1] - freq[0])))
    if k < first or k >= power.size or power.size - first < 1:
        return 0.0
    peak = float(power[first:].max())
    near = float(power[max(first, k - lobe) : k + lobe + 1].max())
    return near / peak if peak > 0 else 0.0


def periodic_share(profile: np.ndarray) -> float | None:
    """Share of the profile's (Hann-windowed) varying power in the main lobe of its largest
    peak among periods spanning it :data:`MIN_PERIODS` times (what :func:`dominant_period_px`
    compares with :data:`MIN_PERIODIC_SHARE`); None for a profile too short or not finite."""
    found = _main_peak(profile)
    return None if found is None else found[-1]


def _main_peak(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int, float] | None:
    """(power, frequencies, first bin counted, bin of the largest peak among them, share of
    the varying power in that peak's main lobe), or None for a profile too short, not finite
    or without varying power: what :func:`dominant_period_px` and :func:`periodic_share`
    read."""
    spec = _profile_spectrum(profile)
    if spec is None:
        return None
    power, freq, first, lobe = spec
    total = float(power[1:].sum())
    if total <= 0 or power.size - first < 3:
        return None
    k = first + int(np.argmax(power[first:]))
    return power, freq, first, k, float(power[max(1, k - lobe) : k + lobe + 1].sum()) / total
