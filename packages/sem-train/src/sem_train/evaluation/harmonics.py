"""What the blur leaves of each line/space case (a report section).

The Airy² PSF passes no modulation shorter than :func:`sem_physics.shortest_period_px` across
the lines; a line pattern of pitch ``p`` keeps its harmonics ``n < p / period``. With the
fundamental alone the defocused image holds the lines' pitch and position but not their width
or edge profile: there, the CD a restoration reads comes from its prior (or its bias), not
from the data, whatever the method. The section states this per case from the true setting
and the focused reference's measured pitch, so a CD column is read with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sem_metrology import LineMeasurement
from sem_physics import shortest_period_px

from .protocols import Case

__all__ = ["harmonics_markdown", "harmonics_rows"]


def harmonics_rows(
    cases: Sequence[Case], references: Mapping[str, LineMeasurement]
) -> list[dict[str, Any]]:
    """Per line case with a true setting and a measured reference pitch: the shortest period
    the blur passes across the lines (px), the pitch (px) and how many harmonics pass."""
    rows = []
    for case in cases:
        ref = references.get(case.case_id)
        if case.params is None or ref is None or not ref.pitch_nm or not ref.pixel_size_nm:
            continue
        across = 0.0 if ref.orientation != "horizontal" else math.pi / 2  # modulation axis
        period = shortest_period_px(case.params.psf, across)
        pitch = ref.pitch_nm / ref.pixel_size_nm
        rows.append(
            {
                "case_id": case.case_id,
                "period_px": period,
                "pitch_px": pitch,
                "harmonics": max(math.ceil(pitch / period) - 1, 0),
            }
        )
    return rows


def harmonics_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The section's table and what it means for the CD columns; empty without rows."""
    if not rows:
        return ""
    lines = [
        "| case | shortest period the blur passes across the lines (px) | pitch (px) "
        "| harmonics passed |",
        "|---|---|---|---|",
    ]
    for r in rows:
        n = r["harmonics"]
        what = "none: lines not resolved" if n == 0 else ("fundamental only" if n == 1 else n)
        lines.append(f"| {r['case_id']} | {r['period_px']:.1f} | {r['pitch_px']:.1f} | {what} |")
    prior = [r["case_id"] for r in rows if r["harmonics"] <= 1]
    lines.append("")
    if prior:
        lines.append(
            f"In {', '.join(f'`{c}`' for c in prior)} the defocused image keeps at most the "
            "lines' fundamental: their pitch and position, not their width or edge profile. The "
            "CD a method reads there comes from its prior or its bias, not from the data."
        )
    else:
        lines.append("Every case keeps at least the lines' second harmonic.")
    return "\n".join(lines) + "\n"
