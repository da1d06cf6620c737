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
   step's centre and the half-level crossing (``edge_offset_px``).

Rims brighter than the line-to-space contrast are the image's bright phase and set its
plateaus; steps 3-5 then cut each rim out as a line. :func:`bloom_rims` tells such "lines" by
the stretches between them, alternately a line and a space; ``sem_metrology.lines`` then runs
the steps again at those stretches' levels, the edges placed by :func:`rim_offset_px`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

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
    "BloomRims",
    "TruthEdges",
    "bloom_offset_px",
    "bloom_rims",
    "rim_offset_px",
    "truth_edges",
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
    within 0.35 nm.
    """
    from scipy.optimize import least_squares
    from scipy.special import ndtr

    ok = np.isfinite(profile)
    if ok.sum() < 12:
        return 0.0
    t, p = t[ok], profile[ok]
    far = np.abs(t) > 0.6 * np.abs(t).max()
    dark, bright = float(np.median(p[far & (t < 0)])), float(np.median(p[far & (t > 0)]))
    if not bright > dark or p.max() - bright < min_overshoot * (bright - dark):
        return 0.0  # no ridge above the bright plateau: nothing to correct

    def model(x: np.ndarray) -> np.ndarray:
        a, b, c, s, amp, w, d = x
        return a + b * ndtr((t - c) / s) + amp * np.exp(-0.5 * ((t - c - d) / w) ** 2)

    span = float(t[-1] - t[0])
    shift = min(MAX_RIDGE_SHIFT_PX, span / 4)
    x0 = [float(p[0]), float(p[-1] - p[0]), 0.0, 1.5, 0.1, 1.5, 0.0]
    lo = [-np.inf, 1e-6, -span / 4, 0.2, 0.0, 0.3, -shift]
    hi = [np.inf, np.inf, span / 4, span / 2, np.inf, span / 2, shift]
    try:
        sol = least_squares(lambda x: model(x) - p, x0, bounds=(lo, hi))
    except ValueError:
        return 0.0
    b, c, amp = sol.x[1], sol.x[2], sol.x[4]
    if not sol.success or amp < 0.05 * b:
        return 0.0
    # Crossing of the measured threshold on the fitted profile, nearest 0 (where the edges are).
    fine = np.linspace(t[0], t[-1], 4 * t.size)
    vals = model(sol.x)
    cross = _crossing_nearest_zero(fine, np.interp(fine, t, vals) - threshold)
    return 0.0 if cross is None else float(c - cross)


def _crossing_nearest_zero(x: np.ndarray, vals: np.ndarray) -> float | None:
    """Where ``vals`` (sampled at ``x``) changes sign nearest ``x = 0`` (the edge), linearly
    interpolated, or None without a sign change: the fitted profile's threshold crossing."""
    idx = np.nonzero(np.signbit(vals[:-1]) != np.signbit(vals[1:]))[0]
    if idx.size == 0:
        return None
    i = idx[np.argmin(np.abs(x[idx]))]
    return float(x[i] + (x[i + 1] - x[i]) * vals[i] / (vals[i] - vals[i + 1]))


