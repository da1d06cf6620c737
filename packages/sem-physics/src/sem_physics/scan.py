"""Scan-line jitter: rows displaced horizontally by a random offset (beam or stage instability).

Jitter is not defocus: neither the blind PSF estimate nor any restoration corrects it, so it is
measured apart. :func:`row_jitter` finds, for every pair of adjacent rows, the sub-pixel shift
maximising their cross-correlation (rows high-passed and low-passed in one of three bands,
parabolic peak); for rows displaced by ``p_i`` it is ``p_{i+1} - p_i`` plus the error noise and
structure make. A running median over the rows removes a tilt or a slow drift (they shear, they
do not jitter). The shift is measured separately on the left and the right half of the rows:
jitter moves the whole row, so it is common to both halves, while their errors are independent.
The robust covariance of the two halves' shifts is therefore the jitter's variance *beyond*
what the noise explains, and their robust correlation times ``sqrt(pairs)`` is the evidence
(about N(0, 1) without jitter). Pairs whose halves correlate weakly (flat rows, rows along
horizontal lines: they carry no horizontal position) are left out. The band used is the one
where most pairs correlate (fine for sharp images, coarse for blurred or noisy ones).

The thresholds were calibrated on the sample generator's images and 48 real micrographs, each
degraded with the paper's settings (``benchmarks/bench_jitter.py``: 0 false alarms in 240
degraded cases, largest evidence 4.9 against the threshold 8). A frame larger than
:data:`MAX_SIDE` along either axis is measured on its central window of that size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["JITTER_MIN_RMS_PX", "JITTER_MIN_Z", "MAX_SIDE", "RowJitter", "row_jitter"]

JITTER_MIN_RMS_PX = 0.6  # smallest rms jitter (px) reported as detected
JITTER_MIN_Z = 8.0  # and the evidence it needs: robust correlation of the halves x sqrt(n)
MIN_ROWS = 24  # pairs of rows with a usable shift below which nothing is claimed
_MAX_LAG = 7  # px searched each way (two rows with offsets of -2..2 move by up to 4 px)
_LAGS = range(-_MAX_LAG, _MAX_LAG + 1)
_MIN_NCC = 0.3  # a half-row correlating less with the row above says nothing about a shift
# bands along rows (low-pass sigma, high-pass sigma in px): fine detail for sharp images, coarser
# bands for blurred or noisy ones; the band where most pairs correlate is used
_SCALES = ((0.7, 12.0), (2.0, 24.0), (5.0, 48.0))
_MAD = 1.4826
_TREND_ROWS = 15  # rows of the running median removing a slow drift
#: Rows and columns measured at most: a larger frame is measured on its central window of this
#: size (the thresholds were calibrated on frames up to 2048 px; an 8192² frame would take 11 s)
MAX_SIDE = 2048


@dataclass(frozen=True)
class RowJitter:
    """Result of :func:`row_jitter`.

    ``rms_px``: rms horizontal offset of each row (px) beyond what the noise explains, assuming
    independent offsets row to row (the row-to-row displacement is ``sqrt(2)`` times larger; 0
    when none is measurable). ``z``: the evidence, the robust correlation of the two half-rows'
    shifts times the square root of ``rows_used`` (about N(0, 1) without jitter). ``detected``:
    ``rms_px >= JITTER_MIN_RMS_PX`` and ``z >= JITTER_MIN_Z``. ``rows_used``: pairs of adjacent
    rows whose shift both halves measured. ``reason``: the one sentence the commands print when detected, else None.
    """

    rms_px: float
    detected: bool
    rows_used: int
    z: float = 0.0
    reason: str | None = None

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        """The fields as a dict (JSON-ready), like the package's pydantic records."""
        del mode
        return asdict(self)


