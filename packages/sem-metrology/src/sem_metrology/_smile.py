"""The ``smile`` convention: SMILE3's line/space pipeline, step by step, vectorised.

SMILE3 (github.com/IacopoMochi/SMILE3, the open tool the paper's Table 4 was measured with)
turns the image so that the lines run along its second axis; here the lines run along the
rows (vertical lines), and every step below is the same operation in that frame:

1. tilt: the Radon transform of the region (inscribed-circle mask) at 85°..94.8° in 0.2° steps;
   the angle whose projections have the largest sum of squares wins, and the *whole* frame is
   rotated by ``90° − θ`` with nearest-neighbour resampling before the region is cut out;
2. levels: ``lo``/``hi`` = min/max of ``scipy.signal.medfilt2d(region, 5)``, which pads with
   zeros, so ``lo`` is 0 for any non-negative image; ``(I − lo)/(hi − lo)``;
3. coarse edges: the 5×5 median (zero padded) of the normalised region summed along the lines,
   an 8th-order Butterworth low-pass (cut-off 0.125 of Nyquist, ``filtfilt`` with Gustafsson's
   edges), peaks of the magnitude of its gradient, shifted by one; a peak where the unfiltered
   sum rises is a leading edge of a bright line (falls, for dark lines); each leading edge is
   paired with the first trailing edge after it (a leading edge with none is dropped, a
   trailing edge before the first leading edge is ignored);
4. sub-pixel edges: in every row, a degree-4 polynomial through the 16 normalised values at
   ``edge − 8 .. edge + 7``, its real ``threshold`` crossing nearest ``edge`` (either
   polarity), clipped to the segment; rows without a real crossing are filled by linear
   interpolation (extrapolated at the ends);
5. no spike filter: SMILE's GUI has "edge distortion correction" on, but its next step (the
   multitaper switch, off) restores the unfiltered edges, so SMILE's numbers come from them.

Metrics (in :mod:`sem_metrology.lines`): CD = mean over lines of each line's *median* width,
CD std over those medians, LWR/LER = mean over lines/edges of each profile's 3σ (edges about
their mean), as SMILE's edge arrays give them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np

from .preprocess import _accumulate_rows, row_blocks

__all__ = ["SmileEdges", "rotate_region", "smile_edges", "smile_levels", "smile_tilt_deg"]

_ANGLES_DEG = np.linspace(85.0, 95.0, 50, endpoint=False)
_EDGE_RANGE_PX = 8
_DEGREE = 4


@functools.cache
def _median25_network() -> tuple[tuple[int, int, bool, bool], ...]:
    """Compare-exchange steps selecting the median of 25 values (wire 15 of 32).

    Batcher's odd-even merge sort of 32 wires (3 set to −inf, 25 data, 4 to +inf), with the
    steps on constant wires resolved and the steps the median does not depend on removed.
    Each step ``(i, j, keep_min, keep_max)`` puts ``min`` on wire i and ``max`` on wire j,
    computing only the outputs used later.
    """
    comps: list[tuple[int, int]] = []
    p = 1
    while p < 32:
        k = p
        while k >= 1:
            for j in range(k % p, 32 - k, 2 * k):
                for i in range(min(k, 32 - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        comps.append((i + j, i + j + k))
            k //= 2
        p *= 2
    state = ["lo"] * 3 + ["x"] * 25 + ["hi"] * 4
    steps: list[tuple[int, int]] = []
    for i, j in comps:
        a, b = state[i], state[j]
        if a == "lo" or b == "hi":
            continue  # already in order
        if a == "hi" or b == "lo":
            raise AssertionError("constants reach a data comparison")  # pragma: no cover
        steps.append((i, j))
    need, network = {15}, []
    for i, j in reversed(steps):
        keep_min, keep_max = i in need, j in need
        if keep_min or keep_max:
            network.append((i, j, keep_min, keep_max))
            need |= {i, j}
    return tuple(reversed(network))


def _compact_dtype(a: np.ndarray) -> np.dtype:
    """The smallest dtype holding every value of ``a`` exactly, for the median network (its
    medians are values of ``a`` or the zero padding, so they come out the same): ``uint8`` for
    8-bit grey levels (as before), ``uint16`` or ``float32`` when they hold the values (no
    negative zeros), else ``float64``. Checked band by band."""
    kinds = {"u8": True, "u16": True, "f32": True}
    lo, hi = a.min(), a.max()
    kinds["u8"] = bool(lo >= 0 and hi <= 255)
    kinds["u16"] = bool(lo >= 0 and hi <= 65535)
    for r0, r1 in row_blocks(a.shape[0], a.shape[1]):
        band = np.asarray(a[r0:r1], dtype=np.float64)
        if kinds["u8"] or kinds["u16"]:
            whole = bool(np.array_equal(band, np.rint(band)))
            kinds["u8"] &= whole
            kinds["u16"] &= whole and not bool(np.signbit(band).any())
        if kinds["f32"]:
            kinds["f32"] = bool(
                np.array_equal(band.astype(np.float32), band)
                and not bool((np.signbit(band) & (band == 0)).any())
            )
        if not any(kinds.values()):
            break
    if kinds["u8"]:
        return np.dtype(np.uint8)
    if kinds["u16"]:
        return np.dtype(np.uint16)
    return np.dtype(np.float32 if kinds["f32"] else np.float64)


def _median5_band(a: np.ndarray, r0: int, r1: int, dtype: np.dtype) -> np.ndarray:
    """Rows ``r0:r1`` of the zero-padded 5×5 median of ``a``, computed in ``dtype``."""
    h, w = a.shape
    n = r1 - r0
    padded = np.zeros((n + 4, w + 4), dtype=dtype)
    s0, s1 = max(0, r0 - 2), min(h, r1 + 2)
    padded[s0 - r0 + 2 : s1 - r0 + 2, 2:-2] = a[s0:s1]
    wires: dict[int, np.ndarray] = {}
    for k in range(25):
        dy, dx = divmod(k, 5)
        wires[3 + k] = padded[dy : dy + n, dx : dx + w]
    for i, j, keep_min, keep_max in _median25_network():
        x, y = wires[i], wires[j]
        if keep_min:
            wires[i] = np.minimum(x, y)
        if keep_max:
            wires[j] = np.maximum(x, y)
    return wires[15]


def median5_compact(image: np.ndarray) -> np.ndarray:
    """:func:`median5_zero_padded` in the smallest exact dtype (``uint8`` for 8-bit grey
    levels), computed in bands of rows: no full-frame float64 temporaries."""
    a = np.asarray(image)
    dtype = _compact_dtype(a)
    h, w = a.shape
    out = np.empty((h, w), dtype=dtype)
    # the network keeps up to ~30 band-sized arrays alive: bands of a quarter block
    for r0, r1 in row_blocks(h, 4 * w):
        out[r0:r1] = _median5_band(a, r0, r1, dtype)
    return out


def median5_zero_padded(image: np.ndarray) -> np.ndarray:
    """``scipy.signal.medfilt2d(image, 5)``: 5×5 median with zero padding.

    A median-selection network over the 25 shifted copies (minimum/maximum of whole arrays):
    the same values as ``medfilt2d``, several times faster on 8-bit data.
    """
    return median5_compact(image).astype(np.float64)


def smile_levels(median5: np.ndarray) -> tuple[float, float]:
    """SMILE's normalisation levels: min and max of the zero-padded 5×5 median."""
    return float(median5.min()), float(median5.max())