def rim_offset_px(t: np.ndarray, profile: np.ndarray, threshold: float = 0.5) -> float:
    """Offset (px, towards the bright side) from the threshold crossing to the step's centre
    under a bloom rim brighter than the line-to-space contrast.

    The model of :func:`bloom_offset_px` (a blurred step and a ridge), fitted over a profile
    reaching the middle of the space and of the line on either side (``t``), with the ridge's
    centre free within it and the fit started from the ridge's peak at several step centres
    (the best fit kept): the step is a small part of such a profile, and a fit started as for
    weak bloom stays near the crossing (CD 2-5 nm too wide on generated lines). The rim hides
    the step: the offset is uncertain by about the rim's width (75 generated images with rims
    2-20 x the contrast, 1-2.5 px wide: CD within 0.9 nm with Gaussian noise but for rims 20 x
    the contrast, up to 6 nm; under Airy blur, which makes the rim no Gaussian, up to 13 nm).
    """
    from scipy.optimize import least_squares
    from scipy.special import ndtr

    ok = np.isfinite(profile)
    if ok.sum() < 12:
        return 0.0
    t, p = t[ok], profile[ok]
    n_end = max(3, t.size // 10)
    dark, bright = float(np.median(p[:n_end])), float(np.median(p[-n_end:]))
    k = int(np.argmax(p))
    peak, amp0 = float(t[k]), float(p[k] - bright)
    if not (bright > dark and amp0 > 0):
        return 0.0
    above = np.nonzero(p > bright + 0.5 * amp0)[0]
    w0 = max(0.5, float(t[above[-1]] - t[above[0]]) / 2.355)

    def model(x: np.ndarray, tt: np.ndarray) -> np.ndarray:
        a, b, c, s, amp, w, r = x
        return a + b * ndtr((tt - c) / s) + amp * np.exp(-0.5 * ((tt - r) / w) ** 2)

    lo = np.array([-np.inf, 1e-6, t[0], 0.2, 0.0, 0.3, t[0]])
    hi = np.array([np.inf, np.inf, t[-1], 5.0, np.inf, 6.0, t[-1]])
    best = None
    for shift in (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0):
        for sharp in (0.7, 2.0):
            x0 = np.array([dark, bright - dark, peak + shift, sharp, amp0, w0, peak])
            x0 = np.clip(x0, lo + 1e-9, hi - 1e-9)
            try:
                sol = least_squares(lambda x: model(x, t) - p, x0, bounds=(lo, hi))
            except ValueError:
                continue
            if best is None or sol.cost < best.cost:
                best = sol
    if best is None:
        return 0.0
    fine = np.linspace(t[0], t[-1], 8 * t.size)
    a, b = best.x[0], best.x[1]
    cross = _crossing_nearest_zero(fine, model(best.x, fine) - (a + threshold * b))
    return 0.0 if cross is None else float(best.x[2] - cross)


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
    cd_px = float(np.nanmedian(trail - lead)) if np.isfinite(trail - lead).any() else math.nan
    spaces = lead[1:] - trail[:-1]
    space_px = float(np.nanmedian(spaces)) if np.isfinite(spaces).any() else cd_px
    if not (math.isfinite(cd_px) and cd_px > 0 and math.isfinite(space_px) and space_px > 0):
        return 0.0
    bright_px, dark_px = (cd_px, space_px) if bright_lines else (space_px, cd_px)
    reach = max(6, math.ceil(0.5 * max(cd_px, space_px)))
    t, mean_profile = _mean_edge_profile(norm, np.vstack([lead, trail]), rising, reach)
    inside = (t >= -0.5 * dark_px) & (t <= 0.5 * bright_px)
    t, mean_profile = t[inside], mean_profile[inside]
    if bright_rims:
        return rim_offset_px(t, mean_profile, threshold)
    # A dark rim: the profile turned over (1 - p(-t)) has a bright one, its step the other way.
    return -rim_offset_px(-t[::-1], 1.0 - mean_profile[::-1], 1.0 - threshold)


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
    offset = 0.0
    if opts.correct_bloom and usable.any() and rims is not None:
        offset = _rim_offset(norm, lead, trail, rising, bright_lines, threshold, rims == "bright")
    elif opts.correct_bloom and usable.any():
        t, mean_profile = _mean_edge_profile(norm, np.vstack([lead, trail]), rising, max(6, 2 * hw))
        offset = bloom_offset_px(t, mean_profile, threshold)
    if offset:
        # Positive offset = towards the bright side: inwards for bright lines.
        direction = 1.0 if bright_lines else -1.0
        lead = lead + direction * offset
        trail = trail - direction * offset
    return TruthEdges(lead, trail, gaps_l, gaps_t, slope, hw, dropped, offset)
