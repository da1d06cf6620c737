"""Preprocessing of line/space images: intensity normalisation, flattening, orientation, tilt.

All functions take a float (H, W) image. Lines are measured as *vertical* lines: edges are
``x`` positions (columns) as a function of the row ``y``; horizontal-line images are transposed
first (:func:`detect_orientation`). Pixel ``j`` covers ``[j - 1/2, j + 1/2]``, so a position
equal to an integer is a pixel centre.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage
from sem_physics.io import detect_info_bar, frame_line_rows

__all__ = [
    "detect_info_bar_rows",
    "detect_orientation",
    "detect_tone",
    "estimate_tilt",
    "flatten_background",
    "median5_extrema",
    "normalize_intensity",
    "plateau_levels",
    "saturation_fractions",
    "sheared_profile",
    "trailing_frame_rows",
]

Orientation = Literal["vertical", "horizontal"]

_MEDIAN_SIZE = 5
_MAX_EXACT_WINDOWS = 200_000


def _box_count(mask: np.ndarray, size: int) -> np.ndarray:
    """Number of True pixels in every fully-inside ``size × size`` window (top-left indexed)."""
    m = mask.astype(np.uint8)
    h = sum(m[:, i : m.shape[1] - size + 1 + i] for i in range(size))
    return sum(h[i : h.shape[0] - size + 1 + i, :] for i in range(size))


def _extreme_median(a: np.ndarray, bound: float, upper: bool) -> float:
    """Max (``upper``) or min of the 5×5 medians, given a value the extreme is known to reach."""
    k = _MEDIAN_SIZE
    need = k * k // 2 + 1
    extreme = float(a.max() if upper else a.min())
    if bound == extreme:
        return bound
    count = _box_count(a >= bound if upper else a <= bound, k)
    rows, cols = np.nonzero(count >= need)
    if rows.size == 0 or rows.size > _MAX_EXACT_WINDOWS:
        med = ndimage.median_filter(a, size=k, mode="reflect")[
            k // 2 : -(k // 2), k // 2 : -(k // 2)
        ]
        return float(med.max() if upper else med.min())
    windows = sliding_window_view(a, (k, k))[rows, cols].reshape(rows.size, k * k)
    med = np.median(windows, axis=1)
    return float(med.max() if upper else med.min())


def _block_medians(a: np.ndarray) -> np.ndarray:
    """Medians of the non-overlapping 5×5 blocks: the 5×5 median filter at the block centres."""
    k = _MEDIAN_SIZE
    hb, wb = a.shape[0] // k, a.shape[1] // k
    blocks = a[: hb * k, : wb * k].reshape(hb, k, wb, k).transpose(0, 2, 1, 3).reshape(hb, wb, -1)
    return np.median(blocks, axis=2)


def median5_extrema(image: np.ndarray) -> tuple[float, float]:
    """Minimum and maximum of the image's 5×5 median filter (SMILE's normalisation levels).

    Computed exactly over all windows that lie inside the image, without filtering the whole
    image: medians of the non-overlapping 5×5 blocks give a value the extreme must reach; only
    windows holding at least 13 pixels beyond that value can hold the extreme, and only their
    medians are computed.

    Returns
    -------
    (lo, hi) : floats on the image's scale.
    """
    a = np.asarray(image, dtype=np.float64)
    k = _MEDIAN_SIZE
    if a.shape[0] < k or a.shape[1] < k:
        med = ndimage.median_filter(a, size=k, mode="reflect")
        return float(med.min()), float(med.max())
    block_med = _block_medians(a)
    lo = _extreme_median(a, float(block_med.min()), upper=False)
    hi = _extreme_median(a, float(block_med.max()), upper=True)
    return lo, hi


def _otsu_split(values: np.ndarray) -> float:
    """Otsu's threshold of ``values`` (256-bin histogram): the split of largest between-class
    variance."""
    hist, edges = np.histogram(values, bins=256)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (m0 / w0 - (m0[-1] - m0) / w1) ** 2
    return float(centres[int(np.nanargmax(between[:-1]))])


def plateau_levels(image: np.ndarray) -> tuple[float, float]:
    """The image's own space and line levels: medians of the two classes of 5×5 block medians.

    Block medians remove the pixel noise; Otsu's threshold splits them into the dark and bright
    phase; each phase's median is its plateau level (edge blocks and small artefacts are a
    minority in each class and do not move it).
    """
    a = np.asarray(image, dtype=np.float64)
    k = _MEDIAN_SIZE
    med = (
        _block_medians(a).ravel()
        if a.shape[0] >= k and a.shape[1] >= k
        else ndimage.median_filter(a, size=k, mode="reflect").ravel()
    )
    if med.max() == med.min():
        return float(med[0]), float(med[0])
    split = _otsu_split(med)
    return float(np.median(med[med <= split])), float(np.median(med[med > split]))


def normalize_intensity(
    image: np.ndarray,
    levels: Literal["plateau", "median5", "percentile"] = "plateau",
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> tuple[np.ndarray, float, float]:
    """Map two intensity levels ``lo``/``hi`` to 0/1: ``(I − lo) / (hi − lo)``.

    ``levels="plateau"`` (default): the space and line levels of :func:`plateau_levels`, so the
    0.5 level is the true half-level between them. ``levels="median5"``: the min and max of the
    5×5 median filter over windows inside the image (SMILE's rule without its zero padding).
    ``levels="percentile"``: the given percentiles of the 5×5 median filter, sampled on the
    non-overlapping 5×5 blocks.

    Returns the normalised float64 image and ``(lo, hi)``. Raises ValueError for a constant
    image (``hi == lo``).
    """
    a = np.asarray(image, dtype=np.float64)
    if levels == "plateau":
        lo, hi = plateau_levels(a)
    elif levels == "median5":
        lo, hi = median5_extrema(a)
    elif levels == "percentile":
        p_lo, p_hi = percentiles
        if not 0.0 <= p_lo < p_hi <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
        k = _MEDIAN_SIZE
        if a.shape[0] < k or a.shape[1] < k:
            med = ndimage.median_filter(a, size=k, mode="reflect")
        else:
            med = _block_medians(a)
        lo, hi = (float(v) for v in np.percentile(med, [p_lo, p_hi]))
    else:
        raise ValueError(f"levels must be 'plateau', 'median5' or 'percentile', got {levels!r}")
    if not hi > lo:
        raise ValueError(f"image has no contrast after 5x5 median filtering (min = max = {lo:g})")
    return (a - lo) / (hi - lo), lo, hi


def flatten_background(image: np.ndarray) -> np.ndarray:
    """Remove a brightness gradient: subtract the least-squares plane ``a x + b y + c``.

    The plane is fitted to all pixels: over many line/space periods the pattern averages to
    the same level everywhere, so the fit sees only the gradient (fitting the bright phase
    alone, as SMILE does, is biased when the gradient moves pixels across the median). The
    plane minus its mean is subtracted, so the mean level is kept.
    """
    a = np.asarray(image, dtype=np.float64)
    h, w = a.shape
    step = max(1, int(np.sqrt(a.size / 250_000)))
    sub = a[::step, ::step]
    yy, xx = np.mgrid[0:h:step, 0:w:step]
    design = np.column_stack([xx.ravel(), yy.ravel(), np.ones(sub.size)]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, sub.ravel(), rcond=None)
    y_all, x_all = np.mgrid[0:h, 0:w]
    plane = coef[0] * x_all + coef[1] * y_all
    return a - (plane - plane.mean())


def detect_orientation(image: np.ndarray, bin_px: int = 2) -> tuple[Orientation, float]:
    """Orientation of the lines from the gradient energy of a ``bin_px``-binned copy.

    Vertical lines vary along ``x``: ``E_x = mean (∂I/∂x)²`` exceeds ``E_y``. Returns the
    orientation and the anisotropy ratio ``max(E_x, E_y) / min(E_x, E_y)`` (≈ 1 means no lines).
    Larger bins average pixel noise away, which dominates both energies on strongly blurred
    lines (blur radii 20-30 px: 1.0-2.2 on 2×2 bins, up to 130 on 8×8 bins).
    """
    if int(bin_px) < 1:
        raise ValueError(f"bin_px must be >= 1, got {bin_px}")
    a = np.asarray(image, dtype=np.float64)
    k = int(bin_px)
    h, w = (a.shape[0] // k) * k, (a.shape[1] // k) * k
    b = a[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3)) if h and w else a
    ex = float(np.mean(np.diff(b, axis=1) ** 2)) if b.shape[1] > 1 else 0.0
    ey = float(np.mean(np.diff(b, axis=0) ** 2)) if b.shape[0] > 1 else 0.0
    ratio = max(ex, ey) / max(min(ex, ey), 1e-300)
    return ("vertical" if ex >= ey else "horizontal"), ratio


def detect_tone(image: np.ndarray, norm: np.ndarray, min_ratio: float = 1.1) -> tuple[str, str]:
    """Which phase holds the lines, from the noise of each phase (lines vertical).

    SEM shot noise grows with the signal, so in an image as recorded the bright phase is the
    noisier one; an inverted image shows the reverse. The row-to-row differences inside the
    bright and the dark phase (robust std, MAD) are compared: a ratio above ``min_ratio`` says
    the image is as recorded and the lines are the bright phase (resist lines on a substrate);
    below ``1/min_ratio`` it is inverted (dark lines). In between, bright is assumed and the
    source says so.

    Returns
    -------
    (tone, source) : ``'bright'`` or ``'dark'``, and how it was decided.
    """
    a = np.asarray(image, dtype=np.float64)
    profile = np.asarray(norm, dtype=np.float64).mean(axis=0)
    d = np.diff(a, axis=0)

    def robust_std(cols: np.ndarray) -> float:
        if cols.size == 0 or d.shape[0] == 0:
            return float("nan")
        v = d[:, cols].ravel()
        return float(1.4826 * np.median(np.abs(v - np.median(v))))

    bright = robust_std(np.nonzero(profile > 0.75)[0])
    dark = robust_std(np.nonzero(profile < 0.25)[0])
    if np.isfinite(bright) and np.isfinite(dark) and min(bright, dark) > 0:
        ratio = bright / dark
        if ratio >= min_ratio:
            return "bright", f"auto: bright phase noisier (noise ratio {ratio:.2f}), as recorded"
        if ratio <= 1.0 / min_ratio:
            return "dark", f"auto: dark phase noisier (noise ratio {ratio:.2f}), inverted image"
        return "bright", f"auto: ambiguous (noise ratio {ratio:.2f}), bright lines assumed"
    return "bright", "auto: ambiguous (no noise in one phase), bright lines assumed"


def _projection_score(a: np.ndarray, ys: np.ndarray, slope: float) -> float:
    """Between-bin sum of squares of the projection along direction ``x = x0 + slope (y − yc)``.

    Every pixel is split linearly between the two nearest 1-px bins, so the score varies
    smoothly with the slope (nearest-bin rounding would make it flat for small slopes).
    """
    w = a.shape[1]
    yc = 0.5 * (ys[0] + ys[-1])
    shift = (ys - yc) * slope
    pad = int(np.ceil(np.abs(shift).max())) + 2
    u = (np.arange(w)[None, :] - shift[:, None] + pad).ravel()
    i0 = np.floor(u).astype(np.intp)
    w1 = u - i0
    n_bins = w + 2 * pad + 2
    vals = a.ravel()
    sums = np.bincount(i0, vals * (1.0 - w1), n_bins) + np.bincount(i0 + 1, vals * w1, n_bins)
    counts = np.bincount(i0, 1.0 - w1, n_bins) + np.bincount(i0 + 1, w1, n_bins)
    ok = counts > 1e-9
    return float(np.sum(sums[ok] ** 2 / counts[ok]))


def estimate_tilt(
    image: np.ndarray, max_tilt_deg: float = 5.0, *, n_rows: int = 160
) -> tuple[float, float]:
    """Tilt of (nominally vertical) lines by maximising projection sharpness (a Radon equivalent).

    For a trial slope ``s = tan θ`` every pixel is binned at ``x − s (y − y_c)``; the binned
    projection of the mean-free image is sharpest (largest between-bin sum of squares) when
    the bins follow the lines. A 0.25° grid over ``±max_tilt_deg`` (on half the rows), then a
    0.05° grid around the best, then a parabola through the three best points. Uses ``n_rows``
    evenly spaced rows.

    Returns
    -------
    (slope_px_per_row, tilt_deg) : ``x`` drift of an edge per row, and ``atan`` of it in degrees.
    """
    a = np.asarray(image, dtype=np.float64)
    step = max(1, a.shape[0] // n_rows)
    ys = np.arange(0, a.shape[0], step, dtype=np.float64)
    sub = a[::step] - a[::step].mean()

    def best(angles_deg: np.ndarray, every: int = 1) -> tuple[float, np.ndarray]:
        rows, y = sub[::every], ys[::every]
        scores = np.array([_projection_score(rows, y, np.tan(np.deg2rad(t))) for t in angles_deg])
        return float(angles_deg[int(np.argmax(scores))]), scores

    # Coarse search on every other sampled row (the angular resolution depends on the height
    # spanned, not on the number of rows), then a fine grid on all of them.
    coarse, _ = best(np.arange(-max_tilt_deg, max_tilt_deg + 1e-9, 0.25), every=2)
    fine_step = 0.05
    fine_grid = coarse + np.arange(-0.3, 0.3 + 1e-9, fine_step)
    fine_grid = fine_grid[np.abs(fine_grid) <= max_tilt_deg + 1e-9]
    fine, scores = best(fine_grid)
    i = int(np.argmax(scores))
    theta = fine
    if 0 < i < len(scores) - 1:
        s0, s1, s2 = scores[i - 1 : i + 2]
        denom = s0 - 2 * s1 + s2
        if denom < 0:
            theta = fine + fine_step * 0.5 * (s0 - s2) / denom
    return float(np.tan(np.deg2rad(theta))), float(theta)


def sheared_profile(image: np.ndarray, slope_px_per_row: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean intensity profile across the lines, averaged along the (tilted) line direction.

    Pixel ``(y, x)`` is binned at ``round(x − slope (y − y_c))``. Only bins covered by every
    row are returned.

    Returns
    -------
    (x_px, profile) : bin positions in image columns at the centre row ``y_c``, mean values.
    """
    a = np.asarray(image, dtype=np.float64)
    h, w = a.shape
    ys = np.arange(h, dtype=np.float64)
    shift = (ys - 0.5 * (h - 1)) * slope_px_per_row
    pad = int(np.ceil(np.abs(shift).max())) + 1
    idx = np.rint(np.arange(w)[None, :] - shift[:, None] + pad).astype(np.intp).ravel()
    sums = np.bincount(idx, weights=a.ravel(), minlength=w + 2 * pad + 1)
    counts = np.bincount(idx, minlength=w + 2 * pad + 1)
    full = counts >= 0.999 * h
    x = np.arange(sums.size, dtype=np.float64) - pad
    return x[full], sums[full] / counts[full]


def saturation_fractions(image: np.ndarray, dtype_range: tuple[float, float] | None) -> float:
    """Largest fraction of pixels sitting at one clipping level.

    ``dtype_range`` is the (low, high) representable range of the original data (e.g. (0, 255)
    for uint8) or None, in which case the image's own min/max are used.
    """
    a = np.asarray(image)
    lo, hi = dtype_range if dtype_range is not None else (float(a.min()), float(a.max()))
    return float(max(np.mean(a <= lo), np.mean(a >= hi)))


def detect_info_bar_rows(data: np.ndarray, search_fraction: float = 0.3) -> int | None:
    """Rows of an SEM information bar at the bottom (its frame line included), or None.

    The detector of :func:`sem_physics.io.read_image` (:func:`sem_physics.io.detect_info_bar`),
    for grey levels on the 0..255 scale; the bar is at most ``search_fraction`` of the height.
    """
    return detect_info_bar(data, max_fraction=search_fraction)


def trailing_frame_rows(data: np.ndarray, max_rows: int = 4) -> int:
    """Bottom rows of ``data`` that are a bar's black or white frame lines (at most ``max_rows``).

    See :func:`sem_physics.io.frame_line_rows`.
    """
    return frame_line_rows(data, max_rows=max_rows)
