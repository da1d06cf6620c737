"""Checks of the lines found against the image they were found in, for both conventions.

The period of the mean profile across the lines (:func:`~sem_metrology._line_metrics.
dominant_period_px`) says how many lines the region holds and how far apart: a measurement
whose lines contradict it (closer than the convention resolves, too few, too many, or spaced
neither at the period nor at half of it) is refused rather than reported, and SMILE's pairing
of edges, which SMILE3 shares, gets warnings where noise splits edges or the border makes a
step. Before these checks, lines 4 px apart were reported as one line of CD 158 nm.

:func:`pattern_guard` then checks that what was found is a line pattern at all: lines without
any period (column-correlated noise), bright edge rims read as lines (bloom), one "line"
filling a blurred image (an array of lines blurred together), lines wider than the period, and
lines missing where the profile still shows the pattern (a brightness gradient).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from scipy.ndimage import gaussian_filter1d, maximum_filter1d, minimum_filter1d

from ._line_metrics import (
    MIN_PERIODIC_SHARE,
    SUBHARMONIC_SHARE,
    dominant_period_px,
    period_support,
    periodic_share,
)

if TYPE_CHECKING:
    from ._smile import SmileEdges

__all__ = [
    "MIN_PITCH_PX",
    "PITCH_TOLERANCE",
    "SMILE_BORDER_PX",
    "SMILE_EDGE_RANGE_PX",
    "TRUTH_ADVICE",
    "pattern_guard",
    "pitch_guard",
    "smile_pairing_warnings",
    "smile_phantom_lines",
]

#: How the refusals and warnings name the other convention.
TRUTH_ADVICE = "the truth convention (convention='truth', --convention truth)"


#: Smallest line pitch (px) each convention resolves. Measured on generated
#: lines (256 px wide, CD 0.35-0.65 of the pitch, blur 0-1 px, noise 0-5 grey levels):
#: ``truth`` loses or merges lines below 9 px (5-6 px: down to 1 line, CD +80 %; 7 px at CD
#: 0.35-0.65 of the pitch or blurred: 15-28 of 28 lines), ``smile`` below 14 px (6-12 px: a
#: quarter to half of the lines, CD +100-1200 %; 13 px: 15 of 18), its 5x5 median and
#: low-pass filter merging neighbouring edges; from 9 px (``truth``) and 14 px (``smile``) every
#: line was found with its CD within 1 % (the real resist lines scaled to 13.9 px too).
MIN_PITCH_PX: dict[str, float] = {"truth": 9.0, "smile": 14.0}
#: Accepted relative difference between the measured pitch and the mean profile's period
#: (or half of it: double patterning with pitch walk repeats every two lines).
PITCH_TOLERANCE = 0.25


def _pitch_off(spacing: float, period: float) -> bool:
    """Whether the lines' spacing is neither the profile's period nor half of it (within
    :data:`PITCH_TOLERANCE`)."""
    return all(abs(spacing * m / period - 1.0) > PITCH_TOLERANCE for m in (1, 2))


#: SMILE's edge window: the polynomial per row spans its coarse edge ± this (px).
SMILE_EDGE_RANGE_PX = 8
#: Coarse edges this close (px) to the region's border are warned about (``smile``).
SMILE_BORDER_PX = 4


def pitch_guard(
    profile: np.ndarray | None, lead: np.ndarray, trail: np.ndarray, convention: str
) -> tuple[str | None, str | None]:
    """(why the lines found contradict the period of the mean profile across them, a warning):
    each None when there is none.

    The period comes from the profile's spectrum (:func:`dominant_period_px`; none for one to
    three lines or a profile without a clear period, and then nothing is checked). Refused: a
    period below the convention's :data:`MIN_PITCH_PX`; a measured pitch (median spacing of the
    line centres) more than :data:`PITCH_TOLERANCE` from it and from half of it, unless the
    spectrum shows that pitch as well (:func:`period_support` at least
    :data:`SUBHARMONIC_SHARE`) and the lines found fill the region at it; fewer lines than half
    the periods within the span of the lines found less one, or more than 1.5 times the
    periods across the region plus two. Fewer lines than half the periods across the whole
    region less one is a warning (the pattern may end inside the region). ``smile`` lines
    closer or more numerous than the period allows (SMILE3's pairing of edges split by noise)
    are kept with a warning, as SMILE3 keeps them.
    """
    if profile is None:
        return None, None
    period = dominant_period_px(profile)
    if period is None:
        return None, None
    width = int(np.asarray(profile).size)
    seen = np.isfinite(lead).any(axis=1) & np.isfinite(trail).any(axis=1)  # lines with edges
    centres = np.sort(0.5 * (np.nanmean(lead[seen], axis=1) + np.nanmean(trail[seen], axis=1)))
    n = int(centres.size)
    spacing = float(np.median(np.diff(centres))) if n > 1 else None
    periods = width / period
    found = f"{n} line(s) found" + (f", {spacing:.1f} px apart" if spacing is not None else "")
    where = f"the mean profile across the lines repeats every {period:.1f} px"
    smallest = MIN_PITCH_PX[convention]
    if round(period, 1) < smallest:  # to the 0.1 px shown: a 10-px pitch reads 9.99-10.01
        other = (
            f"; {TRUTH_ADVICE} resolves from {MIN_PITCH_PX['truth']:g} px"
            if convention == "smile" and period >= MIN_PITCH_PX["truth"]
            else ""
        )
        reason = (
            f"lines too closely spaced: {where} ({found}), below the {smallest:g} px the "
            f"{convention} convention resolves (pitch >= {smallest:g} px); image the lines at "
            f"a finer pixel size{other}"
        )
        return reason, None
    smile = convention == "smile"
    hint = (
        f"; SMILE's fixed ±{SMILE_EDGE_RANGE_PX} px edge window, its filtered profile and its "
        f"pairing of edges miss or split lines here; use {TRUTH_ADVICE}"
        if smile
        else ""
    )
    off = spacing is not None and _pitch_off(spacing, period)
    alt = width / spacing if spacing else 0.0
    if (
        off
        and spacing is not None
        and 0.5 * alt - 1.0 <= n <= 1.5 * alt + 2.0
        and period_support(profile, spacing) >= SUBHARMONIC_SHARE
    ):
        # The profile shows the measured pitch too, and the lines found fill the image at it
        # (strong blur leaves the lines' period weaker than a slow variation of the
        # background): it is the lines' period. Lines too few for it keep the profile's period.
        period, periods = spacing, alt
        where = f"the lines repeat every {period:.1f} px in the mean profile across them"
        off = False
    pitch = period / 2 if spacing is not None and not off and spacing < 0.75 * period else period
    fewest, most = 0.5 * periods - 1.0, 1.5 * width / pitch + 2.0
    if smile and ((off and spacing is not None and spacing < period) or n > most):
        return None, (
            f"smile: more lines than the image's period allows: {where}, {periods:.1f} periods "
            f"across {width} px, but {found}: SMILE's pairing splits noisy edges into extra "
            f"lines (SMILE3 keeps them too); line count, pitch, CD and CD std include them; "
            f"use {TRUTH_ADVICE}"
        )
    if off and spacing is not None:
        reason = (
            f"line pitch inconsistent with the image: {where}, but the {n} lines found are "
            f"{spacing:.1f} px apart ({100 * (spacing / period - 1):+.0f} %, accepted within "
            f"±{100 * PITCH_TOLERANCE:.0f} % of it or of its half){hint}"
        )
        return reason, None
    span = float(centres[-1] - centres[0]) if n > 1 else 0.0
    if n > most or (n > 1 and n < 0.5 * (span / pitch + 1.0) - 1.0):
        within = f" within the {span:.0f} px they span" if n <= most else ""
        reason = (
            f"line count inconsistent with the image: {where}, but {found}{within} (lines "
            f"missed or split){hint}"
        )
        return reason, None
    if n < fewest:
        return None, (
            f"{found} where the mean profile across the region repeats every {period:.1f} px, "
            f"{periods:.1f} times: the pattern ends inside the region, or lines were missed"
            f"{hint}"
        )
    return None, None


def smile_pairing_warnings(edges: SmileEdges, kept: np.ndarray, width: int) -> list[str]:
    """Warnings on SMILE's pairing of coarse edges, which SMILE3 shares: a trailing edge taken
    by several leading edges (each leading edge takes the first trailing edge after it, so an
    edge split by noise adds a line, and the lines sharing it come out too wide), and lines
    whose coarse edges lie within :data:`SMILE_BORDER_PX` of the region's border (where the
    zero-padded 5x5 median makes a step: often no line at all). Only the lines ``kept``
    (enough rows with an edge crossing) count; ``width`` is the region's."""
    out: list[str] = []
    lead0, trail0 = edges.coarse_leading[kept], edges.coarse_trailing[kept]
    _, counts = np.unique(trail0, return_counts=True)
    shared = counts[counts > 1]
    if shared.size:
        out.append(
            f"smile: {shared.size} trailing edge(s) paired with more than one leading edge "
            f"({int(shared.sum())} lines share them): as in SMILE3, each leading edge takes the "
            "first trailing edge after it, so noise that splits an edge adds lines and widens "
            f"them; line count, CD and CD std include them; for one line per edge pair use "
            f"{TRUTH_ADVICE}"
        )
    near = (lead0 < SMILE_BORDER_PX) | (trail0 > width - 1 - SMILE_BORDER_PX)
    if np.any(near):
        out.append(
            f"smile: {int(np.sum(near))} line(s) with a coarse edge within {SMILE_BORDER_PX} px "
            "of the region's border, where SMILE's zero-padded 5x5 median makes a step: "
            f"possibly not a line (SMILE3 keeps them too); {TRUTH_ADVICE} leaves out lines at "
            "the border"
        )
    return out


