"""The ``truth`` convention: edges at the true half-level between the image's own levels.

1. levels: the space and line plateaus (:func:`~sem_metrology.preprocess.plateau_levels`), so
   the 0.5 threshold is the true half-level (SMILE's zero-padded median puts it lower);
2. tilt by projection sharpness (no resampling: windows follow the tilted lines);
3. coarse edges from the mean profile along the lines, cut at the same half-level; lines whose
   edges come within 2 px of the image border are dropped;
4. a sub-pixel crossing per row (degree-4 polynomial by default), twice: the second pass
   centres each row's window on its first-pass edge and narrows it to the edge's own width;
5. bloom: a bright (or dark) ridge on the edges lifts the profile around them and moves the
   half-level crossing into the space. The mean edge profile is fitted with a blurred step
   plus a ridge near it (its own centre: on the edge, or inside the line where the sidewall
   shines); when the ridge is significant, every edge is moved by the offset between the
   step's centre and the half-level crossing (``edge_offset_px``). That fit sees ±6 px about
   the edges and starts from the crossing: a ridge as strong as the line-to-space contrast
   can fill the window or hold the fit near the crossing. :func:`window_doubt` tells when;
   :func:`bloom_fit` then fits the whole edge, from the middle of the space to the middle of
   the line, from several starts, and is used where its step is sharper than the ridge (a
   step as wide as the ridge trades its centre against the ridge's); where step centres 1 px
   or more apart fit about equally well the edge is not located (``bloom_uncertainty_px``).

Rims brighter than the line-to-space contrast are the image's bright phase and set its
plateaus; steps 3-5 then cut each rim out as a line. :func:`bloom_rims` tells such "lines" by
the stretches between them, alternately a line and a space; ``sem_metrology.lines`` then runs
the steps again at those stretches' levels, the edges placed by :func:`rim_offset_px`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .edges import (
    coarse_edges,
    edge_spread_px,
    fill_gaps,
    mean_sampled_profile,
    subpixel_edges,
)
from .preprocess import estimate_tilt, sheared_profile

if TYPE_CHECKING:
    from .lines import LineOptions

__all__ = [
    "BloomFit",
    "BloomRims",
    "TruthEdges",
    "bloom_fit",
    "bloom_offset_px",
    "bloom_rims",
    "rim_offset_px",
    "truth_edges",
    "window_doubt",
]

#: Largest distance (px) between the bloom ridge's centre and the edge's step centre in the fit.
MAX_RIDGE_SHIFT_PX = 3.0
#: The stretches between the lines found (or between their gaps) alternate in level, every
#: other one brighter than every one between them, by at least this share of their contrast
#: to the lines found: those are edge rims (bloom), two per line, and the stretches alternate
#: between lines and spaces. Measured: rims read as lines 0.058-0.45 (rims 2-20 x the
#: line-to-space contrast); lines read right 0.020 or less (generated lines with bloom,
#: ``sem_physics.make_sample`` lines and resist), pitch walk 0.0002 or less.
RIM_ALTERNATION = 0.04
#: Bloom fits: two step centres fit a mean edge profile about equally well when their Δχ² is
#: at most this (the residual of the best fit taken as the noise, a pixel's 4 samples as one).
#: :func:`window_doubt` doubts :func:`bloom_offset_px` when another local minimum
#: :data:`BLOOM_PROBE_PX` or more away fits better or within it; :func:`bloom_fit`'s step
#: centres that far from its best and within it leave the edge unlocated (a CD bound).
BLOOM_DCHI2 = 4.0
#: Distance (px) between step centres from which they count as different (CD ± 2 px).
BLOOM_PROBE_PX = 1.0
#: Rows on either side whose mean edge aligns a row in the whole-edge fit. The row itself is left
#: out: aligned on its own noisy edge, a row's profile crosses the half-level there whatever the
#: ridge, and at noise 0.35-0.5 x the contrast the fit found the step at the crossing (bloom
#: offsets of 1-3 px read as 0-0.2 px).
NEIGHBOUR_ROWS = 2
#: The bloom ridge lies on the edge or inside the line (the sidewall and the top corner shine):
#: its centre at most this far (px) from the step's centre towards the space. With 1 px, rims
#: twice the contrast, 1 px wide and 1 px inside 12-px lines fitted with the step at the ridge's
#: inner foot (the ridge outside): CD 3 nm narrow.
MAX_RIDGE_OUTSIDE_PX = 0.5
#: The whole-edge fit is used only where its step is sharp (Gaussian σ at most this, px, and at
#: most :data:`MAX_STEP_TO_RIDGE` of the ridge's σ) and its ridge at most
#: :data:`MAX_RIDGE_TO_STEP` times the step's height: a step about as wide as the ridge trades
#: its centre against the ridge's. Measured: rims 1-3 x the contrast, 1-2.5 px wide, on sharp
#: generated lines fit σ 0.56-0.71 px (0.24-0.57 of the ridge's), ridges 0.9-2.7 x the step;
#: on ``sem_physics.make_sample`` lines (ridge 1 px inside, Gaussian blur 0-2 px) σ 1.17-3.6 px
#: (0.68-1.2 of the ridge's), where the fit moved CDs 2-4 nm the wrong way; dark lines blurred
#: by 2 px, rims twice the contrast, 12 px wide: σ 0.98 px, a ridge 19 x the step, CD 4.5 nm
#: narrow (before 3.7 nm wide).
MAX_STEP_SIGMA_PX = 0.8
#: See :data:`MAX_STEP_SIGMA_PX`.
MAX_STEP_TO_RIDGE = 0.6
#: See :data:`MAX_STEP_SIGMA_PX`.
MAX_RIDGE_TO_STEP = 5.0


@dataclass
class TruthEdges:
    """Edges of the truth pipeline (columns per row) or the reason there are none."""

    leading_px: np.ndarray | None = None
    trailing_px: np.ndarray | None = None
    gaps_leading: np.ndarray | None = None
    gaps_trailing: np.ndarray | None = None
    slope_px_per_row: float = 0.0
    edge_window_px: int | None = None
    n_dropped: int = 0
    edge_offset_px: float = 0.0
    reason: str | None = None
    #: Bloom: distance (px) from the step centre used to the farthest one fitting about as well
    #: (:func:`bloom_fit`); 0 when the edge is located to better than BLOOM_PROBE_PX.
    bloom_uncertainty_px: float = 0.0


@dataclass(frozen=True)
class BloomRims:
    """Edge rims (bloom) cut out as lines, or as the gaps between the lines found: the levels of
    the stretches between the rims (normalised units of the profile they were read from), how
    much those alternate, and what the rims are."""

    low_level: float  # the darker stretches between the rims: spaces of bright lines
    high_level: float  # the brighter ones
    alternation: float
    n_rims: int
    bright: bool  # rims brighter than the stretches between them (bloom; dark in an inverse)
    found: bool  # the lines found are the rims (else the gaps between them are)


def _middle_mean(x: np.ndarray, profile: np.ndarray, a: float, b: float) -> float:
    """Mean of ``profile`` (at columns ``x``) over the middle third of ``[a, b]``, or at its
    centre when no column lies there."""
    lo, hi = a + (b - a) / 3.0, b - (b - a) / 3.0
    sel = (x >= lo) & (x <= hi)
    if sel.any():
        return float(profile[sel].mean())
    return float(np.interp(0.5 * (a + b), x, profile))


def bloom_rims(
    x_prof: np.ndarray, profile: np.ndarray, lead: np.ndarray, trail: np.ndarray
) -> BloomRims | None:
    """The rims and the levels between them when the lines found are edge rims, else None.

    Edge bloom brighter than the line-to-space contrast makes the rims the image's bright
    phase: the plateau levels are the rims' and their half-level cuts each rim out as a
    "line" (a generated image of 14 lines at 70 on spaces at 60 with rims of 80 grey levels
    read as 28 lines of CD 1 nm), or, for dark lines, each stretch between two rims. The
    stretches between the rims are alternately a line and a space; between lines read right
    (mean columns ``lead``/``trail``, four or more) the gaps are all spaces. The lines found,
    or their gaps, are rims when every other stretch between them differs from every one
    between those by :data:`RIM_ALTERNATION` of the contrast to the rims or more (a clean
    alternation). The rims may be bright (bloom) or dark (an inverted image).
    """
    n = int(lead.size)
    if n < 4 or x_prof.size < 8:
        return None
    order = np.argsort(lead + trail)
    lead, trail = lead[order], trail[order]
    p = np.asarray(profile, dtype=np.float64)
    found = np.array([_middle_mean(x_prof, p, a, b) for a, b in zip(lead, trail, strict=True)])
    gaps = np.array([_middle_mean(x_prof, p, trail[i], lead[i + 1]) for i in range(n - 1)])
    for rims_found, (rims, between) in ((True, (found, gaps)), (False, (gaps, found))):
        contrast = abs(float(np.median(rims) - np.median(between)))
        even, odd = between[0::2], between[1::2]
        if contrast <= 0 or min(even.size, odd.size) < 1 or between.size < 3:
            continue
        high, low = (even, odd) if even.mean() > odd.mean() else (odd, even)
        if not high.min() > low.max():
            continue  # not alternating: spaces alike (lines read right, pitch walk)
        alternation = float(high.mean() - low.mean()) / contrast
        if alternation < RIM_ALTERNATION:
            continue
        bright = bool(np.median(rims) > np.median(between))
        return BloomRims(
            float(np.median(low)),
            float(np.median(high)),
            alternation,
            int(rims.size),
            bright,
            rims_found,
        )
    return None


def _mean_edge_profile(
    norm: np.ndarray, positions: np.ndarray, rising: np.ndarray, half_range_px: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean normalised profile across all edges (falling ones mirrored), every 4th row."""
    pos = positions[:, ::4]
    rows = np.arange(0, norm.shape[0], 4)[: pos.shape[1]]
    sign = np.where(rising, 1.0, -1.0)
    t = np.arange(-half_range_px, half_range_px + 0.25, 0.25)
    prof = mean_sampled_profile(norm, pos, rows, sign, t)  # a few edges at a time
    if prof is None:
        return t, np.full(t.size, np.nan)
    return t, prof


