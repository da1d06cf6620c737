"""Edge detection for vertical lines: coarse edges from the mean profile, sub-pixel edges per row.

Coordinates: positions are image columns (pixel ``j`` covers ``[j − 1/2, j + 1/2]``), one per
image row. An edge is *rising* when the intensity increases with ``x`` across it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .preprocess import BLOCK_ELEMENTS, _accumulate_rows

__all__ = ["EdgeMethod", "coarse_edges", "edge_spread_px", "fill_gaps", "subpixel_edges"]

EdgeMethod = Literal["polynomial", "linear", "threshold"]

_GRID_PER_PX = 4


def _crossings(values: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear-interpolated threshold crossings of a 1-D profile and whether each is rising."""
    d = values - threshold
    pos = d >= 0
    i = np.nonzero(pos[:-1] != pos[1:])[0]
    x = i + d[i] / (d[i] - d[i + 1])
    return x, pos[i + 1]


def coarse_edges(
    x_px: np.ndarray,
    profile: np.ndarray,
    *,
    tone: Literal["bright", "dark"] = "bright",
    threshold: float = 0.5,
    smooth_px: float = 1.0,
    min_feature_px: float = 2.0,
    levels: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Leading and trailing edges of every complete line in a mean profile across the lines.

    The profile is smoothed (Gaussian, ``smooth_px``), rescaled so that ``levels`` (default: its
    1st/99th percentiles) become 0/1, and cut at ``threshold``. A profile already normalised to
    the image's plateaus takes ``levels=(0, 1)``: its percentiles follow whatever is brightest,
    and a bright artefact on a few columns (a restoration's border) lifts the 99th percentile
    far above the lines, so that the cut lands near their tops and the lines look narrow. For bright lines the leading edge is rising (dark → bright with
    increasing ``x``) and the trailing edge falling; for dark lines the reverse. Pairs of
    crossings closer than ``min_feature_px`` are noise and removed. A leading edge is paired
    with the next crossing; lines cut by the profile's ends are not returned.

    Returns
    -------
    (leading_px, trailing_px) : paired positions (same length, ``leading < trailing``).
    """
    p = gaussian_filter1d(np.asarray(profile, dtype=np.float64), smooth_px, mode="nearest")
    lo, hi = np.percentile(p, [1.0, 99.0]) if levels is None else levels
    if not hi > lo:
        return np.empty(0), np.empty(0)
    xs, rising = _crossings((p - lo) / (hi - lo), threshold)
    # Drop pairs of crossings that are too close (noise wiggles around the threshold).
    keep = np.ones(xs.size, dtype=bool)
    changed = True
    while changed and xs.size > 1:
        changed = False
        idx = np.nonzero(keep)[0]
        gaps = np.diff(xs[idx])
        j = np.nonzero(gaps < min_feature_px)[0]
        if j.size:
            keep[idx[j[0]]] = keep[idx[j[0] + 1]] = False
            changed = True
    xs, rising = xs[keep], rising[keep]
    lead_is = rising if tone == "bright" else ~rising
    leading, trailing = [], []
    for k in range(xs.size - 1):
        if lead_is[k] and not lead_is[k + 1]:
            leading.append(xs[k])
            trailing.append(xs[k + 1])
    x_of = np.asarray(x_px, dtype=np.float64)
    idx_axis = np.arange(x_of.size, dtype=np.float64)
    return np.interp(leading, idx_axis, x_of), np.interp(trailing, idx_axis, x_of)


def _nearest_crossing(
    values: np.ndarray, grid: np.ndarray, target: np.ndarray, rising: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Crossing of zero with the given polarity nearest ``target``, per row of ``values``.

    Returns the linear-interpolated position (NaN when none) and the bracket's left grid index.
    """
    left, right = values[:, :-1], values[:, 1:]
    ok = (left < 0) & (right >= 0) if rising else (left >= 0) & (right < 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = left / (left - right)
    pos = grid[:-1][None, :] + frac * (grid[1] - grid[0])
    dist = np.where(ok, np.abs(pos - target[:, None]), np.inf)
    j = np.argmin(dist, axis=1)
    rows = np.arange(values.shape[0])
    found = np.isfinite(dist[rows, j])
    return np.where(found, pos[rows, j], np.nan), j


def _polyval(coef: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Value and derivative of increasing-order polynomials ``coef`` (N, d+1) at ``u`` (N,)."""
    val = np.zeros_like(u)
    der = np.zeros_like(u)
    for c in coef.T[::-1]:
        der = der * u + val
        val = val * u + c
    return val, der


def subpixel_edges(
    image: np.ndarray,
    predicted_px: np.ndarray,
    *,
    rising: np.ndarray | bool,
    half_window_px: int,
    method: EdgeMethod = "polynomial",
    degree: int = 4,
    threshold: float = 0.5,
) -> np.ndarray:
    """Sub-pixel edge position in every row, vectorised over rows (loop over edges).

    ``predicted_px`` (E, H) gives each edge's expected column per row. Around its nearest pixel
    a window of ``2 half_window_px + 1`` pixels is taken from the normalised image (shifted
    inwards at the image border) and

    * ``'polynomial'``: a least-squares polynomial of ``degree`` (SMILE: 4) is fitted and its
      ``threshold`` crossing of the expected polarity nearest the prediction is found (a
      0.25-px scan, then Newton steps inside the bracket);
    * ``'linear'``: the same with ``degree = 1``;
    * ``'threshold'``: the crossing of the raw pixel values, linearly interpolated.

    Rows without such a crossing in the window are NaN (gaps).

    Returns
    -------
    (E, H) positions in image columns.
    """
    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    pred = np.atleast_2d(np.asarray(predicted_px, dtype=np.float64))
    if pred.shape[1] != h:
        raise ValueError(f"predicted_px must have one column per image row ({h}), got {pred.shape}")
    rising = np.broadcast_to(np.asarray(rising, dtype=bool), pred.shape[:1])
    hw = int(half_window_px)
    if not 1 <= hw <= (w - 1) // 2:
        raise ValueError(f"half_window_px must be in [1, {(w - 1) // 2}], got {half_window_px}")
    if method == "linear":
        degree = 1
    elif method not in ("polynomial", "threshold"):
        raise ValueError(f"method must be 'polynomial', 'linear' or 'threshold', got {method!r}")
    if method != "threshold" and not 1 <= degree <= 2 * hw:
        raise ValueError(f"degree must be in [1, {2 * hw}] for this window, got {degree}")
    ys = np.arange(h)
    base = np.clip(np.rint(pred), hw, w - 1 - hw).astype(np.intp)
    offsets = np.arange(-hw, hw + 1)
    out = np.full(pred.shape, np.nan)
    u_px = offsets.astype(np.float64)
    if method != "threshold":
        vander = np.vander(u_px / hw, degree + 1, increasing=True)
        proj = np.linalg.pinv(vander)  # (d+1, M)
        grid = np.linspace(-hw, hw, 2 * hw * _GRID_PER_PX + 1)
        vander_grid = np.vander(grid / hw, degree + 1, increasing=True)
    for e in range(pred.shape[0]):
        seg = img[ys[:, None], base[e][:, None] + offsets[None, :]] - threshold  # (H, M)
        target = pred[e] - base[e]
        if method == "threshold":
            pos, _ = _nearest_crossing(seg, u_px, target, bool(rising[e]))
        else:
            # einsum, not BLAS: threaded BLAS on these thin products is slow on a busy machine.
            coef = np.einsum("hm,km->hk", seg, proj)  # (H, d+1), polynomial in u = x / hw
            values = np.einsum("hk,gk->hg", coef, vander_grid)
            pos, j = _nearest_crossing(values, grid, target, bool(rising[e]))
            ok = np.isfinite(pos)
            lo_b, hi_b = grid[j], grid[np.minimum(j + 1, grid.size - 1)]
            u = np.where(ok, pos, 0.0) / hw
            for _ in range(3):
                val, der = _polyval(coef, u)
                with np.errstate(divide="ignore", invalid="ignore"):
                    step = np.where(der != 0, val / der, 0.0)
                u = np.clip(u - step, lo_b / hw, hi_b / hw)
            pos = np.where(ok, u * hw, np.nan)
        out[e] = base[e] + pos
    return out


def fill_gaps(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaN rows of each edge by linear interpolation along the rows (constant at the ends).

    Returns the filled positions and the boolean gap mask. Edges with no valid row stay NaN.
    """
    pos = np.array(positions, dtype=np.float64, copy=True)
    gaps = ~np.isfinite(pos)
    rows = np.arange(pos.shape[1], dtype=np.float64)
    for e in np.nonzero(gaps.any(axis=1))[0]:
        good = ~gaps[e]
        if good.any():
            pos[e, gaps[e]] = np.interp(rows[gaps[e]], rows[good], pos[e, good])
    return pos, gaps


def mean_sampled_profile(
    img: np.ndarray, pos: np.ndarray, rows: np.ndarray, sign: np.ndarray, t: np.ndarray
) -> np.ndarray | None:
    """Mean over edges and rows of ``img`` sampled (linear interpolation) at
    ``pos[e, k] + sign[e] · t`` in row ``rows[k]``, over the (edge, row) pairs whose samples all
    lie inside the image; None when none does.

    A few edges at a time (no (edges, rows, samples) arrays of the whole image), the rows of
    samples summed in the order ``vals.mean(axis=0)`` sums them: the same values bit for bit.
    """
    n_edges, n_rows = pos.shape
    per = max(1, BLOCK_ELEMENTS // max(1, n_rows * t.size))
    acc, n = None, 0
    for e0 in range(0, n_edges, per):
        p = pos[e0 : e0 + per]
        x = p[:, :, None] + sign[e0 : e0 + per, None, None] * t[None, None, :]
        ok = np.isfinite(x).all(axis=2) & (x.min(axis=2) >= 0) & (x.max(axis=2) <= img.shape[1] - 1)
        x = x[ok]
        if x.shape[0] == 0:
            continue
        r = np.broadcast_to(rows[None, :], p.shape)[ok]
        i0 = np.clip(np.floor(x).astype(np.intp), 0, img.shape[1] - 2)
        frac = x - i0
        vals = img[r[:, None], i0] * (1 - frac) + img[r[:, None], i0 + 1] * frac
        acc = _accumulate_rows(acc, vals)
        n += vals.shape[0]
    return None if acc is None else acc / n


def edge_spread_px(
    image: np.ndarray,
    positions_px: np.ndarray,
    rising: np.ndarray | bool,
    half_range_px: int,
    *,
    row_step: int = 4,
) -> float:
    """Gaussian-equivalent width ``σ`` (px) of the mean edge profile, aligned on each row's edge.

    The image is sampled (linear interpolation) at ``x_e(y) + t``, ``|t| ≤ half_range_px``, for
    every edge and every ``row_step``-th row; falling edges are mirrored. For an erf-shaped
    edge of width ``σ`` the 20 %–80 % rise of the mean profile is ``2 · 0.8416 σ``.
    Returns NaN when the profile has no usable rise.
    """
    img = np.asarray(image, dtype=np.float64)
    pos = np.atleast_2d(np.asarray(positions_px, dtype=np.float64))[:, ::row_step]
    rows = np.arange(0, img.shape[0], row_step)[: pos.shape[1]]
    sign = np.where(np.broadcast_to(np.asarray(rising, dtype=bool), pos.shape[:1]), 1.0, -1.0)
    t = np.arange(-half_range_px, half_range_px + 0.25, 0.25)
    prof = mean_sampled_profile(img, pos, rows, sign, t)
    if prof is None:
        return float("nan")
    lo, hi = prof.min(), prof.max()
    if not hi > lo:
        return float("nan")
    p = (prof - lo) / (hi - lo)
    x20, _ = _crossings(p, 0.2)
    x80, _ = _crossings(p, 0.8)
    if x20.size == 0 or x80.size == 0:
        return float("nan")
    centre = np.argmin(np.abs(t))
    a = x20[np.argmin(np.abs(x20 - centre))]
    b = x80[np.argmin(np.abs(x80 - centre))]
    return float(abs(b - a) * 0.25 / (2 * 0.8416))
