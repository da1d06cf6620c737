"""Checks of the lines found against the image they were found in, for both conventions.

The period of the mean profile across the lines (:func:`~sem_metrology._line_metrics.
dominant_period_px`) says how many lines the region holds and how far apart: a measurement
whose lines contradict it (closer than the convention resolves, too few, too many, or spaced
neither at the period nor at half of it) is refused rather than reported, and SMILE's pairing
of edges, which SMILE3 shares, gets warnings where noise splits edges or the border makes a
step. Before these checks, lines 4 px apart were reported as one line of CD 158 nm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._line_metrics import SUBHARMONIC_SHARE, dominant_period_px, period_support

if TYPE_CHECKING:
    from ._smile import SmileEdges

__all__ = [
    "MIN_PITCH_PX",
    "PITCH_TOLERANCE",
    "SMILE_BORDER_PX",
    "SMILE_EDGE_RANGE_PX",
    "TRUTH_ADVICE",
    "pitch_guard",
    "smile_pairing_warnings",
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