#: SMILE's edge window of a coarse edge shows no edge of the mean profile across the region when
#: the profile varies in it by less than this share of the largest variation over the windows
#: of all coarse edges ...
PHANTOM_SHARE = 0.1
#: ... or by less than this many times the profile's noise and less than this share of it.
PHANTOM_NOISE_RISE = 6.0
PHANTOM_NOISY_SHARE = 0.25
# Noise in a flat stretch (a margin of space 10-70 px wide, wide spaces, the spaces of 8 lines in
# a field 3-5 times wider, the step of SMILE's zero-padded median at the region's border) gives
# SMILE's filtered profile peaks of either sign there, which it pairs into lines of CD 3-12 nm
# and LWR up to 25 nm, or, a peak in the margin before a line, into a second line ending at that
# line's trailing edge: their windows varied by 0.6-4 % of the largest (1.7-6.0 x the noise).
# Lines: 20-100 % (the real image and its crops, generated lines blurred by up to 20 px,
# `make_sample` lines and resist; 25-440 x the noise); 16 lines blurred by 30 px, barely seen,
# 45-100 % (3.4-7.4 x the noise).


def smile_phantom_lines(
    profile: np.ndarray,
    lead0: np.ndarray,
    trail0: np.ndarray,
    profile_noise: Callable[[], float],
) -> tuple[np.ndarray, np.ndarray]:
    """Which of SMILE's lines (coarse edges ``lead0``, ``trail0``, region columns) the mean
    ``profile`` across the region does not show, and by how much the profile varies in the
    windows that say so (the columns ``edge - 8 .. edge + 7`` SMILE fits in every row). A
    window shows no edge when the profile's range in it is below :data:`PHANTOM_SHARE` of the
    largest over all windows, or below both :data:`PHANTOM_NOISE_RISE` × ``profile_noise()``
    (asked for only when a window's range lies between the two shares) and
    :data:`PHANTOM_NOISY_SHARE` of it. A line is not shown when neither of its windows
    shows an edge, or when its leading window shows none and its trailing edge is that of a
    line whose windows both do (SMILE pairs every leading edge with the first trailing edge
    after it)."""
    p = np.asarray(profile, dtype=np.float64)
    r = SMILE_EDGE_RANGE_PX

    def variation(edges: np.ndarray) -> np.ndarray:
        return np.array(
            [np.ptp(p[max(0, e - r) : min(p.size, e + r)]) for e in edges.tolist()],
            dtype=np.float64,
        )

    v_lead, v_trail = variation(lead0), variation(trail0)
    if v_lead.size == 0:
        return np.zeros(0, dtype=bool), v_lead
    top = max(v_lead.max(), v_trail.max())
    both = np.concatenate([v_lead, v_trail])
    between = (both >= PHANTOM_SHARE * top) & (both < PHANTOM_NOISY_SHARE * top)
    noise_rise = PHANTOM_NOISE_RISE * profile_noise() if between.any() else 0.0

    def flat(v: np.ndarray) -> np.ndarray:
        noisy = (v < noise_rise) & (v < PHANTOM_NOISY_SHARE * top)
        return (v < PHANTOM_SHARE * top) | noisy

    flat_lead, flat_trail = flat(v_lead), flat(v_trail)
    whole = ~flat_lead & ~flat_trail
    ends_a_whole_line = np.isin(trail0, trail0[whole])
    missing = flat_lead & (flat_trail | ends_a_whole_line)
    shown = np.where(flat_trail, np.maximum(v_lead, v_trail), v_lead)
    return missing, shown


