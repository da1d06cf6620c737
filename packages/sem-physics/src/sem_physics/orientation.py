"""Orientation (EXIF, or TIFF tag 274): the stored frame turned as a viewer shows it.

A reader turns the pixels with :func:`orient` (the same result as PIL's
``ImageOps.exif_transpose``) and adds :func:`orientation_note`, so that outputs and pixel
coordinates refer to the frame the user sees.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["orient", "orientation_note", "orientation_tag"]


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
