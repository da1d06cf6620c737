"""The vendor information bar at the bottom of an SEM frame: find it, and crop it.

:func:`detect_info_bar` finds the bar by look (a bottom band of rows dominated by one flat
black or white background, with the frame line above it), as in Hitachi and Zeiss images;
:func:`crop_info_bar` removes it, or a default share of the rows when its height is unknown.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .validation import is_real_numeric

__all__ = ["DEFAULT_CROP_FRACTION", "crop_info_bar", "detect_info_bar", "frame_line_rows"]

DEFAULT_CROP_FRACTION = 0.0667
_GREY_RANGE = (32, 65535)  # span of grey levels an image with an info bar has
_EXTREME_LEVELS = 8  # grey levels from the image minimum/maximum that count as black/white
_FRAME_FRACTION = 0.9  # pixels of a frame line at black or white
_TEXT_ROW = -1000  # a black-and-white row inside a bar (dense text, a scale bar)
_NOISY_ROW = -100  # a micrograph row


def detect_info_bar(
    image: np.ndarray,
    flat_fraction: float = 0.6,
    min_rows: int = 12,
    max_fraction: float = 0.3,
    bottom_slack: int = 16,
    max_gap: int = 2,
    max_frame_rows: int = 4,
) -> int | None:
    """Height in rows of a vendor information bar at the bottom of ``image``, or None.

    ``image`` holds grey levels on the 0..255 scale (as :func:`~sem_physics.io.read_image`
    returns). A bar row is dominated by one flat background value at an extreme of the image's range (black or
    white: at least ``flat_fraction`` of its pixels within 2 grey levels of the row's most
    common value, which lies within 8 levels of the image minimum or maximum, or of 0 or 255
    where the picture's values run past them, as in an unclipped simulation with the vendor's
    bar put back), the text on it occupying the rest; image rows of an SEM micrograph are noisy and never are. The bar is the
    tallest band of such rows sharing one background value that starts within ``bottom_slack``
    rows of the bottom (frame lines or leftover scan rows may lie below it), with gaps of at
    most ``max_gap`` rows inside it (rows of black and white only, such as dense text or a
    scale bar, are no gaps), at least ``min_rows`` high and at most ``max_fraction`` of
    the frame. Up to ``max_frame_rows`` frame lines right above the band (rows of the other
    extreme, e.g. the black line over a white Zeiss bar; see :func:`frame_line_rows`) belong
    to the bar too. The returned height counts from the bar's top row to the last row of the
    frame.
    """
    img = _as_float(image)
    h = img.shape[0] if img.ndim == 2 else 0
    limit = int(max_fraction * h)
    if img.ndim != 2 or h < 2 * min_rows or limit < min_rows:
        return None
    span = _finite_range(img)
    if span is None:
        return None
    lo, hi = int(np.rint(span[0])), int(np.rint(span[1]))
    if not _GREY_RANGE[0] <= hi - lo <= _GREY_RANGE[1]:  # flat, or not on a grey-level scale
        return None
    levels = np.arange(hi - lo + 1) + lo  # the image's grey levels, from its minimum
    extreme = _black(levels, lo) | _white(levels, hi)  # which of them are black or white
    modes = []
    # bottom row first, one row at a time (no copy of the bottom band: reads stay lean)
    for r in range(h - 1, max(h - limit - bottom_slack - 1, 0) - 1, -1):
        row = np.rint(img[r]).astype(np.int64) - lo
        counts = np.bincount(row)
        mode = int(counts.argmax())
        flat = counts[max(mode - 2, 0) : mode + 3].sum() >= flat_fraction * row.size
        if flat and extreme[mode]:
            modes.append(mode)
        elif counts[extreme[: counts.size]].sum() >= _FRAME_FRACTION * row.size:
            # black and white only, as on a bar's dense text or a scale bar; micrograph
            # rows are noisy and never are
            modes.append(_TEXT_ROW)
        else:
            modes.append(_NOISY_ROW)
    best: int | None = None
    for start in range(min(bottom_slack + 1, len(modes))):
        if modes[start] < 0:
            continue
        top, gap = start, 0
        for i in range(start, len(modes)):
            if abs(modes[i] - modes[start]) <= 3:
                top, gap = i, 0
            elif modes[i] != _NOISY_ROW:
                continue  # dense text, a scale bar (the other extreme): no gap, not the top
            else:
                gap += 1
                if gap > max_gap:
                    break
        if top + 1 - start >= min_rows and top + 1 <= limit and (best is None or top + 1 > best):
            best = top + 1
    if best is None:
        return None
    return best + _frame_rows(img[: h - best], lo, hi, min(max_frame_rows, limit - best))


def _black(values: Any, lo: float) -> Any:
    """Grey levels that count as black: within ``_EXTREME_LEVELS`` of the image minimum or of
    0 (a bar keeps 0..255 where the picture's values run past it, e.g. an unclipped float
    simulation with the vendor's bar put back)."""
    return (values <= lo + _EXTREME_LEVELS) | (np.abs(values) <= _EXTREME_LEVELS)


def _white(values: Any, hi: float) -> Any:
    """Grey levels that count as white: within ``_EXTREME_LEVELS`` of the maximum or of 255."""
    return (values >= hi - _EXTREME_LEVELS) | (np.abs(values - 255.0) <= _EXTREME_LEVELS)


def _as_float(image: np.ndarray) -> np.ndarray:
    """``image`` as a float array, float32 unless it already is float (no float64 copy)."""
    img = np.asarray(image)
    if not is_real_numeric(img):
        return np.zeros((0,), np.float32)  # not an image: no bar, no frame
    return img if np.issubdtype(img.dtype, np.floating) else img.astype(np.float32)


def _finite_range(img: np.ndarray) -> tuple[float, float] | None:
    """The minimum and maximum of ``img``, None when it holds NaN or ±inf (which either would
    be: NaN propagates through both), without a full-size mask."""
    if img.size == 0:
        return None
    lo, hi = float(img.min()), float(img.max())
    return (lo, hi) if np.isfinite(lo) and np.isfinite(hi) else None


def frame_line_rows(image: np.ndarray, max_rows: int = 4) -> int:
    """Number of frame lines (at most ``max_rows``) at the bottom of ``image``.

    A frame line is a row with at least 90 % of its pixels within 8 grey levels (0..255
    scale) of the image's minimum or maximum (or of 0 or 255): the thin black or white line vendors draw
    between the micrograph and the information bar. Micrograph rows are noisy and never are.
    Returns 0 for an image without such a range (flat, or spanning fewer than 32 levels); at
    least one row is always left.
    """
    img = _as_float(image)
    span = _finite_range(img) if img.ndim == 2 and img.shape[0] >= 2 else None
    if span is None:
        return 0
    lo, hi = span
    if not _GREY_RANGE[0] <= hi - lo <= _GREY_RANGE[1]:
        return 0
    return _frame_rows(img, lo, hi, max_rows)


def _frame_rows(img: np.ndarray, lo: float, hi: float, max_rows: int) -> int:
    """Bottom rows of ``img`` that are frame lines of the grey range ``lo..hi`` (< all rows)."""
    n = 0
    while n < min(max_rows, img.shape[0] - 1):
        row = img[img.shape[0] - 1 - n]
        low = np.mean(_black(row, lo))
        high = np.mean(_white(row, hi))
        if max(low, high) < _FRAME_FRACTION:
            break
        n += 1
    return n


def crop_info_bar(
    image: np.ndarray, rows: int | None = None, fraction: float = DEFAULT_CROP_FRACTION
) -> np.ndarray:
    """Remove the information bar: exactly ``rows`` bottom rows, else ``round(fraction H)``.

    Returns a view of the top part of ``image`` (H', W) with ``H' >= 1``.
    """
    arr = np.asarray(image)
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise ValueError(f"image must be at least 2-D with rows, got shape {arr.shape}")
    h = arr.shape[0]
    if rows is None:
        if not (0.0 <= fraction < 1.0):
            raise ValueError(f"fraction must be in [0, 1), got {fraction}")
        rows = round(fraction * h)
        if rows > h - 1:
            raise ValueError(f"fraction {fraction} of {h} rows leaves no image; use a smaller one")
    if isinstance(rows, bool) or int(rows) != rows or not 0 <= int(rows) <= h - 1:
        raise ValueError(f"rows must be an integer in [0, {h - 1}] for height {h}, got {rows}")
    rows = int(rows)
    return arr[: h - rows] if rows else arr