#: Fewest lines found for a profile without a period to count against them: a regular pattern
#: of this many lines shows its period (5 lines of pitch 30 px in a 512-px field: periodic share
#: 0.49, 10 in 1024 px: 0.48); column noise read as lines gave 22-33 "lines".
NO_PERIOD_MIN_LINES = 8
#: ... and the relative spread (std / mean) of their spacings above which they are no pattern:
#: the real image and its crops 0.006-0.023, generated and demo line images 0.003-0.07, pitch
#: walk 0.20; column-correlated noise 0.37-0.54.
NO_PERIOD_SPACING_CV = 0.3
#: Spaces alternating in level by more than this share of the line-to-space contrast, between
#: lines spaced at half the profile's period, are bright edge rims read as lines: pitch walk
#: (two lines per period, alike) 0.0002-0.0005; bloom ridges read as lines 0.56-0.58.
BLOOM_ALTERNATION = 0.3
#: Gradient anisotropy on 2x2 pixels below which edges are blurred into the pixel noise (as
#: ``lines.MIN_ANISOTROPY``): focused line images 4-95, blurred by 20-30 px 1.0-2.1 (where the
#: lines are found: the check needs one or two lines filling half the region too), one or two
#: sharp lines 14-16; a 28-30 px blur of 16 lines 1.09-1.11.
BLURRED_ANISOTROPY = 1.5
#: One or two lines covering at least this share of the region, in a blurred image, are a
#: pattern of finer lines blurred together: single generated lines 0.17-0.39 (a 40-px crop
#: around one line 0.78, sharp); 16 lines blurred by 28-30 px read as one line of 0.85-0.92.
BLURRED_LINE_SHARE = 0.5
#: Periods of the profile that still show the line pattern outside the lines found, at and
#: above which lines were missed: generated and real images 0-0.21 (lines ending inside the
#: field: 0); a brightness gradient of 1.2-3 x the contrast across 16 lines: 2.7-10.5.
MISSED_PERIODS = 2.0

