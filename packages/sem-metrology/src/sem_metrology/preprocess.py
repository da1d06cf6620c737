"""Preprocessing of line/space images: intensity normalisation, flattening, orientation, tilt.

All functions take a float (H, W) image. Lines are measured as *vertical* lines: edges are
``x`` positions (columns) as a function of the row ``y``; horizontal-line images are transposed
first (:func:`detect_orientation`). Pixel ``j`` covers ``[j - 1/2, j + 1/2]``, so a position
equal to an integer is a pixel centre.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
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
    "label_counts",
    "median5_extrema",
    "normalize_intensity",
    "plateau_levels",
    "saturation_fractions",
    "sheared_profile",
    "split_medians",
    "step_mad",
    "step_noise",
    "streamed_median",
    "structure_tensor_sums",
    "trailing_frame_rows",
]

Orientation = Literal["vertical", "horizontal"]

_MEDIAN_SIZE = 5
_MAX_EXACT_WINDOWS = 200_000

#: Elements per block of the row-blocked computations: large frames (8192² and more) are
#: processed a band of rows at a time, so that no full-frame temporary is allocated (the
#: results are bit-identical to the full-frame expressions they replace).
BLOCK_ELEMENTS = 1 << 20


def row_blocks(n_rows: int, n_cols: int, *, multiple: int = 1) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` bands of rows holding about :data:`BLOCK_ELEMENTS` elements each
    (a multiple of ``multiple`` rows, except the last)."""
    step = max(multiple, (BLOCK_ELEMENTS // max(n_cols, 1)) // multiple * multiple)
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


def _accumulate_rows(acc: np.ndarray | None, block: np.ndarray) -> np.ndarray | None:
    """``acc`` plus the rows of ``block`` added one after the other: the order in which
    ``np.add.reduce(a, axis=0)`` sums the rows of a C-contiguous array, so that summing a
    frame band by band gives its ``sum(axis=0)`` bit for bit."""
    if block.shape[0] == 0:
        return acc
    if acc is None:
        acc, block = block[0].copy(), block[1:]
    if block.shape[0]:
        buf = np.empty((block.shape[0] + 1, *block.shape[1:]), dtype=np.result_type(acc, block))
        buf[0] = acc
        buf[1:] = block
        acc = np.add.reduce(buf, axis=0)
    return acc


#: Values gathered at once by :func:`streamed_median` (more in one histogram bin: narrowed).
_MEDIAN_GATHER = 1 << 22
_MEDIAN_BINS = 1 << 16


def streamed_median(chunks: Callable[[], Iterable[np.ndarray]]) -> np.float64:
    """``np.median`` of the concatenated 1-D float64 arrays that ``chunks()`` yields, bit for bit,
    without holding them all: the middle order statistics are found by histogram passes over
    the chunks (``chunks`` is called once per pass and must yield the same values each time),
    then combined as ``np.median`` combines them."""
    n, lo, hi, nan = 0, np.inf, -np.inf, False
    for c in chunks():
        if c.size:
            n += c.size
            cmin, cmax = c.min(), c.max()
            nan |= bool(np.isnan(cmin) or np.isnan(cmax))
            lo, hi = min(lo, float(cmin)), max(hi, float(cmax))
    if n == 0 or nan:
        return np.median(np.concatenate([np.empty(0), *chunks()]))
    ranks = [(n - 1) // 2] if n % 2 else [n // 2 - 1, n // 2]
    values = _order_statistics(chunks, ranks, lo, hi, 0)
    return np.median(np.asarray(values, dtype=np.float64))


def _order_statistics(
    chunks: Callable[[], Iterable[np.ndarray]], ranks: list[int], lo: float, hi: float, below: int
) -> list[float]:
    """The values of 0-based ``ranks`` among all chunk values, given that ``below`` of them are
    smaller than ``lo`` and the ranks' values lie in ``[lo, hi]`` (every value there counted)."""
    if lo == hi:
        return [lo] * len(ranks)
    span = hi - lo
    scale = _MEDIAN_BINS / span if math.isfinite(span) else 0.0
    if not (math.isfinite(scale) and scale > 0):  # a range beyond float64: all values at once
        allv = np.concatenate([c[(c >= lo) & (c <= hi)] for c in chunks()])
        part = np.partition(allv, [r - below for r in ranks])
        return [float(part[r - below]) for r in ranks]

    def bins(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sel = c[(c >= lo) & (c <= hi)]
        idx = ((sel - lo) * scale).astype(np.intp)  # monotone in the value
        np.minimum(idx, _MEDIAN_BINS - 1, out=idx)
        return sel, idx

    counts = np.zeros(_MEDIAN_BINS, dtype=np.int64)
    for c in chunks():
        counts += np.bincount(bins(c)[1], minlength=_MEDIAN_BINS)
    cum = np.cumsum(counts)
    wanted: dict[int, list[int]] = {}
    for r in ranks:
        b = int(np.searchsorted(cum, r - below, side="right"))
        wanted.setdefault(b, []).append(r)
    out: dict[int, float] = {}
    small = [b for b in wanted if counts[b] <= _MEDIAN_GATHER]
    if small:
        got: dict[int, list[np.ndarray]] = {b: [] for b in small}
        for c in chunks():
            sel, idx = bins(c)
            for b in small:
                got[b].append(sel[idx == b])
        for b in small:
            start = below + (int(cum[b - 1]) if b else 0)
            vals = np.concatenate(got[b])
            part = np.partition(vals, [r - start for r in wanted[b]])
            out.update({r: float(part[r - start]) for r in wanted[b]})
    for b in wanted:
        if b in small:
            continue
        # Many values in one bin: narrow the range to theirs (values of other bins lie
        # strictly outside it, the binning being monotone) and look again.
        blo, bhi = np.inf, -np.inf
        for c in chunks():
            sel, idx = bins(c)
            vals = sel[idx == b]
            if vals.size:
                blo, bhi = min(blo, float(vals.min())), max(bhi, float(vals.max()))
        start = below + (int(cum[b - 1]) if b else 0)
        found = _order_statistics(chunks, wanted[b], blo, bhi, start)
        out.update(dict(zip(wanted[b], found, strict=True)))
    return [out[r] for r in ranks]


def _normalised_rows(
    image: np.ndarray, levels: tuple[float, float] | None, start: int, stop: int
) -> np.ndarray:
    """Rows ``start:stop`` of ``(image - lo) / (hi - lo)`` (of ``image`` when ``levels`` is None)."""
    rows = np.asarray(image[start:stop], dtype=np.float64)
    if levels is None:
        return rows
    lo, hi = levels
    out = rows - lo
    out /= hi - lo
    return out


def row_mean(image: np.ndarray, levels: tuple[float, float] | None = None) -> np.ndarray:
    """``norm.mean(axis=0)`` of ``norm = (image - lo) / (hi - lo)`` (``image`` itself when
    ``levels`` is None), bit for bit, without a normalised copy of the whole image.

    numpy lays ``norm`` out as ``image`` (order 'K'): row-major, its rows are summed one after
    the other (done band by band here); column-major (a transposed or turned view), each
    column is summed pairwise (done a band of columns at a time, laid out the same way).
    """
    a = np.asarray(image)
    if levels is None:
        return a.mean(axis=0)  # no temporaries
    h, w = a.shape
    lo, hi = levels
    if abs(a.strides[0]) < abs(a.strides[1]):  # column-major
        out = np.empty(w)
        for c0, c1 in row_blocks(w, h):
            band = np.asarray(a[:, c0:c1], dtype=np.float64) - lo
            band /= hi - lo
            out[c0:c1] = band.mean(axis=0)
        return out
    acc = None
    for r0, r1 in row_blocks(h, w):
        acc = _accumulate_rows(acc, _normalised_rows(a, levels, r0, r1))
    assert acc is not None
    return acc / h


def step_mad(image: np.ndarray, levels: tuple[float, float] | None = None, axis: int = 0) -> float:
    """``median(|step − median(step)|)`` of ``step = np.diff(norm, axis=axis)``, ``norm`` as in
    :func:`row_mean` (as float64): the robust spread of the differences between neighbours,
    bit for bit, from bands of rows (no full-frame difference image)."""
    return float(_mad(_steps(image, levels, axis)))


def step_noise(image: np.ndarray, axis: int = 0) -> float:
    """Pixel noise std from the differences between neighbouring rows (``axis=0``: along
    vertical lines) or columns (``axis=1``): :func:`_trimmed_spread` of
    ``np.diff(image, axis=axis)`` over ``√2``, band by band; not quantised on integer images as
    the MAD is."""
    return _trimmed_spread(_steps(image, None, axis)) / math.sqrt(2.0)


def _steps(
    image: np.ndarray, levels: tuple[float, float] | None, axis: int
) -> Callable[[], Iterator[np.ndarray]]:
    """The chunks of ``np.diff(norm, axis=axis)`` (``norm`` as in :func:`row_mean`, float64),
    band by band, each time the returned function is called."""
    h, w = image.shape

    def steps() -> Iterator[np.ndarray]:
        if axis == 0:
            for r0, r1 in row_blocks(h - 1, w):
                yield np.diff(_normalised_rows(image, levels, r0, r1 + 1), axis=0).ravel()
        else:
            for r0, r1 in row_blocks(h, w):
                yield np.diff(_normalised_rows(image, levels, r0, r1), axis=1).ravel()

    return steps


def label_counts(labels: np.ndarray, n_labels: int) -> np.ndarray:
    """``np.bincount(labels.ravel(), minlength=n_labels + 1)`` of a label image (values
    ``0..n_labels``), band by band: no int64 copy of the whole label image."""
    out = np.zeros(n_labels + 1, dtype=np.intp)
    for r0, r1 in row_blocks(*labels.shape):
        out += np.bincount(labels[r0:r1].ravel(), minlength=n_labels + 1)
    return out


def split_medians(image: np.ndarray, split: float) -> tuple[float, float, int]:
    """``np.median(image[image <= split])``, ``np.median(image[image > split])`` and the
    number of pixels ``<= split``, bit for bit, from bands of rows (no selected copies)."""
    a = np.asarray(image)

    def part(low: bool) -> Callable[[], Iterator[np.ndarray]]:
        def chunks() -> Iterator[np.ndarray]:
            for r0, r1 in row_blocks(*a.shape):
                band = a[r0:r1]
                yield band[band <= split] if low else band[band > split]

        return chunks

    n_low = sum(int(np.count_nonzero(a[r0:r1] <= split)) for r0, r1 in row_blocks(*a.shape))
    return float(streamed_median(part(True))), float(streamed_median(part(False))), n_low


def _mad(chunks: Callable[[], Iterable[np.ndarray]]) -> np.float64:
    """``np.median(np.abs(v - np.median(v)))`` of the values ``chunks()`` yields."""
    return streamed_median(_deviations(chunks, streamed_median(chunks)))


def _deviations(
    chunks: Callable[[], Iterable[np.ndarray]], centre: float
) -> Callable[[], Iterator[np.ndarray]]:
    """The chunks of ``|v - centre|`` of the values ``chunks()`` yields, each time called."""

    def deviations() -> Iterator[np.ndarray]:
        for c in chunks():
            d = c - centre
            yield np.abs(d, out=d)

    return deviations


#: Share of the smallest absolute deviations :func:`_trimmed_spread` averages, and the mean of
#: the smallest 75 % of ``|X|`` for a standard normal ``X``: ``2 (φ(0) − φ(a)) / 0.75`` with
#: ``a = Φ⁻¹(0.875)``, which makes the spread a standard deviation for Gaussian noise.
_TRIM_KEEP = 0.75
_TRIM_NORMAL_MEAN = 0.5149033
#: Values :func:`_trimmed_spread` holds at once (16 MB; more are streamed, several passes).
_SPREAD_GATHER = 1 << 21


def _trimmed_spread(chunks: Callable[[], Iterable[np.ndarray]]) -> float:
    """Robust standard deviation of the values ``chunks()`` yields: the mean of the smallest
    75 % of ``|v − median(v)|`` over its value for Gaussian noise (NaN for no values).

    Unlike the MAD it is not quantised on integer images: there the deviations are integers
    or halves, so their median jumps in half-grey-level steps: 8-bit noise of standard
    deviation 1.6, 1.9 and 2.2 grey levels all reads 2.10 (two phases' ratio 1.00); a mean
    over many of them varies continuously (1.57, 1.89, 2.18). The largest 25 % (pixels that
    an edge's roughness or a speck moved) are left out, as the MAD leaves out half.
    """
    gathered: list[np.ndarray] = []
    n = 0
    for c in chunks():  # few enough values are held at once: one pass over the chunks
        n += c.size
        if n <= _SPREAD_GATHER:
            gathered.append(np.asarray(c, dtype=np.float64).ravel())
    if n == 0:
        return math.nan
    k = max(1, int(_TRIM_KEEP * n))
    if n <= _SPREAD_GATHER:
        v = np.concatenate(gathered)
        del gathered
        v -= np.median(v)
        np.abs(v, out=v)
        v.partition(k - 1)  # in place: the k smallest first
        return float(v[:k].sum()) / k / _TRIM_NORMAL_MEAN
    del gathered
    centre = streamed_median(chunks)
    if not math.isfinite(centre):
        return math.nan
    deviations = _deviations(chunks, centre)
    hi = max(float(d.max()) for d in deviations() if d.size)
    cut = _order_statistics(deviations, [k - 1], 0.0, hi, 0)[0]  # the k-th smallest
    total, below = 0.0, 0
    for d in deviations():
        small = d[d < cut]
        total += float(small.sum())
        below += small.size
    total += (k - below) * cut  # values equal to the cut fill the rest of the k smallest
    return total / k / _TRIM_NORMAL_MEAN


def _box_count(mask: np.ndarray, size: int) -> np.ndarray:
    """Number of True pixels in every fully-inside ``size × size`` window (top-left indexed)."""
    m = mask.astype(np.uint8)
    w = m.shape[1] - size + 1
    h = m[:, :w].copy()
    for i in range(1, size):
        h += m[:, i : w + i]
    rows = h.shape[0] - size + 1
    out = h[:rows].copy()
    for i in range(1, size):
        out += h[i : rows + i]
    return out


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
    out = np.empty((hb, wb))
    for r0, r1 in row_blocks(hb * k, wb * k, multiple=k):  # bands of whole blocks
        band = a[r0:r1, : wb * k]
        blocks = band.reshape(-1, k, wb, k).transpose(0, 2, 1, 3).reshape(-1, wb, k * k)
        out[r0 // k : r1 // k] = np.median(blocks, axis=2)
    return out


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
    norm = a - lo
    norm /= hi - lo  # in place: one image-sized array, the same values as (a - lo) / (hi - lo)
    return norm, lo, hi


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


def detect_tone(
    image: np.ndarray,
    norm: np.ndarray,
    min_ratio: float = 1.1,
    *,
    slope_px_per_row: float = 0.0,
) -> tuple[str, str]:
    """Which phase holds the lines, from the noise of each phase (lines vertical).

    SEM shot noise grows with the signal, so in an image as recorded the bright phase is the
    noisier one; an inverted image shows the reverse. The phases are read from the mean
    profile of ``norm`` (0 = spaces' level, 1 = lines') along the lines, tilted by
    ``slope_px_per_row`` (as :func:`sheared_profile`): above 0.75 bright, below 0.25 dark.
    The row-to-row differences of ``image`` inside each phase (both pixels of a pair in it;
    robust std: :func:`_trimmed_spread`, not quantised on 8-bit images) are compared: a ratio above ``min_ratio`` says the image is as recorded
    and the lines are the bright phase (resist lines on a substrate); below ``1/min_ratio`` it
    is inverted (dark lines). Otherwise (a ratio in between, a phase without noise, or a
    profile that does not reach a phase) bright is assumed and the source says why. Edge rims
    (bloom) in the noisier phase are left out when they make it look noisier
    (:func:`_tone_without_rims`): the flat parts of the phases away from them decide, and a
    ratio then in between assumes the rims' tone (bright rims: bright lines).

    Returns
    -------
    (tone, source) : ``'bright'`` or ``'dark'``, and how it was decided.
    """
    a = np.asarray(image)
    h, w = a.shape
    if slope_px_per_row:
        x_prof, profile = sheared_profile(norm, slope_px_per_row)
    else:
        x_prof, profile = np.arange(w), np.asarray(norm, dtype=np.float64).mean(axis=0)
    shift = (np.arange(h, dtype=np.float64) - 0.5 * (h - 1)) * slope_px_per_row
    pad = int(np.ceil(np.abs(shift).max())) + 1 if h else 1
    cols = np.arange(w)[None, :]

    def robust_std(in_phase: np.ndarray) -> float:
        lut = np.zeros(w + 2 * pad + 1, dtype=bool)  # the phase's bins of the profile
        lut[np.rint(x_prof[in_phase]).astype(np.intp) + pad] = True

        def steps() -> Iterator[np.ndarray]:  # np.diff(a, axis=0) where both rows are in it
            for r0, r1 in row_blocks(h - 1, w):
                band = np.asarray(a[r0 : r1 + 1], dtype=np.float64)
                bins = np.rint(cols - shift[r0 : r1 + 1, None] + pad).astype(np.intp)
                both = lut[bins[:-1]] & lut[bins[1:]]
                yield np.diff(band, axis=0)[both]

        return _trimmed_spread(steps)

    if h < 2:
        return "bright", "auto: undecided (one row: no row-to-row noise), bright lines assumed"
    bright_bins, dark_bins = profile > 0.75, profile < 0.25
    missing = [name for name, b in (("bright", bright_bins), ("dark", dark_bins)) if not b.any()]
    if missing:
        return "bright", (
            f"auto: undecided (the mean profile along the lines reaches no {' and no '.join(missing)}"
            " phase to compare the noise of), bright lines assumed"
        )
    bright, dark = robust_std(bright_bins), robust_std(dark_bins)
    if min(bright, dark) > 0:
        ratio = bright / dark
        cores = _tone_without_rims(
            x_prof, profile, (bright_bins, dark_bins), robust_std, ratio, min_ratio
        )
        if cores is not None:
            return cores
        if ratio >= min_ratio:
            return "bright", f"auto: bright phase noisier (noise ratio {ratio:.2f}), as recorded"
        if ratio <= 1.0 / min_ratio:
            return "dark", f"auto: dark phase noisier (noise ratio {ratio:.2f}), inverted image"
        return "bright", f"auto: ambiguous (noise ratio {ratio:.2f}), bright lines assumed"
    quiet = "either phase" if bright == dark else f"the {'bright' if bright == 0 else 'dark'} phase"
    return "bright", f"auto: ambiguous (no noise in {quiet}), bright lines assumed"


#: Edge rims (bloom) for the tone: parts of the mean profile across the lines beyond the
#: plateaus (0 and 1) by this share of their contrast.
TONE_RIM_EXCESS = 0.1
#: The phases' cores whose noise tells the tone when there are rims: bins this far (px) from
#: the rims, where the mean profile's slope is at most TONE_CORE_SLOPE (contrast per px).
TONE_CORE_MARGIN_PX = 3.0
TONE_CORE_SLOPE = 0.02
#: Rims decide nothing unless they raise the noise ratio by this factor or more (a ratio at
#: the threshold, 1.11, moved by 1 % on a textured image without lines).
TONE_RIM_INFLATION = 1.05


def _tone_without_rims(
    x_prof: np.ndarray,
    profile: np.ndarray,
    phases: tuple[np.ndarray, np.ndarray],
    noise: Callable[[np.ndarray], float],
    ratio: float,
    min_ratio: float = 1.1,
) -> tuple[str, str] | None:
    """The tone (and how it was decided) from the noise of the phases' cores when edge rims in
    the noisier phase made it look noisier; None without rims, without a core in either phase,
    when the cores agree, or when the rims raised the noise ratio by less than
    :data:`TONE_RIM_INFLATION`.

    Rough edges under a rim make its pixels differ from row to row: the rims' phase looks
    noisier whatever the tone (dark lines with bright rims and even noise: noise ratio 1.2-1.7,
    "bright phase noisier, as recorded", the spaces measured). ``phases``: the bright and dark
    bins of the mean profile ``profile``; ``noise``: the row-to-row noise of a set of bins;
    ``ratio``: bright over dark over the whole phases.
    """
    noisier = "bright" if ratio >= min_ratio else "dark" if ratio <= 1.0 / min_ratio else None
    rims = _edge_rims(profile, noisier) if noisier else None
    if rims is None:
        return None
    cores = [_plateau_core(x_prof, profile, bins) for bins in phases]
    core = [noise(c) if c.any() else 0.0 for c in cores]
    if not min(core) > 0:
        return None  # no flat part of a phase away from the edges and rims: nothing to compare
    core_ratio = core[0] / core[1]
    inflation = ratio / core_ratio if noisier == "bright" else core_ratio / ratio
    if inflation < TONE_RIM_INFLATION:
        return None
    told = (
        f"noise ratio {core_ratio:.2f} without the {rims} rims on the edges, {ratio:.2f} with them"
    )
    # Bloom is bright as recorded: bright rims, an image as recorded (lines bright); dark rims,
    # an inverted one (lines dark). Whose edges they are, the image does not say (dark lines
    # can have bright rims): the warning names the other tone.
    if 1.0 / min_ratio < core_ratio < min_ratio:
        return rims, f"auto: ambiguous ({told}), {rims} lines assumed"
    if (core_ratio >= min_ratio) != (noisier == "bright"):
        other = "bright" if core_ratio >= min_ratio else "dark"
        why = "as recorded" if other == "bright" else "inverted image"
        return other, f"auto: {other} phase noisier ({told}), {why}"
    return None


def _edge_rims(profile: np.ndarray, phase: str) -> str | None:
    """'bright' or 'dark' when the mean profile has edge rims (:data:`TONE_RIM_EXCESS` beyond
    the plateaus) in ``phase`` (above the bright plateau, below the dark one), else None."""
    p = np.asarray(profile, dtype=np.float64)
    if phase == "bright" and np.nanmax(p) > 1.0 + TONE_RIM_EXCESS:
        return "bright"
    if phase == "dark" and np.nanmin(p) < -TONE_RIM_EXCESS:
        return "dark"
    return None


def _distance_to(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Distance (px) from every bin at ``x`` to the nearest bin of ``mask`` (inf without one)."""
    if not mask.any():
        return np.full(x.size, np.inf)
    xm = np.sort(x[mask])
    i = np.clip(np.searchsorted(xm, x), 1, xm.size) - 1
    j = np.minimum(i + 1, xm.size - 1)
    return np.minimum(np.abs(x - xm[i]), np.abs(x - xm[j]))


def _plateau_core(x_prof: np.ndarray, profile: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """``bins`` (a phase of the mean profile) where the profile is flat (slope at most
    :data:`TONE_CORE_SLOPE` there and at the neighbouring bins) and at least
    :data:`TONE_CORE_MARGIN_PX` from any rim (beyond the plateaus by :data:`TONE_RIM_EXCESS`):
    rough edges and rims do not reach those pixels."""
    p = np.asarray(profile, dtype=np.float64)
    x = np.asarray(x_prof, dtype=np.float64)
    if p.size < 2:
        return np.zeros(p.size, dtype=bool)
    steep = ~(np.abs(np.gradient(p, x)) <= TONE_CORE_SLOPE)
    rim = (p > 1.0 + TONE_RIM_EXCESS) | (p < -TONE_RIM_EXCESS)
    return bins & (_distance_to(x, steep) > 1.5) & (_distance_to(x, rim) >= TONE_CORE_MARGIN_PX)


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
    a = np.asarray(image)
    h, w = a.shape
    ys = np.arange(h, dtype=np.float64)
    shift = (ys - 0.5 * (h - 1)) * slope_px_per_row
    pad = int(np.ceil(np.abs(shift).max())) + 1
    n_bins = w + 2 * pad + 1
    # Band by band; np.add.at adds in the order np.bincount does (bit-identical sums).
    sums = np.zeros(n_bins)
    counts = np.zeros(n_bins, dtype=np.intp)
    cols = np.arange(w)[None, :]
    for r0, r1 in row_blocks(h, w):
        idx = np.rint(cols - shift[r0:r1, None] + pad).astype(np.intp).ravel()
        np.add.at(sums, idx, np.asarray(a[r0:r1], dtype=np.float64).ravel())
        counts += np.bincount(idx, minlength=n_bins)
    full = counts >= 0.999 * h
    x = np.arange(sums.size, dtype=np.float64) - pad
    return x[full], sums[full] / counts[full]


def structure_tensor_sums(image: np.ndarray, sigma: float = 1.0) -> tuple[float, float, float]:
    """``(Σ gx·gy, Σ gx², Σ gy²)`` of ``gy, gx = np.gradient(gaussian_filter(image, sigma))``.

    Bit for bit the full-frame expressions ``float(np.sum(gx * gy))`` etc., from bands of rows
    (each smoothed with a halo of rows, which the filter and the gradient need): the sums are
    combined in the pairwise order ``np.sum`` uses on the whole flattened products.
    """
    a = np.asarray(image)
    h, w = a.shape
    halo = int(4.0 * sigma + 0.5) + 1  # the filter's radius (truncate=4) and the gradient's row

    def leaf(lo: int, n: int) -> tuple[np.floating, ...]:
        r0, r1 = lo // w, (lo + n - 1) // w + 1
        g0, g1 = max(0, r0 - halo), min(h, r1 + halo)
        g = ndimage.gaussian_filter(np.asarray(a[g0:g1], dtype=np.float64), sigma)
        gy, gx = np.gradient(g)  # bands hold >= 2 rows unless the image is one row
        off = lo - r0 * w
        gx = gx[r0 - g0 : r1 - g0].ravel()[off : off + n]
        gy = gy[r0 - g0 : r1 - g0].ravel()[off : off + n]
        return np.add.reduce(gx * gy), np.add.reduce(gx * gx), np.add.reduce(gy * gy)

    def tree(lo: int, n: int) -> tuple[np.floating, ...]:
        # numpy's pairwise summation: halves (the first a multiple of 8) down to its blocks;
        # any node summed whole by np.add.reduce gives the same value as inside the tree.
        if n <= 2 * BLOCK_ELEMENTS:
            return leaf(lo, n)
        n2 = n // 2
        n2 -= n2 % 8
        left, right = tree(lo, n2), tree(lo + n2, n - n2)
        return tuple(x + y for x, y in zip(left, right, strict=True))

    if a.size == 0:
        gy, gx = np.gradient(np.asarray(a, dtype=np.float64))
        return float(np.sum(gx * gy)), float(np.sum(gx * gx)), float(np.sum(gy * gy))
    jxy, jxx, jyy = tree(0, a.size)
    return float(jxy), float(jxx), float(jyy)


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