@dataclass(frozen=True)
class _WindowFit:
    """:func:`bloom_offset_px`'s fit: the finite samples, the bounds, the solution, and why
    there is no offset (None: there is one)."""

    t: np.ndarray
    p: np.ndarray
    lo: list[float]
    hi: list[float]
    sol: Any = None
    why_none: str | None = None


def _window_model(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A blurred step centred on ``c`` and a ridge ``d`` from it (:func:`bloom_offset_px`)."""
    from scipy.special import ndtr

    a, b, c, s, amp, w, d = x
    return a + b * ndtr((t - c) / s) + amp * np.exp(-0.5 * ((t - c - d) / w) ** 2)


def _window_fit(t: np.ndarray, profile: np.ndarray, min_overshoot: float) -> _WindowFit | None:
    """The fit of :func:`bloom_offset_px` (None: too few samples, or no contrast)."""
    from scipy.optimize import least_squares

    ok = np.isfinite(profile)
    if ok.sum() < 12:
        return None
    t, p = t[ok], profile[ok]
    far = np.abs(t) > 0.6 * np.abs(t).max()
    dark, bright = float(np.median(p[far & (t < 0)])), float(np.median(p[far & (t > 0)]))
    if not bright > dark:
        return None
    span = float(t[-1] - t[0])
    shift = min(MAX_RIDGE_SHIFT_PX, span / 4)
    lo = [-np.inf, 1e-6, -span / 4, 0.2, 0.0, 0.3, -shift]
    hi = [np.inf, np.inf, span / 4, span / 2, np.inf, span / 2, shift]
    if p.max() - bright < min_overshoot * (bright - dark):
        # no ridge above the bright plateau: nothing to correct
        return _WindowFit(t, p, lo, hi, why_none="no ridge above the window's bright end")
    x0 = [float(p[0]), float(p[-1] - p[0]), 0.0, 1.5, 0.1, 1.5, 0.0]
    try:
        sol = least_squares(lambda x: _window_model(x, t) - p, x0, bounds=(lo, hi))
    except ValueError:
        return _WindowFit(t, p, lo, hi, why_none="the fit failed")
    b, amp = sol.x[1], sol.x[4]
    if not sol.success or amp < 0.05 * b:
        return _WindowFit(t, p, lo, hi, sol, why_none="no ridge fitted")
    return _WindowFit(t, p, lo, hi, sol)


def _window_offset(fit: _WindowFit | None, threshold: float) -> float:
    """:func:`bloom_offset_px` of a fit (0 without one)."""
    if fit is None or fit.why_none is not None:
        return 0.0
    t, sol = fit.t, fit.sol
    # Crossing of the measured threshold on the fitted profile, nearest 0 (where the edges are).
    fine = np.linspace(t[0], t[-1], 4 * t.size)
    cross = _crossing_nearest_zero(fine, np.interp(fine, t, _window_model(sol.x, t)) - threshold)
    return 0.0 if cross is None else float(sol.x[2] - cross)


def _crossing_nearest_zero(x: np.ndarray, vals: np.ndarray) -> float | None:
    """Where ``vals`` (sampled at ``x``) changes sign nearest ``x = 0`` (the edge), linearly
    interpolated, or None without a sign change: the fitted profile's threshold crossing."""
    idx = np.nonzero(np.signbit(vals[:-1]) != np.signbit(vals[1:]))[0]
    if idx.size == 0:
        return None
    i = idx[np.argmin(np.abs(x[idx]))]
    return float(x[i] + (x[i + 1] - x[i]) * vals[i] / (vals[i] - vals[i + 1]))


def bloom_offset_px(
    t: np.ndarray, profile: np.ndarray, threshold: float = 0.5, min_overshoot: float = 0.1
) -> float:
    """Offset (px, towards the bright side) from the threshold crossing to the step's centre.

    Bloom shows as an overshoot of the profile above its bright plateau; without one (less than
    ``min_overshoot`` of the contrast: blur ringing, noise) the offset is 0, the crossing being
    already at the centre of a symmetric edge. With one, the profile is fitted with
    ``a + b Φ((t − c)/s) + A exp(−(t − c − d)²/(2 w²))`` (a blurred step centred on ``c`` and a
    bright ridge, ``A ≥ 0``, centred ``d`` from it, ``|d| ≤ MAX_RIDGE_SHIFT_PX``; SEM edge bloom
    is bright) and the offset is ``c`` minus the threshold crossing. A ridge forced onto the
    step's centre (``d = 0``) pulls that centre towards itself: with the ridge 1 px inside the
    line (``sem_physics.make_sample``'s lines), CDs came out 1.4-1.6 nm narrow; with ``d`` free,
    within 0.35 nm. The fit starts at the crossing and sees only ``t``: :func:`window_doubt`
    tells when that is not enough (the ``truth`` convention then fits the whole edge,
    :func:`bloom_fit`).
    """
    return _window_offset(_window_fit(t, profile, min_overshoot), threshold)


def window_doubt(t: np.ndarray, profile: np.ndarray, min_overshoot: float = 0.1) -> str | None:
    """Why :func:`bloom_offset_px` cannot be trusted on this profile, or None.

    Its fit found no ridge (a ridge filling the window leaves no plateau above which to see
    one: rims as strong as the contrast and 2.5 px wide gave CDs 5-8 nm wide); its step centre
    lies at the window's end, or the ridge's distance from it or a width at its bound (rims
    twice the contrast on 12-px lines: the ridge put 3 px inside the line, CDs 3-4 nm wide);
    or, from other starts (step centres 0-3 px from the crossing, the ridge on the step or at
    the profile's peak) and with the step centre held :data:`BLOOM_PROBE_PX` or more away,
    another local minimum (not at a bound) fits better or within :data:`BLOOM_DCHI2` as well
    (started at the crossing, the fit can stop at the ridge's outer foot with the ridge inside
    the line: CDs 2.5-4 nm wide).
    """
    fit = _window_fit(t, profile, min_overshoot)
    return None if fit is None else _window_fit_doubt(fit)


def _window_fit_doubt(fit: _WindowFit) -> str | None:
    """:func:`window_doubt` of a fit."""

    if fit.why_none is not None:
        return fit.why_none
    t, p, sol = fit.t, fit.p, fit.sol
    c, c_max = float(sol.x[2]), float(fit.hi[2])
    if abs(c) >= c_max - 0.01:
        return "the step's centre at the window's end"
    if any(abs(sol.x[k]) >= fit.hi[k] - 0.01 for k in (3, 5, 6)):
        return "the ridge as far from the step, or a width as large, as the fit allows"
    peak = float(t[int(np.argmax(p))])

    def run(c_lo: float, c_hi: float) -> Any:
        lo, hi = np.array(fit.lo), np.array(fit.hi)
        lo[2], hi[2] = c_lo, c_hi
        starts = [c0 for c0 in (0.0, 1.0, 2.0, 3.0, 0.5 * (c_lo + c_hi)) if c_lo <= c0 <= c_hi]
        amp0 = float(p.max() - p[-1]) + 0.05
        x0s = [
            np.array([p[0], p[-1] - p[0], c0, 1.0, amp0, 1.5, d0])
            for c0 in starts
            for d0 in (0.0, peak - c0)
        ]
        x0s += [np.r_[sol.x[:2], c0, sol.x[3:6], sol.x[6] + c - c0] for c0 in starts]
        return _best_fit(
            lambda x: _window_model(x, t) - p,
            lambda x: _step_ridge_jac(x, t, ((0.0, 1.0),), 1.0),
            x0s,
            lo,
            hi,
        )

    fits = [run(-c_max, c_max), run(c + BLOOM_PROBE_PX, c_max), run(-c_max, c - BLOOM_PROBE_PX)]
    fits = [f for f in fits if f is not None]
    least = min([sol.cost] + [f.cost for f in fits])
    scale = max(t.size / 4.0 - sol.x.size, 1.0) / max(float(least), 1e-300)
    for f in fits:
        other = float(f.x[2])
        inner = abs(other) < c_max - 0.01 and abs(abs(other - c) - BLOOM_PROBE_PX) > 0.01
        if abs(other - c) >= BLOOM_PROBE_PX and inner and (f.cost - least) * scale <= BLOOM_DCHI2:
            return f"a step centre {other - c:+.2g} px away fits as well or better"
    return None


def _end_levels(p: np.ndarray) -> tuple[float, float]:
    """(dark, bright): the medians of the first and last tenth (at least 3 samples) of a mean
    edge profile reaching the middle of either phase, their levels."""
    n_end = max(3, p.size // 10)
    return float(np.median(p[:n_end])), float(np.median(p[-n_end:]))


def rim_offset_px(t: np.ndarray, profile: np.ndarray, threshold: float = 0.5) -> float:
    """Offset (px, towards the bright side) from the threshold crossing to the step's centre
    under a bloom rim brighter than the line-to-space contrast.

    The model of :func:`bloom_offset_px` (a blurred step and a ridge), fitted over a profile
    reaching the middle of the space and of the line on either side (``t``), with the ridge's
    centre free on the bright side of the step (at most :data:`MAX_RIDGE_OUTSIDE_PX` outside
    it, as in :func:`bloom_fit`) and the fit started from the ridge's peak at several step
    centres (the best fit kept): the step is a small part of such a profile, and a fit started
    as for weak bloom stays near the crossing (CD 2-5 nm too wide on generated lines). The rim
    hides the step: the offset is uncertain by about the rim's width. Without the bound on the
    ridge, a rim twice as wide as the step let the step slide to the rim's inner foot
    (``sem_physics.make_sample`` lines, seed 16, 5 grey levels of noise: CD 7.4 nm narrow).
    """
    from scipy.special import ndtr

    ok = np.isfinite(profile)
    if ok.sum() < 12:
        return 0.0
    t, p = t[ok], profile[ok]
    dark, bright = _end_levels(p)
    k = int(np.argmax(p))
    peak, amp0 = float(t[k]), float(p[k] - bright)
    if not (bright > dark and amp0 > 0):
        return 0.0
    above = np.nonzero(p > bright + 0.5 * amp0)[0]
    w0 = max(0.5, float(t[above[-1]] - t[above[0]]) / 2.355)

    def model(x: np.ndarray, tt: np.ndarray) -> np.ndarray:
        a, b, c, s, amp, w, d = x  # the ridge's centre c + d
        return a + b * ndtr((tt - c) / s) + amp * np.exp(-0.5 * ((tt - c - d) / w) ** 2)

    span = float(t[-1] - t[0])
    lo = np.array([-np.inf, 1e-6, t[0], 0.2, 0.0, 0.3, -MAX_RIDGE_OUTSIDE_PX])
    hi = np.array([np.inf, np.inf, t[-1], 5.0, np.inf, 6.0, span])
    x0s = [
        np.array([dark, bright - dark, peak + shift, sharp, amp0, w0, -shift])
        for shift in (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
        for sharp in (0.7, 2.0)
    ]
    best = _best_fit(lambda x: model(x, t) - p, "2-point", x0s, lo, hi)
    if best is None:
        return 0.0
    fine = np.linspace(t[0], t[-1], 8 * t.size)
    a, b = best.x[0], best.x[1]
    cross = _crossing_nearest_zero(fine, model(best.x, fine) - (a + threshold * b))
    return 0.0 if cross is None else float(best.x[2] - cross)


def _whole_edge_profile(
    norm: np.ndarray,
    lead: np.ndarray,
    trail: np.ndarray,
    rising: np.ndarray,
    bright_lines: bool,
    edges: np.ndarray,
    *,
    space_fallback: bool = False,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]] | None:
    """The mean edge profile about ``edges`` from the middle of the dark phase to the middle of
    the bright one (t in px towards the bright side) and the (bright, dark) phase widths (px),
    both read from the median line and space of ``lead``/``trail``; None when the edges give
    no width. ``space_fallback``: without a space between two lines, take the line's width."""
    cd_px = float(np.nanmedian(trail - lead)) if np.isfinite(trail - lead).any() else math.nan
    spaces = lead[1:] - trail[:-1]
    no_space = cd_px if space_fallback else math.nan
    space_px = float(np.nanmedian(spaces)) if np.isfinite(spaces).any() else no_space
    if not (math.isfinite(cd_px) and cd_px > 0 and math.isfinite(space_px) and space_px > 0):
        return None
    bright_px, dark_px = (cd_px, space_px) if bright_lines else (space_px, cd_px)
    reach = max(6, math.ceil(0.5 * max(cd_px, space_px)))
    t, mean_profile = _mean_edge_profile(norm, edges, rising, reach)
    inside = (t >= -0.5 * dark_px) & (t <= 0.5 * bright_px)
    return t[inside], mean_profile[inside], (bright_px, dark_px)


def _rim_offset(
    norm: np.ndarray,
    lead: np.ndarray,
    trail: np.ndarray,
    rising: np.ndarray,
    bright_lines: bool,
    threshold: float,
    bright_rims: bool,
) -> float:
    """:func:`rim_offset_px` of the mean edge profile from the middle of the space to the
    middle of the line (0 when the edges give no width), for bright or dark rims."""
    whole = _whole_edge_profile(
        norm, lead, trail, rising, bright_lines, np.vstack([lead, trail]), space_fallback=True
    )
    if whole is None:
        return 0.0
    t, mean_profile, _ = whole
    if bright_rims:
        return rim_offset_px(t, mean_profile, threshold)
    # A dark rim: the profile turned over (1 - p(-t)) has a bright one, its step the other way.
    return -rim_offset_px(-t[::-1], 1.0 - mean_profile[::-1], 1.0 - threshold)


@dataclass(frozen=True)
class BloomFit:
    """The whole-edge bloom fit (:func:`bloom_fit`): offsets (px, towards the bright side, from
    the half-level crossing to the step's centre) of its best fit and of the best step centres
    at least :data:`BLOOM_PROBE_PX` from it on either side, with their Δχ²."""

    offset_px: float
    others: tuple[tuple[float, float], ...] = ()  # (offset, Δχ²)
    ridge_px: float = 0.0  # the ridge's centre, from the crossing (px, towards the bright side)
    ridge_width_px: float = 0.0  # its Gaussian σ
    step_width_px: float = 0.0  # the step's Gaussian σ
    ridge_height: float = 0.0  # over the step's height


def _best_fit(
    residual: Any, jac: Any, x0s: list[np.ndarray], lo: np.ndarray, hi: np.ndarray
) -> Any:
    """The least-squares solution of lowest cost from the starts ``x0s`` (clipped into the
    bounds), None when every start fails: the bloom fits' multi-start search."""
    from scipy.optimize import least_squares

    best = None
    for x0 in x0s:
        try:
            sol = least_squares(
                residual, np.clip(x0, lo + 1e-9, hi - 1e-9), jac=jac, bounds=(lo, hi)
            )
        except ValueError:
            continue
        if best is None or sol.cost < best.cost:
            best = sol
    return best


def _step_ridge_jac(
    x: np.ndarray, t: np.ndarray, centres: tuple[tuple[float, float], ...], side: float
) -> np.ndarray:
    """Jacobian (samples × 7) of ``a + b Φ((t − c)/s) + A Σ_k exp(−(t − m_k)²/(2 w²))`` with
    ridge centres ``m_k = o_k + σ_k r``, ``r = c + side · d`` (``centres``: the (o_k, σ_k))."""
    from scipy.special import ndtr

    _, b, c, s, amp, w, d = x
    z = (t - c) / s
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    r = c + side * d
    g_sum, gu_signed, gu2 = np.zeros(t.size), np.zeros(t.size), np.zeros(t.size)
    for offset, sign in centres:
        u = (t - offset - sign * r) / w
        g = np.exp(-0.5 * u * u)
        g_sum += g
        gu_signed += sign * g * u
        gu2 += g * u * u
    jac = np.empty((t.size, 7))
    jac[:, 0] = 1.0
    jac[:, 1] = ndtr(z)
    jac[:, 2] = -b * pdf / s + amp * gu_signed / w
    jac[:, 3] = -b * pdf * z / s
    jac[:, 4] = g_sum
    jac[:, 5] = amp * gu2 / w
    jac[:, 6] = side * amp * gu_signed / w
    return jac


def _ridge_model(
    x: np.ndarray, t: np.ndarray, widths: tuple[float, float], side: float
) -> np.ndarray:
    """A blurred step at ``c`` and a ridge ``d`` from it towards the line (``side``: +1 when the
    line is at positive ``t``), with the ridges of the neighbouring edges mirrored about the
    middles of the bright and the dark phase (``widths``: their widths, px)."""
    from scipy.special import ndtr

    a, b, c, s, amp, w, d = x
    bright_px, dark_px = widths
    r = c + side * d
    ridges = sum(np.exp(-0.5 * ((t - at) / w) ** 2) for at in (r, bright_px - r, -dark_px - r))
    return a + b * ndtr((t - c) / s) + amp * ridges


def bloom_fit(
    t: np.ndarray,
    profile: np.ndarray,
    widths: tuple[float, float],
    threshold: float = 0.5,
    *,
    bright_lines: bool = True,
    min_overshoot: float = 0.1,
) -> BloomFit | None:
    """Whole-edge bloom fit of a mean edge profile (``t``: px from the edges, towards the bright
    side; from the middle of the dark phase to the middle of the bright one, ``widths`` =
    (bright, dark) phase widths in px), or None without a ridge (less than ``min_overshoot``
    of the contrast above the bright phase's middle), without a usable fit, or when the best
    fit puts the ridge as far inside the line as allowed (:data:`MAX_RIDGE_SHIFT_PX`) or makes
    a width as large as allowed (5 px for the step's σ, 6 px for the ridge's): no bloom ridge
    on the edge but a broad hump (3 refused images of the project's corpus fitted so).

    The model of :func:`bloom_offset_px` (a blurred step, a ridge; :data:`MAX_RIDGE_OUTSIDE_PX`
    at most outside the line) plus the neighbouring edges' ridges, which reach the middle of
    narrow lines, fitted from step centres 0-4 px from the crossing; the offset is the step's
    centre minus the fitted profile's ``threshold`` crossing. Fits with the step centre held
    :data:`BLOOM_PROBE_PX` to 4 px on either side of the best give the Δχ² of those centres
    (the best fit's residual taken as the noise, its samples of a pixel as one). A strong
    narrow ridge can fit two ways: the step under the ridge, or at its outer foot with the
    ridge inside the line.
    """

    ok = np.isfinite(profile)
    if ok.sum() < 12 or t.size < 2:
        return None
    t, p = t[ok], profile[ok]
    dark, bright = _end_levels(p)
    near = np.abs(t) <= 6.0
    if not near.any() or not bright > dark:
        return None
    k = int(np.argmax(np.where(near, p, -np.inf)))
    peak, amp0 = float(t[k]), float(p[k] - bright)
    if amp0 < min_overshoot * (bright - dark):
        return None
    above = np.nonzero(p > bright + 0.5 * amp0)[0]
    w0 = float(np.clip((t[above[-1]] - t[above[0]]) / 2.355, 0.5, 4.0))
    side = 1.0 if bright_lines else -1.0
    centres = ((0.0, 1.0), (widths[0], -1.0), (-widths[1], -1.0))  # r, bright - r, -dark - r
    # upper bounds: step σ 5 px, ridge σ 6 px, ridge at most MAX_RIDGE_SHIFT_PX inside the line
    best_hi = np.array([np.inf, np.inf, np.inf, 5.0, np.inf, 6.0, MAX_RIDGE_SHIFT_PX])

    def run(c_lo: float, c_hi: float, starts: tuple[float, ...], warm: np.ndarray | None) -> Any:
        lo = np.array([-np.inf, 1e-6, c_lo, 0.2, 0.0, 0.3, -MAX_RIDGE_OUTSIDE_PX])
        hi = np.r_[best_hi[:2], c_hi, best_hi[3:]]
        x0s = [
            np.array([dark, bright - dark, c0, 0.7, amp0, w0, side * (peak - c0)]) for c0 in starts
        ]
        if warm is not None:  # the best fit, its step moved (the ridge left where it is)
            x0s += [
                np.r_[warm[:2], c0, warm[3:6], warm[6] + side * (warm[2] - c0)] for c0 in starts
            ]
        return _best_fit(
            lambda x: _ridge_model(x, t, widths, side) - p,
            lambda x: _step_ridge_jac(x, t, centres, side),
            x0s,
            lo,
            hi,
        )

    starts = tuple(float(np.clip(c0, t[0] + 0.5, t[-1] - 0.5)) for c0 in (0.0, 1.0, 2.0, 3.0, 4.0))
    best = run(float(t[0]), float(t[-1]), starts, None)
    if best is None or not best.success:
        return None
    if np.any(best.x[[3, 5, 6]] >= best_hi[[3, 5, 6]] - 0.01):
        return None  # a ridge away from the step, or wider than a bloom ridge: no edge ridge
    fine = np.linspace(t[0], t[-1], 8 * t.size)
    cross = _crossing_nearest_zero(fine, _ridge_model(best.x, fine, widths, side) - threshold)
    if cross is None:
        return None
    c = float(best.x[2])
    # Δχ² with the best fit's residual as the noise; 4 samples a pixel count as one.
    per_px = 1.0 / float(np.median(np.diff(t)))
    scale = max(t.size / per_px - best.x.size, 1.0) / max(float(best.cost), 1e-300)
    others = []
    for c_lo, c_hi in (
        (c + BLOOM_PROBE_PX, min(c + 4.0, t[-1])),
        (max(c - 4.0, t[0]), c - BLOOM_PROBE_PX),
    ):
        if c_hi - c_lo < 0.25:
            continue
        alt = run(c_lo, c_hi, (c_lo + 0.1, 0.5 * (c_lo + c_hi), c_hi - 0.1), best.x)
        if alt is not None:
            others.append((float(alt.x[2] - cross), float((alt.cost - best.cost) * scale)))
    _, b, _, s, amp, w, d = (float(v) for v in best.x)
    return BloomFit(float(c - cross), tuple(others), c + side * d - cross, w, s, amp / b)


def _neighbour_edges(edges: np.ndarray, k: int = NEIGHBOUR_ROWS) -> np.ndarray:
    """Each row's edge as the mean of the ``k`` rows' edges on either side, the row itself left
    out (NaN where none is finite)."""
    e = np.asarray(edges, dtype=np.float64)
    finite = np.isfinite(e)
    vals = np.where(finite, e, 0.0)
    total, count = np.zeros_like(vals), np.zeros_like(vals)
    for d in range(1, k + 1):
        total[:, d:] += vals[:, :-d]
        count[:, d:] += finite[:, :-d]
        total[:, :-d] += vals[:, d:]
        count[:, :-d] += finite[:, d:]
    out = np.full_like(vals, np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _step_apart_from_ridge(fit: BloomFit) -> bool:
    """Whether the whole-edge fit tells the step from the ridge: the step sharper than
    :data:`MAX_STEP_SIGMA_PX` and than :data:`MAX_STEP_TO_RIDGE` of the ridge's width, the
    ridge at most :data:`MAX_RIDGE_TO_STEP` times the step's height."""
    s = fit.step_width_px
    return (
        s <= MAX_STEP_SIGMA_PX
        and s <= MAX_STEP_TO_RIDGE * fit.ridge_width_px
        and fit.ridge_height <= MAX_RIDGE_TO_STEP
    )


def _dark_ridge_only(t: np.ndarray, profile: np.ndarray, min_overshoot: float = 0.1) -> bool:
    """Whether a mean edge profile from the middle of the dark phase to the middle of the bright
    one (``t`` towards the bright side) dips below its dark end by ``min_overshoot`` of the
    contrast or more with no ridge of that size above its bright end: the dark rims of an
    inverted image, which the bloom fits (made for bright ridges) see turned over. Recorded
    bloom is bright; blur ringing shows on both sides."""
    ok = np.isfinite(profile)
    if ok.sum() < 12:
        return False
    p = profile[ok]
    dark, bright = _end_levels(p)
    contrast = bright - dark
    if not contrast > 0:
        return False
    return bool(
        dark - p.min() >= min_overshoot * contrast and p.max() - bright < min_overshoot * contrast
    )


def _checked_bloom_offset(
    norm: np.ndarray,
    lead: np.ndarray,
    trail: np.ndarray,
    rising: np.ndarray,
    bright_lines: bool,
    threshold: float,
    window: tuple[np.ndarray, np.ndarray],
) -> tuple[float, float]:
    """The bloom offset (px) and the edge's uncertainty (px, 0 when located): that of
    :func:`bloom_offset_px` on the mean edge profile ``window`` (t, profile) unless
    :func:`window_doubt` doubts it, else that of :func:`bloom_fit` over the whole edge (when
    it finds a ridge and tells the step from it, :func:`_step_apart_from_ridge`)."""
    fit = _window_fit(*window, 0.1)
    offset = _window_offset(fit, threshold)
    if fit is None or _window_fit_doubt(fit) is None:
        return offset, 0.0
    edges = _neighbour_edges(np.vstack([lead, trail]))
    profile = _whole_edge_profile(norm, lead, trail, rising, bright_lines, edges)
    if profile is None:
        return offset, 0.0
    t, mean_profile, widths = profile
    if t.size < 12 or t[0] > -3.0 or t[-1] < 3.0:
        return offset, 0.0
    whole = bloom_fit(t, mean_profile, widths, threshold, bright_lines=bright_lines)
    if whole is None or not _step_apart_from_ridge(whole):
        return offset, 0.0
    alike = [abs(o - whole.offset_px) for o, dchi2 in whole.others if dchi2 <= BLOOM_DCHI2]
    spread = max([*alike, 0.0])
    return whole.offset_px, (spread if spread >= BLOOM_PROBE_PX else 0.0)


def truth_edges(
    norm: np.ndarray,
    bright_lines: bool,
    opts: LineOptions,
    slope: float | None = None,
    *,
    rims: Literal["bright", "dark"] | None = None,
) -> TruthEdges:
    """Edges of a normalised region with vertical lines (steps 2-5 of the module docstring),
    with the edge settings of ``opts``; ``slope`` (px per row): the tilt already estimated
    (None: estimated here); ``rims``: the edges carry rims exceeding the line-to-space
    contrast (:func:`bloom_rims`), bright or dark, placed by :func:`rim_offset_px` over the
    whole line and space."""
    n_rows, width = norm.shape
    edge_method, degree, threshold = opts.edge_method, opts.polynomial_degree, opts.threshold
    edge_window_px, max_tilt_deg = opts.edge_window_px, opts.max_tilt_deg
    if slope is None:
        slope = (
            estimate_tilt(norm, max_tilt_deg)[0] if opts.correct_tilt and max_tilt_deg > 0 else 0.0
        )
    x_prof, profile = sheared_profile(norm, slope)
    if x_prof.size < 8:
        return TruthEdges(reason="tilt leaves too few columns covered by every row")
    tone: Literal["bright", "dark"] = "bright" if bright_lines else "dark"
    # The region is normalised to its plateaus: cut the mean profile at the same levels.
    lead0, trail0 = coarse_edges(x_prof, profile, tone=tone, threshold=threshold, levels=(0.0, 1.0))
    if lead0.size == 0:
        return TruthEdges(reason="no measurable lines: no complete line found in the mean profile")
    spaces = lead0[1:] - trail0[:-1]
    cd_px0 = float(np.median(trail0 - lead0))
    space_px0 = float(np.median(spaces)) if spaces.size else cd_px0
    hw = edge_window_px or int(np.clip(0.5 * min(cd_px0, space_px0), 2, 20))
    hw = min(hw, (width - 1) // 2)
    drift = abs(slope) * 0.5 * (n_rows - 1) + 1.0
    # A line counts when both edges stay 2 px inside the image in every row (edge windows
    # near the border are shifted inwards, not dropped).
    inside = (lead0 - drift >= 2) & (trail0 + drift <= width - 3)
    dropped = int(np.sum(~inside))
    lead0, trail0 = lead0[inside], trail0[inside]
    if lead0.size == 0:
        return TruthEdges(
            reason="no measurable lines: every line's edges reach the image border",
            n_dropped=dropped,
        )
    if hw < 1 or (edge_method != "threshold" and degree > 2 * hw):
        return TruthEdges(reason=f"lines too narrow for a {degree}-degree edge fit ({hw} px)")
    rising_lead = bright_lines
    ys_c = np.arange(n_rows, dtype=np.float64) - 0.5 * (n_rows - 1)

    def locate(pred_l: np.ndarray, pred_t: np.ndarray, half: int) -> tuple[np.ndarray, ...]:
        def at(pred: np.ndarray, rising: bool) -> np.ndarray:
            return subpixel_edges(
                norm,
                pred,
                rising=rising,
                threshold=threshold,
                half_window_px=half,
                method=edge_method,
                degree=degree,
            )

        return at(pred_l, rising_lead), at(pred_t, not rising_lead)

    lead, trail = locate(lead0[:, None] + ys_c * slope, trail0[:, None] + ys_c * slope, hw)
    lead_f, _ = fill_gaps(lead)
    trail_f, _ = fill_gaps(trail)
    usable = np.isfinite(lead_f).all(axis=1) & np.isfinite(trail_f).all(axis=1)
    if np.any(usable):
        both = np.vstack([lead_f[usable], trail_f[usable]])
        slope = float(np.median(np.polyfit(ys_c, both.T, 1)[0]))
    rising = np.r_[np.full(len(lead_f), rising_lead), np.full(len(trail_f), not rising_lead)]
    if opts.recentre_windows:
        # Pass 2: windows centred on each row's pass-1 edge, narrowed to the edge's own width:
        # a polynomial over a window much wider than the transition fits the plateaus.
        if edge_window_px is None:
            spread = edge_spread_px(norm, np.vstack([lead_f, trail_f]), rising, hw)
            if np.isfinite(spread):
                lo_hw = max(3, math.ceil(degree / 2))
                hw = int(np.clip(math.ceil(1.2 * spread), lo_hw, max(hw, lo_hw)))
        fallback_l = lead0[:, None] + ys_c * slope
        fallback_t = trail0[:, None] + ys_c * slope
        lead, trail = locate(
            np.where(np.isfinite(lead_f), lead_f, fallback_l),
            np.where(np.isfinite(trail_f), trail_f, fallback_t),
            hw,
        )
    lead, gaps_l = fill_gaps(lead)
    trail, gaps_t = fill_gaps(trail)
    offset, uncertainty = 0.0, 0.0
    if opts.correct_bloom and usable.any() and rims is not None:
        offset = _rim_offset(norm, lead, trail, rising, bright_lines, threshold, rims == "bright")
    elif opts.correct_bloom and usable.any():
        window = _mean_edge_profile(norm, np.vstack([lead, trail]), rising, max(6, 2 * hw))
        whole = _whole_edge_profile(
            norm, lead, trail, rising, bright_lines, np.vstack([lead, trail]), space_fallback=True
        )
        if whole is not None and _dark_ridge_only(whole[0], whole[1]):
            # Dark rims (an inverted image): the bright-ridge fits on the image turned over.
            t, p = window
            offset, uncertainty = _checked_bloom_offset(
                1.0 - norm,
                lead,
                trail,
                ~rising,
                not bright_lines,
                1.0 - threshold,
                (-t[::-1], 1.0 - p[::-1]),
            )
            offset = -offset
        else:
            offset, uncertainty = _checked_bloom_offset(
                norm, lead, trail, rising, bright_lines, threshold, window
            )
    if offset:
        # Positive offset = towards the bright side: inwards for bright lines.
        direction = 1.0 if bright_lines else -1.0
        lead = lead + direction * offset
        trail = trail - direction * offset
    return TruthEdges(
        lead, trail, gaps_l, gaps_t, slope, hw, dropped, offset, bloom_uncertainty_px=uncertainty
    )