#: Lines found whose mean width is more than this factor from the median line's (either way)
#: are of another kind: a half-level through the line tops splits some lines at their edge
#: rims and not others (14 lines with rims twice the contrast, 2.5 px wide, 1 px inside: 16 or
#: 20 "lines" of 0.31-3.3 x the median width, CD 2.6-6.0 nm narrow, valid before). Measured:
#: the real image 0.97-1.10, ``sem_physics.make_sample`` lines and resist (blur 0-4 px)
#: 0.69-1.19, generated bloom lines read right 0.83-1.13; an alloy micrograph read as lines by
#: ``smile`` 0.43-2.28.
UNEVEN_WIDTH = 2.0


def _mid_level(profile: np.ndarray, a: float, b: float) -> float:
    """Mean of ``profile`` over the middle third of ``[a, b]`` (px), or at its centre."""
    x = np.arange(profile.size)
    lo, hi = a + (b - a) / 3.0, b - (b - a) / 3.0
    sel = (x >= lo) & (x <= hi)
    if not sel.any():
        c = min(max(round(0.5 * (a + b)), 0), profile.size - 1)
        return float(profile[c])
    return float(profile[sel].mean())


def _no_pattern_reason(profile: np.ndarray, centres: np.ndarray) -> str | None:
    """Why lines found without a period and irregularly spaced are no line pattern, or None."""
    n = int(centres.size)
    if n < NO_PERIOD_MIN_LINES:
        return None
    share = periodic_share(profile)
    spacings = np.diff(centres)
    cv = float(np.std(spacings) / np.mean(spacings))
    if share is None or share >= MIN_PERIODIC_SHARE or cv <= NO_PERIOD_SPACING_CV:
        return None
    return (
        f"no line pattern: the {n} lines found are {float(np.mean(spacings)):.1f} px apart on "
        f"average with spacings varying by {100 * cv:.0f} % (lines: under "
        f"{100 * NO_PERIOD_SPACING_CV:.0f} %), and the mean profile across them has no period "
        f"(its largest peak holds {100 * share:.0f} % of its varying power, a line pattern "
        f"{100 * MIN_PERIODIC_SHARE:.0f} % and more): column-correlated noise (vertical "
        "streaks) or a texture, not lines"
    )