def _radon_scores(region: np.ndarray, angles_deg: np.ndarray, every: int = 1) -> np.ndarray:
    """Sum of squared Radon projections of SMILE's masked region, one per angle.

    ``region`` is in SMILE's frame (lines along axis 1). The mask is SMILE's inscribed circle
    (radius ``min(shape)/2 − 2``); as ``skimage.transform.radon(circle=True)`` the region is cut
    to its central square and a pixel at ``(y, x)`` projects to
    ``t = cos θ (x − c) − sin θ (y − c)``, split linearly between the two nearest bins (what
    the bilinear rotation followed by a column sum does).
    """
    dim1, dim2 = region.shape
    radius = min(region.shape) / 2 - 2
    xg = np.linspace(-dim2 / 2 + 1, dim2 / 2 - 1, dim2)
    yg = np.linspace(-dim1 / 2 + 1, dim1 / 2 - 1, dim1)
    side = min(region.shape)
    r0 = math.ceil((dim1 - side) / 2)
    c0 = math.ceil((dim2 - side) / 2)
    centre = side // 2
    n_bins = 2 * side + 4
    thetas = np.deg2rad(angles_deg)
    # Bands of the square's rows, in order: np.add.at adds each pixel's share in the order
    # np.bincount over all pixels does, so the projections are the same bit for bit.
    lower = np.zeros((angles_deg.size, n_bins))
    upper = np.zeros((angles_deg.size, n_bins))
    x2 = xg[None, c0 : c0 + side] ** 2
    for q0, q1 in row_blocks(side, side):
        inside = (x2 + yg[r0 + q0 : r0 + q1, None] ** 2) < radius * radius
        ys, xs = np.nonzero(inside)
        ys += q0
        if every > 1:  # a subsample of the rows along the lines, for the coarse search only
            keep = xs % every == 0
            ys, xs = ys[keep], xs[keep]
        vals = region[r0 + ys, c0 + xs].astype(np.float64)
        xs = xs.astype(np.float64) - centre
        ys = ys.astype(np.float64) - centre
        for i, theta in enumerate(thetas):
            t = np.cos(theta) * xs - np.sin(theta) * ys + side + 1
            i0 = np.floor(t).astype(np.intp)
            w1 = t - i0
            np.add.at(lower[i], i0, vals * (1.0 - w1))
            np.add.at(upper[i], i0 + 1, vals * w1)
    scores = np.empty(angles_deg.size)
    for i in range(angles_deg.size):
        proj = lower[i] + upper[i]
        scores[i] = float(np.dot(proj, proj))
    return scores


