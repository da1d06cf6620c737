"""Orientation (EXIF, or TIFF tag 274): the stored frame turned as a viewer shows it.

A reader turns the pixels with :func:`orient` (the same result as PIL's
``ImageOps.exif_transpose``) and adds :func:`orientation_note`, so that outputs and pixel
coordinates refer to the frame the user sees; a frame with an info bar (at the bottom of the
stored frame) is read as stored, with :func:`orientation_kept_note`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["orient", "orientation_kept_note", "orientation_note", "orientation_tag"]


#: What each Orientation value (EXIF and TIFF tag 274) asks a viewer to do to the stored frame.
_ORIENTATIONS = {
    2: "mirrored left-right",
    3: "rotated 180°",
    4: "mirrored top-bottom",
    5: "transposed",
    6: "rotated 90° clockwise",
    7: "transversed",
    8: "rotated 90° counter-clockwise",
}


def orientation_note(orientation: int) -> str:
    """What reading a frame with Orientation tag ``orientation`` (2..8) adds to the notes."""
    what = _ORIENTATIONS[orientation]
    return (
        f"Orientation tag {orientation} ({what}): read as displayed, so outputs and pixel "
        "coordinates (--roi, line orientation) refer to the displayed frame"
    )


def orientation_kept_note(orientation: int, bar_rows: int) -> str:
    """The note of a frame whose Orientation tag is not applied: its info bar (at the bottom of
    the stored frame, where instruments write it, and where the toolkit crops and restores it
    unchanged) would leave the bottom or be mirrored."""
    what = _ORIENTATIONS[orientation]
    return (
        f"Orientation tag {orientation} ({what}) not applied: the {bar_rows}-row info bar at the "
        "bottom of the stored frame is kept there, so the image is read as stored (a viewer "
        "shows it turned)"
    )


def orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """The stored (H, W[, C]) pixels as a viewer shows them for ``orientation`` (PIL's
    ``ImageOps.exif_transpose`` for the same value)."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def orientation_tag(value: Any) -> int:
    """The Orientation tag as an int in 1..8 (1, the stored frame, for a missing or odd one)."""
    try:
        value = int(value)
    except (TypeError, ValueError):
        return 1
    return value if value in _ORIENTATIONS else 1
