"""The blind PSF estimate of every case's input, beside the true setting (a report section).

Every blind-PSF row of a table (Richardson-Lucy, Wiener, the foundation model's physics guides)
deconvolves with :func:`sem_physics.estimate_degradation` of the case's input; this section
shows what that estimate was, with its one-sigma errors and its quality flags, so a reader can
tell a restoration that failed from one that was given the wrong PSF.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .protocols import Case

__all__ = ["ESTIMATE_COLUMNS", "estimate_markdown", "estimate_rows"]

ROUND = 1.05  # axis ratio below which an ellipse has no orientation worth printing
#: Columns of ``psf_estimates.csv`` (radii in px, angles in degrees).
ESTIMATE_COLUMNS = (
    "case_id",
    "true_rx_px",
    "true_ry_px",
    "true_theta_deg",
    "rx_px",
    "rx_px_err",
    "ry_px",
    "ry_px_err",
    "theta_deg",
    "flags",
)


def estimate_rows(cases: Sequence[Case]) -> list[dict[str, Any]]:
    """One row per case: the true ellipse (when known) and the blind estimate, canonical form
    (``rx_px >= ry_px``, ``theta_deg`` in [0, 180)); radii in px."""
    from sem_physics import estimate_degradation
    from sem_physics.estimate import canonical_ellipse

    rows = []
    for case in cases:
        row: dict[str, Any] = {"case_id": case.case_id}
        if case.params is not None:
            p = case.params
            rx, ry, th = canonical_ellipse(p.rx_px, p.ry_px, p.theta_rad)
            row |= {"true_rx_px": rx, "true_ry_px": ry, "true_theta_deg": math.degrees(th)}
        try:
            est = estimate_degradation(np.asarray(case.input, np.float64))
        except ValueError as err:  # too small to estimate
            rows.append(row | {"flags": str(err)})
            continue
        if est.rx_px is not None and est.theta_rad is not None:
            row |= {
                "rx_px": est.rx_px,
                "rx_px_err": est.rx_px_err,
                "ry_px": est.ry_px,
                "ry_px_err": est.ry_px_err,
                "theta_deg": math.degrees(est.theta_rad),
            }
        rows.append(row | {"flags": "; ".join(est.quality.reasons)})
    return rows


def _ellipse(row: dict[str, Any], prefix: str = "") -> str:
    rx, ry = row.get(f"{prefix}rx_px"), row.get(f"{prefix}ry_px")
    if rx is None or ry is None:
        return "—"
    angle = "round" if rx < ROUND * ry else f"{row[f'{prefix}theta_deg']:.0f}°"
    if prefix:
        return f"{rx:.1f} × {ry:.1f}, {angle}"
    return f"{rx:.1f} ± {row['rx_px_err']:.1f} × {ry:.1f} ± {row['ry_px_err']:.1f}, {angle}"


def estimate_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The section's table; a closing line names the flagged cases."""
    lines = [
        "| case | true Rx × Ry (px), θ | blind estimate Rx × Ry (px, ± one sigma), θ | flags |",
        "|---|---|---|---|",
    ]
    for row in rows:
        flags = row.get("flags") or ""
        lines.append(
            f"| {row['case_id']} | {_ellipse(row, 'true_')} | {_ellipse(row)} | {flags or 'ok'} |"
        )
    flagged = [r["case_id"] for r in rows if r.get("flags")]
    lines.append("")
    if flagged:
        lines.append(
            f"Flagged: {', '.join(f'`{c}`' for c in flagged)}. The blind-PSF rows of these cases "
            "rest on an estimate that does not vouch for itself (the reasons above); compare "
            "them with the true-PSF rows where the table has them."
        )
    else:
        lines.append("No estimate is flagged.")
    return "\n".join(lines) + "\n"