def smile_tilt_deg(region: np.ndarray) -> float:
    """SMILE's rotation (degrees, counter-clockwise, ``90 − θ``) for a region with vertical lines.

    The 0.2° grid is searched at 1° on every 4th pixel along the lines first, then in full
    within ±0.6° of the best (the score is smooth and single-peaked over ±5°), so the winner is
    the grid's argmax.
    """
    b = np.rot90(np.asarray(region, dtype=np.float64), 3)
    coarse = np.arange(0, _ANGLES_DEG.size, 5)
    best = int(coarse[int(np.argmax(_radon_scores(b, _ANGLES_DEG[coarse], every=4)))])
    fine = np.arange(max(0, best - 3), min(_ANGLES_DEG.size, best + 4))
    theta = float(_ANGLES_DEG[fine[int(np.argmax(_radon_scores(b, _ANGLES_DEG[fine])))]])
    return 90.0 - theta


def rotate_region(
    frame: np.ndarray, angle_deg: float, roi: tuple[int, int, int, int]
) -> np.ndarray:
    """The ``roi`` of ``skimage.transform.rotate(frame, angle, order=0)``, in SMILE's frame.

    SMILE rotates its (90°-turned) frame about the frame's centre by ``angle_deg``
    (counter-clockwise) with nearest-neighbour sampling and zeros outside, then cuts the
    region. Only the region's pixels are sampled here (same coordinates as skimage's warp).
    """
    from scipy import ndimage

    r0, r1, c0, c1 = roi
    b = np.rot90(np.asarray(frame, dtype=np.float64), 3)  # SMILE's frame
    rows_b, cols_b = b.shape
    cy, cx = (rows_b - 1) / 2.0, (cols_b - 1) / 2.0
    h = frame.shape[0]
    yo = np.arange(c0, c1, dtype=np.float64)[:, None] - cy  # region rows in SMILE's frame
    xo = np.arange(h - r1, h - r0, dtype=np.float64)[None, :] - cx
    a = np.deg2rad(angle_deg)
    cos_x, sin_x = np.cos(a) * xo, np.sin(a) * xo
    out = np.empty((yo.shape[0], xo.shape[1]))
    for q0, q1 in row_blocks(*out.shape):  # nearest-neighbour: every pixel on its own
        x_in = cos_x - np.sin(a) * yo[q0:q1] + cx
        y_in = sin_x + np.cos(a) * yo[q0:q1] + cy
        ndimage.map_coordinates(
            b, [y_in, x_in], output=out[q0:q1], order=0, mode="grid-constant", cval=0.0
        )
    return np.rot90(out, 1)