def _bloom_reason(
    profile: np.ndarray, lead: np.ndarray, trail: np.ndarray, period: float
) -> str | None:
    """Why lines found at half the profile's period, with every other space as bright as a
    line, are edge rims read as lines (bloom), or None."""
    n = int(lead.size)
    if n < 4:
        return None
    spacing = float(np.median(np.diff(0.5 * (lead + trail))))
    if _pitch_off(spacing, period) or abs(spacing / period - 1.0) <= PITCH_TOLERANCE:
        return None  # spaced at the period itself (or at neither: the pitch guard's case)
    lines = np.array([_mid_level(profile, a, b) for a, b in zip(lead, trail, strict=True)])
    gaps = np.array([_mid_level(profile, trail[i], lead[i + 1]) for i in range(n - 1)])
    contrast = abs(float(np.median(lines) - np.median(gaps)))
    alternation = abs(float(gaps[0::2].mean() - gaps[1::2].mean())) / max(contrast, 1e-12)
    if alternation <= BLOOM_ALTERNATION:
        return None
    return (
        f"bright edge rims read as lines: the {n} lines found are {spacing:.1f} px apart, half "
        f"the {period:.1f} px period of the mean profile across them, and every other space "
        f"between them is as bright as a line (the spaces alternate by {100 * alternation:.0f} % "
        f"of the line-to-space contrast; two lines per period, as with pitch walk: under "
        f"{100 * BLOOM_ALTERNATION:.0f} %): likely {n // 2} lines whose two bright edges (bloom) "
        "were each read as a line; CD and line count would be wrong"
    )


def _blurred_line_reason(cds: np.ndarray, width: int, anisotropy: float | None) -> str | None:
    """Why one or two lines filling a blurred region are finer lines blurred together, or None."""
    n = int(cds.size)
    if anisotropy is None or n > 2 or anisotropy >= BLURRED_ANISOTROPY:
        return None
    covered = float(cds.sum()) / width
    if covered < BLURRED_LINE_SHARE:
        return None
    what = f"one line {cds[0]:.0f} px wide" if n == 1 else f"two lines {cds.sum():.0f} px wide"
    return (
        f"no measurable lines: {what} found across the {width} px region "
        f"({100 * covered:.0f} % of it, {100 * BLURRED_LINE_SHARE:.0f} % and more) in an image "
        f"whose edges are blurred into the pixel noise (gradient anisotropy {anisotropy:.2f} on "
        f"2x2 pixels, below {BLURRED_ANISOTROPY:g}): likely a pattern of finer lines blurred "
        "together (a blur radius near their pitch leaves only the pattern's outline), not one "
        "wide line"
    )


def _missed_periods(
    profile: np.ndarray, lead: np.ndarray, trail: np.ndarray, period: float
) -> tuple[float, float]:
    """(periods of the profile outside the lines found that still vary by half the lines'
    own local contrast, the range of the space level across the region in units of that
    contrast)."""
    smooth = gaussian_filter1d(np.asarray(profile, dtype=np.float64), 1.0)
    size = max(3, math.ceil(1.5 * period))
    low = minimum_filter1d(smooth, size, mode="nearest")
    amp = maximum_filter1d(smooth, size, mode="nearest") - low
    near = np.zeros(smooth.size, dtype=bool)
    for a, b in zip(lead, trail, strict=True):
        near[max(0, math.floor(a - period)) : math.ceil(b + period) + 1] = True
    ref = float(np.median(amp[near]))
    missed = int(np.count_nonzero(~near & (amp > 0.5 * ref)))
    spread = float(np.percentile(low, 95) - np.percentile(low, 5)) / max(ref, 1e-12)
    return missed / period, spread