def _spectra(image: np.ndarray, high: float) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Spectra of rows ``1..H-1`` and of the rows above them, high-passed (local mean removed
    over about ``high`` px, two running means) and tapered; and the windows' overlap per lag."""
    from scipy import fft
    from scipy import ndimage as ndi

    w = image.shape[1]
    size = max(3, round(np.sqrt(6 * high * high + 1)))  # two boxes of this width: sigma ~ high
    trend = ndi.uniform_filter1d(image, size, axis=1, mode="reflect")
    rows = image - ndi.uniform_filter1d(trend, size, axis=1, mode="reflect")
    taper = min(w // 8, 16)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(taper) + 0.5) / taper)
    window = np.ones(w)
    window[:taper], window[w - taper :] = ramp, ramp[::-1]
    n = fft.next_fast_len(w + _MAX_LAG + 1, real=True)
    spec = fft.rfft(rows * window, n=n, axis=1)
    # the windows' overlap at each lag: dividing by it keeps the peak from leaning to lag 0
    overlap = np.array([window[abs(k) :] @ window[: w - abs(k)] for k in _LAGS])
    return spec[1:], spec[:-1], n, overlap / overlap[_MAX_LAG]


def _shifts(
    mid: np.ndarray, ref: np.ndarray, n: int, overlap: np.ndarray, low: float
) -> tuple[np.ndarray, np.ndarray]:
    """Shift of each row vs the row above in one band, and the peak normalised correlation."""
    from scipy import fft

    f = np.arange(mid.shape[1]) / n
    gain = np.exp(-4 * (np.pi * f * low) ** 2)  # the low-pass on both rows
    weights = np.full(f.size, 2.0 / n)
    weights[0] = 1.0 / n
    if n % 2 == 0:
        weights[-1] = 1.0 / n
    power = gain * weights
    norm = np.sqrt((np.abs(mid) ** 2 @ power) * (np.abs(ref) ** 2 @ power)) + 1e-12
    cross = fft.irfft(mid * np.conj(ref) * gain, n=n, axis=1)  # c[k] = sum row[x + k] ref[x]
    lags = np.concatenate([cross[:, n - _MAX_LAG :], cross[:, : _MAX_LAG + 1]], axis=1)
    lags /= overlap
    best = np.argmax(lags, axis=1)
    k = np.clip(best, 1, 2 * _MAX_LAG - 1)
    rows = np.arange(lags.shape[0])
    cm, c0, cp = lags[rows, k - 1], lags[rows, k], lags[rows, k + 1]
    denom = cm - 2 * c0 + cp
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(denom < 0, 0.5 * (cm - cp) / denom, 0.0)
    shift = (k - _MAX_LAG) + np.clip(frac, -0.5, 0.5)
    at_edge = (best == 0) | (best == 2 * _MAX_LAG)
    return shift, np.where(at_edge, 0.0, c0 / norm)


def _detrend(shifts: np.ndarray) -> np.ndarray:
    """The shifts less their running median: a tilt or a slow drift shears, it does not jitter."""
    from scipy import ndimage as ndi

    return shifts - ndi.median_filter(shifts, size=_TREND_ROWS, mode="nearest")


def _robust_var(x: np.ndarray) -> float:
    return float((_MAD * np.median(np.abs(x - np.median(x)))) ** 2)


def _central(arr: np.ndarray, size: int) -> np.ndarray:
    """The central window of ``arr`` at most ``size`` px along each axis (a view)."""
    (h, w), hs, ws = arr.shape, min(arr.shape[0], size), min(arr.shape[1], size)
    top, left = (h - hs) // 2, (w - ws) // 2
    return arr[top : top + hs, left : left + ws]


def row_jitter(image: np.ndarray) -> RowJitter:
    """Measure scan-line jitter (random horizontal row offsets) of a grey image (H, W).

    Examples
    --------
    >>> import numpy as np
    >>> from sem_physics import make_sample
    >>> row_jitter(make_sample("texture", (256, 320), seed=1)).detected
    False
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {arr.shape}")
    arr = _central(arr, MAX_SIDE).astype(np.float64)
    h, w = arr.shape
    if h < MIN_ROWS + 2 or w < 8 * _MAX_LAG or not np.all(np.isfinite(arr)):
        return RowJitter(rms_px=0.0, detected=False, rows_used=0)
    half = w // 2
    n, ok, s_left, s_right = -1, np.zeros(0, bool), np.zeros(0), np.zeros(0)
    for low, high in _SCALES:  # the band where most pairs carry a horizontal position
        left, c_left = _shifts(*_spectra(arr[:, :half], high), low)
        right, c_right = _shifts(*_spectra(arr[:, half:], high), low)
        good = (c_left >= _MIN_NCC) & (c_right >= _MIN_NCC)
        if int(good.sum()) > n:
            n, ok, s_left, s_right = int(good.sum()), good, left, right
    if n < MIN_ROWS:
        return RowJitter(rms_px=0.0, detected=False, rows_used=n)
    left, right = _detrend(s_left[ok]), _detrend(s_right[ok])
    v_sum, v_diff = _robust_var(left + right), _robust_var(left - right)
    if v_sum + v_diff <= 0:
        return RowJitter(rms_px=0.0, detected=False, rows_used=n)
    common = max(v_sum - v_diff, 0.0) / 4.0  # variance of the shift both halves share
    rms = float(np.sqrt(common / 2.0))  # p_{i+1} - p_i has variance 2 var(p)
    z = float((v_sum - v_diff) / (v_sum + v_diff) * np.sqrt(n))
    detected = rms >= JITTER_MIN_RMS_PX and z >= JITTER_MIN_Z
    reason = (
        f"scan-line jitter of about {rms:.1f} px rms between rows: not defocus; no "
        "restoration here corrects it, and it limits the blind PSF estimate"
        if detected
        else None
    )
    return RowJitter(
        rms_px=round(rms, 3), detected=detected, rows_used=n, z=round(z, 2), reason=reason
    )