# scipy.signal.butter(8, 0.125): SMILE's profile filter (constants, so that measuring does not
# import scipy.signal, a second of start-up; a test compares them with scipy's).
_BUTTER_B = np.array(
    [
        8.881993221155298e-07,
        7.105594576924238e-06,
        2.4869581019234835e-05,
        4.973916203846967e-05,
        6.217395254808708e-05,
        4.973916203846967e-05,
        2.4869581019234835e-05,
        7.105594576924238e-06,
        8.881993221155298e-07,
    ]
)
_BUTTER_A = np.array(
    [
        1.0,
        -5.988424783605585,
        15.888379869893575,
        -24.35723742416695,
        23.570379365379882,
        -14.729383342367475,
        5.8001901435917675,
        -1.3150271205082897,
        0.13135067080953627,
    ]
)


def _lfilter(b: np.ndarray, a: np.ndarray, x: np.ndarray, zi: np.ndarray | None = None):
    """``scipy.signal.lfilter`` along axis 0 (direct form II transposed, ``a[0] = 1``).

    A scalar loop per column: for these short signals plain floats beat per-sample numpy.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        cols = [_lfilter(b, a, x[:, c], zi)[0] for c in range(x.shape[1])]
        return np.stack(cols, axis=1), None
    bb, aa = [float(v) for v in b], [float(v) for v in a]
    order = len(aa) - 1
    z = [0.0] * order if zi is None else [float(v) for v in zi]
    y = [0.0] * x.shape[0]
    for n, xn in enumerate(x.tolist()):
        yn = bb[0] * xn + z[0]
        for k in range(order - 1):
            z[k] = bb[k + 1] * xn + z[k + 1] - aa[k + 1] * yn
        z[order - 1] = bb[order] * xn - aa[order] * yn
        y[n] = yn
    return np.asarray(y), np.asarray(z)


@functools.lru_cache(maxsize=8)
def _gust_basis(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The initial-condition responses of Gustafsson's method for SMILE's filter and length
    ``n``: ``M`` (least-squares matrix) and ``W`` (its responses), as scipy builds them."""
    b, a = _BUTTER_B, _BUTTER_A
    order = len(a) - 1
    obs = np.zeros((n, order))
    zi = np.zeros(order)
    zi[0] = 1.0
    obs[:, 0] = _lfilter(b, a, np.zeros(n), zi=zi)[0]
    for k in range(1, order):
        obs[k:, k] = obs[:-k, 0]
    obsr = obs[::-1]
    big_s = _lfilter(b, a, obs[::-1])[0]
    sr = big_s[::-1]
    return np.hstack((sr - obs, obsr - big_s)), np.hstack((sr, obsr))


def _filtfilt_gust(x: np.ndarray) -> np.ndarray:
    """``scipy.signal.filtfilt(*butter(8, 0.125), x, method="gust")`` of a 1-D signal
    (Gustafsson's initial conditions over the whole signal), written out as scipy does it."""
    b, a = _BUTTER_B, _BUTTER_A
    m, w = _gust_basis(x.shape[0])
    y_f = _lfilter(b, a, x)[0]
    y_fb = _lfilter(b, a, y_f[::-1])[0][::-1]
    y_b = _lfilter(b, a, x[::-1])[0][::-1]
    y_bf = _lfilter(b, a, y_b)[0]
    ic_opt = np.linalg.lstsq(m, y_bf - y_fb, rcond=None)[0]
    return y_fb + np.einsum("nk,k->n", w, ic_opt)