def _uneven_width_reason(widths: np.ndarray, period: float) -> str | None:
    """Why lines of mean ``widths`` (px) are not one kind of line (:data:`UNEVEN_WIDTH`), or
    None; lines wider than the ``period`` are left to the merged-lines warning."""
    w = np.asarray(widths, dtype=np.float64)
    w = w[np.isfinite(w)]
    if w.size < 3:
        return None
    med = float(np.median(w))
    odd = ((w > UNEVEN_WIDTH * med) | (w < med / UNEVEN_WIDTH)) & (w <= period)
    if not med > 0 or not odd.any():
        return None
    lo, hi = f"{float(w[odd].min()):.1f}", f"{float(w[odd].max()):.1f}"
    return (
        f"lines of different widths: {int(odd.sum())} of the {w.size} lines found are "
        f"{lo if lo == hi else f'{lo}-{hi}'} px wide where the median line is "
        f"{med:.1f} px (more than {UNEVEN_WIDTH:g} x apart): edge rims or noise split some "
        "lines and not others, or the region holds two patterns; CD and CD std would mix them. "
        "Measure a region holding one kind of line (roi, --roi)"
    )


def pattern_guard(
    profile: np.ndarray | None,
    lead: np.ndarray,
    trail: np.ndarray,
    convention: str,
    anisotropy: float | None,
) -> tuple[str | None, list[str]]:
    """(why the lines found are no line pattern, warnings): after :func:`pitch_guard`.

    Refused: :data:`NO_PERIOD_MIN_LINES` or more lines with no period in the profile
    (:func:`periodic_share` below :data:`MIN_PERIODIC_SHARE`) and spacings spread by more
    than :data:`NO_PERIOD_SPACING_CV` (column-correlated noise); one or two lines covering
    :data:`BLURRED_LINE_SHARE` of the region in an image of gradient ``anisotropy`` below
    :data:`BLURRED_ANISOTROPY` (finer lines blurred together); ``truth``: lines at half the
    profile's period whose spaces alternate in level by more than :data:`BLOOM_ALTERNATION`
    of the contrast (edge bloom read as lines), and :data:`MISSED_PERIODS` periods or more of
    the profile showing the pattern where no line was found (a brightness gradient). Warned:
    those two in ``smile`` (SMILE3 reads them so too), and ``truth`` lines wider than the
    profile's period (merged lines). Lines of different widths (:data:`UNEVEN_WIDTH`):
    refused in ``truth``, warned in ``smile``.
    """
    if profile is None:
        return None, []
    profile = np.asarray(profile, dtype=np.float64)
    width = int(profile.size)
    seen = np.isfinite(lead).any(axis=1) & np.isfinite(trail).any(axis=1)
    lm, tm = np.nanmean(lead[seen], axis=1), np.nanmean(trail[seen], axis=1)
    order = np.argsort(lm + tm)
    lm, tm = lm[order], tm[order]
    if lm.size == 0:
        return None, []
    reason = _blurred_line_reason(tm - lm, width, anisotropy)
    if reason:
        return reason, []
    period = dominant_period_px(profile)
    if period is None:
        return _no_pattern_reason(profile, 0.5 * (lm + tm)), []
    warnings: list[str] = []
    reason = _bloom_reason(profile, lm, tm, period)
    if reason and convention != "smile":
        return reason, []
    if reason:  # SMILE3 reads them so too: kept, as its extra lines are (pitch_guard)
        warnings.append(f"smile: {reason} (SMILE3 reads them so too); use {TRUTH_ADVICE}")
    missed, spread = _missed_periods(profile, lm, tm, period)
    if missed >= MISSED_PERIODS:
        text = (
            f"lines missed: the mean profile across the region still shows the line pattern "
            f"(repeating every {period:.1f} px) over {missed:.1f} periods where none of the "
            f"{lm.size} lines was found; the space level changes by {spread:.1f} x the lines' "
            "contrast across the region: a brightness gradient moves the lines there past the "
            "threshold; flatten it (flatten_background=True) or measure a region holding only "
            "the lines found (roi, --roi)"
        )
        if convention != "smile":
            return text, []
        warnings.append(f"smile: {text} (SMILE3 misses them too)")
    reason = _uneven_width_reason(tm - lm, period)
    if reason and convention != "smile":
        return reason, []
    if reason:
        warnings.append(f"smile: {reason}")
    widest = float(np.max(tm - lm))
    if convention != "smile" and widest > period:
        wide = int(np.count_nonzero(tm - lm > period))
        warnings.append(
            f"lines wider than the period: {wide} of the {lm.size} lines found are up to "
            f"{widest:.1f} px wide where the mean profile across them repeats every "
            f"{period:.1f} px: neighbouring lines merged (strong blur, or noise); line count, "
            "CD and CD std are not to be trusted"
        )
    return None, warnings