def _find_peaks(x: np.ndarray) -> np.ndarray:
    """``scipy.signal.find_peaks(x)[0]``: local maxima, a flat top at its middle sample."""
    peaks = []
    i, last = 1, x.size - 1
    while i < last:
        if x[i - 1] < x[i]:
            ahead = i + 1
            while ahead < last and x[ahead] == x[i]:
                ahead += 1
            if x[ahead] < x[i]:
                peaks.append((i + ahead - 1) // 2)
                i = ahead
        i += 1
    return np.asarray(peaks, dtype=np.intp)


def _coarse_edges(median_norm: np.ndarray, bright_lines: bool) -> tuple[np.ndarray, np.ndarray]:
    """Integer leading/trailing edge columns from the summed median profile (SMILE step 3)."""
    return _coarse_edges_of_sum(median_norm.sum(axis=0), bright_lines)


def _coarse_edges_of_sum(
    image_sum: np.ndarray, bright_lines: bool
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_coarse_edges` from the median profile summed along the lines."""
    filtered = _filtfilt_gust(image_sum)
    derivative = np.gradient(image_sum)
    peaks = _find_peaks(np.abs(np.gradient(filtered)))
    locations = peaks + 1
    locations = locations[locations < image_sum.size]
    rising = derivative[locations] > 0
    falling = derivative[locations] < 0
    lead_all = locations[rising if bright_lines else falling]
    trail_all = locations[~rising if bright_lines else ~falling]
    leading, trailing = [], []
    for n in lead_all:
        later = trail_all[trail_all > n]
        if later.size:
            leading.append(int(n))
            trailing.append(int(later[0]))
    return np.asarray(leading, dtype=np.intp), np.asarray(trailing, dtype=np.intp)


def _polyval(coef: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Rows of ``coef`` (N, d+1, highest power first) evaluated at ``u`` (N,)."""
    val = np.zeros_like(u)
    for c in coef.T:
        val = val * u + c
    return val


def _nearest_real_root(coef: np.ndarray, centre: float) -> np.ndarray:
    """Real root of each row's polynomial nearest ``centre`` (NaN if it has no real root).

    Sign changes on a 1/4-px grid within ±16 px of ``centre`` bracket the roots; the bracket
    nearest ``centre`` is refined by bisection and Newton steps. Rows without a crossing there
    (rare: no crossing near the edge) take all roots from ``np.roots``, as SMILE does, and keep
    the real one nearest ``centre`` (a root is real when its imaginary part is exactly 0).
    """
    n, step = coef.shape[0], 0.25
    grid = centre + np.arange(-16.0, 16.0 + step / 2, step)
    vals = np.einsum("nk,gk->ng", coef, np.vander(grid, coef.shape[1]))  # (N, G), no BLAS
    pos = vals > 0
    cross = pos[:, :-1] != pos[:, 1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        est = grid[:-1] + step * vals[:, :-1] / (vals[:, :-1] - vals[:, 1:])
    dist = np.where(cross, np.abs(est - centre), np.inf)
    j = np.argmin(dist, axis=1)
    found = np.isfinite(dist[np.arange(n), j])
    out = np.full(n, np.nan)
    rows = np.nonzero(found)[0]
    a, b = grid[j[rows]], grid[j[rows] + 1]
    c = coef[rows]
    sign_a = _polyval(c, a) > 0
    for _ in range(24):
        mid = 0.5 * (a + b)
        left = (_polyval(c, mid) > 0) != sign_a
        b = np.where(left, mid, b)
        a = np.where(left, a, mid)
    u = 0.5 * (a + b)
    deriv = c[:, :-1] * np.arange(c.shape[1] - 1, 0, -1)
    for _ in range(2):
        d = _polyval(deriv, u)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.clip(np.where(d != 0, u - _polyval(c, u) / d, u), a, b)
    out[rows] = u
    for r in np.nonzero(~found)[0]:
        roots = np.roots(coef[r])
        real = roots[roots.imag == 0].real
        if real.size:
            out[r] = real[np.argmin(np.abs(real - centre))]
    return out


def _subpixel(
    region: np.ndarray, edges: np.ndarray, threshold: float, levels: tuple[float, float]
) -> np.ndarray:
    """SMILE step 4 for every edge and row: (E, H) columns, NaN where no real crossing.

    ``norm = (region - lo) / (hi - lo)`` is formed only for each edge's 16 columns."""
    lo_level, hi_level = levels
    h, w = region.shape
    out = np.full((edges.size, h), np.nan)
    for k, edge in enumerate(edges):
        start = int(max(0, edge - _EDGE_RANGE_PX))
        end = int(min(edge + _EDGE_RANGE_PX, w))
        x = np.arange(start, end, dtype=np.float64)
        if x.size <= _DEGREE:
            continue
        # np.polyfit's column-scaled least squares, in coordinates centred on the edge.
        vander = np.vander(x - edge, _DEGREE + 1)
        scale = np.sqrt((vander * vander).sum(axis=0))
        proj = np.linalg.pinv(vander / scale) / scale[:, None]
        norm = np.asarray(region[:, start:end], dtype=np.float64) - lo_level
        norm /= hi_level - lo_level
        coef = np.einsum("hm,km->hk", norm, proj)  # (H, 5), highest first
        coef[:, -1] -= threshold
        r = _nearest_real_root(coef, 0.5 * (start + end) - edge) + edge
        out[k] = np.clip(r, start, end)
    return out


def _fill_extrapolate(pos: np.ndarray) -> np.ndarray:
    """SMILE's consolidation: NaN rows by linear interpolation, linearly extrapolated."""
    out = pos.copy()
    rows = np.arange(pos.shape[1], dtype=np.float64)
    for e in range(pos.shape[0]):
        good = np.isfinite(pos[e])
        if good.all() or good.sum() < 2:
            continue
        xg, yg = rows[good], pos[e, good]
        filled = np.interp(rows, xg, yg)
        lo, hi = rows < xg[0], rows > xg[-1]
        filled[lo] = yg[0] + (rows[lo] - xg[0]) * (yg[1] - yg[0]) / (xg[1] - xg[0])
        filled[hi] = yg[-1] + (rows[hi] - xg[-1]) * (yg[-1] - yg[-2]) / (xg[-1] - xg[-2])
        out[e] = np.where(good, pos[e], filled)
    return out


@dataclass
class SmileEdges:
    """Edges found by the SMILE pipeline, in region columns per region row, and the integer
    coarse edges each line was paired from (step 3)."""

    leading_px: np.ndarray
    trailing_px: np.ndarray
    gaps_leading: np.ndarray
    gaps_trailing: np.ndarray
    levels: tuple[float, float]
    coarse_leading: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, np.intp))
    coarse_trailing: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, np.intp))


def smile_edges(region: np.ndarray, *, bright_lines: bool, threshold: float = 0.5) -> SmileEdges:
    """SMILE steps 2-4 on a (rotated) region with vertical lines; see the module docstring."""
    med = median5_compact(region)  # the medians in the image's own grey levels (uint8)
    lo, hi = smile_levels(med)
    if not hi > lo:
        raise ValueError(f"no contrast after 5x5 median filtering (min = max = {lo:g})")
    # The normalised image (region - lo) / (hi - lo) and its median are only summed along the
    # lines (step 3) and read 16 columns at a time (step 4): both are formed band by band.
    image_sum = None
    h, w = med.shape
    if lo == 0.0:
        for r0, r1 in row_blocks(h, w):  # med / hi: the zero padding maps to itself
            image_sum = _accumulate_rows(image_sum, med[r0:r1].astype(np.float64) / hi)
    else:
        from scipy import ndimage

        del med
        for r0, r1 in row_blocks(h, w):  # the median of the normalised image, zero padded
            g0, g1 = max(0, r0 - 2), min(h, r1 + 2)
            norm = np.asarray(region[g0:g1], dtype=np.float64) - lo
            norm /= hi - lo
            band = ndimage.median_filter(norm, 5, mode="constant", cval=0.0)
            image_sum = _accumulate_rows(image_sum, band[r0 - g0 : r1 - g0])
    assert image_sum is not None
    lead0, trail0 = _coarse_edges_of_sum(image_sum, bright_lines)
    lead = _subpixel(region, lead0, threshold, (lo, hi))
    trail = _subpixel(region, trail0, threshold, (lo, hi))
    gaps_l, gaps_t = ~np.isfinite(lead), ~np.isfinite(trail)
    lead = _fill_extrapolate(lead)
    trail = _fill_extrapolate(trail)
    return SmileEdges(lead, trail, gaps_l, gaps_t, (lo, hi), lead0, trail0)
