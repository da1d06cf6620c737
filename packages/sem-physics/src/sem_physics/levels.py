"""Grey levels: how a file's pixel values become the 0..255 scale, and when a picture is dim.

:func:`to_gray_255` makes any supported array (bool, 8/16/32-bit, float on 0..1 or 0..255,
grey or colour) float32 grey levels and returns the factor it applied, the
``SEMImage.value_scale`` a writer uses to go back to the file's scale. :func:`is_dim` and
:func:`dim_picture_level` are the one dim-picture rule (e.g. 12-bit data in a 16-bit file)
that the commands warn by and learned restoration rescales by.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .image_errors import ImageReadError, warn_once

if TYPE_CHECKING:
    from .io import SEMImage

__all__ = [
    "DIM_BELOW",
    "DIM_PERCENTILE",
    "UNIT_OVERSHOOT_MAX",
    "UNIT_OVERSHOOT_SHARE",
    "colour_notes",
    "dim_picture_level",
    "fill_hint",
    "is_dim",
    "picture_level",
    "to_gray_255",
    "warn_dim_picture",
]

_LUMA = np.array([0.299, 0.587, 0.114])
_CHUNK_ELEMENTS = 1 << 20  # float64 temporaries of large images are made in blocks of rows


def to_gray_255(arr: np.ndarray, path: Path) -> tuple[np.ndarray, float, tuple[str, ...]]:
    """Any supported pixel array -> float32 (H, W) on 0..255 (see :mod:`sem_physics.io`), the
    factor applied (grey levels of the 0..255 scale per unit of the file's values) and the
    notes on how float values were scaled (:func:`_float_unit_scale`)."""
    arr = np.asarray(arr)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageReadError(f"{path}: contains NaN or inf pixels")
    if arr.ndim == 3 and arr.shape[-1] in (2, 3, 4):
        arr = _channels_to_gray(arr)
    if arr.ndim != 2:
        raise ImageReadError(f"{path}: expected a 2-D grayscale or RGB(A) image, got {arr.shape}")
    if arr.size == 0 or min(arr.shape) < 1:
        raise ImageReadError(f"{path}: image has no pixels, shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.float32) * np.float32(255.0), 255.0, ()
    if arr.dtype == np.uint8:
        return arr.astype(np.float32), 1.0, ()
    if arr.dtype == np.uint16:
        return _uint16_lut()[arr], 255.0 / 65535.0, ()  # the float64 product, rounded once
    if arr.dtype == np.uint32:
        return _scaled_float32(arr, 255.0 / 4294967295.0), 255.0 / 4294967295.0, ()
    if np.issubdtype(arr.dtype, np.floating):
        unit, notes = _float_unit_scale(arr)
        scale = 255.0 if unit else 1.0
        data = _scaled_float32(arr, scale)
        if not np.isfinite(data).all():
            raise ImageReadError(f"{path}: pixel values beyond the float32 range (|x| > 3.4e38)")
        return data, scale, notes
    raise ImageReadError(
        f"{path}: unsupported pixel type {arr.dtype} (accepted: uint8, uint16, uint32, float, bool)"
    )


#: A float image whose pixels are all >= 0 and at most this is on the 0..1 scale: resampling or
#: filtering overshoots a 0..1 image by a few percent, while the same values as 0..255 grey
#: levels would be a black picture (every pixel below 1.05 of 255 levels).
UNIT_OVERSHOOT_MAX = 1.05
#: A float image reaching further but with at most this share of its pixels above 1 (its
#: 99.9th percentile at 1 or below) is read as 0..255 grey levels with a note: a 0..1 image
#: with outliers, or a nearly black one.
UNIT_OVERSHOOT_SHARE = 0.001


def _float_unit_scale(arr: np.ndarray) -> tuple[bool, tuple[str, ...]]:
    """Whether float pixels are on 0..1 (then scaled by 255), and a note when some exceed 1:
    read as 0..1 up to :data:`UNIT_OVERSHOOT_MAX`, as 0..255 grey levels beyond it (noted
    when no more than :data:`UNIT_OVERSHOOT_SHARE` of the pixels exceed 1)."""
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0:
        return False, ()
    if hi <= 1.0:
        return True, ()
    above = int(np.count_nonzero(arr > 1.0))
    share = f"{above:,} of {arr.size:,} pixels"
    if hi <= UNIT_OVERSHOOT_MAX:
        return True, (
            f"float values on 0..1 with {share} above 1 (up to {hi:g}): read as 0..1 and "
            "scaled by 255; clip the image to 0..1 to silence this",
        )
    if above > UNIT_OVERSHOOT_SHARE * arr.size:
        return False, ()
    return False, (
        f"float values mostly on 0..1 but {share} above 1 (up to {hi:g}, beyond "
        f"{UNIT_OVERSHOOT_MAX:g}): read as 0..255 grey levels, a nearly black picture; clip a "
        "0..1 image to 0..1, or scale it to 0..255",
    )


def _uint16_lut() -> np.ndarray:
    global _U16_LUT
    if _U16_LUT is None:
        _U16_LUT = (np.arange(65536, dtype=np.float64) * (255.0 / 65535.0)).astype(np.float32)
    return _U16_LUT


_U16_LUT: np.ndarray | None = None


def _scaled_float32(arr: np.ndarray, scale: float) -> np.ndarray:
    """``float32(float64(arr) * scale)`` computed in blocks of rows (no full float64 copy).

    float32 and smaller inputs multiply in float32 directly: the product of two float32
    numbers rounded once to float32 equals the float64 product rounded to float32.
    """
    if arr.dtype.itemsize <= 4 and np.issubdtype(arr.dtype, np.floating):
        data = arr.astype(np.float32)  # a copy: the caller's array is never the result
        if scale != 1.0:
            data *= np.float32(scale)  # in place: the same float32 products, no second frame
        return data
    out = np.empty(arr.shape, dtype=np.float32)
    step = max(1, _CHUNK_ELEMENTS // max(1, int(np.prod(arr.shape[1:]))))
    with np.errstate(over="ignore"):  # values beyond float32 become inf: the caller checks
        for i in range(0, arr.shape[0], step):
            out[i : i + step] = arr[i : i + step].astype(np.float64) * scale
    return out


def _colour_channels(arr: np.ndarray) -> np.ndarray:
    """The colour channels of (H, W, C), C in 2..4: alpha (the last of 2 or 4) dropped."""
    return arr[..., :1] if arr.shape[-1] == 2 else arr[..., :3]


def _is_grey(colour: np.ndarray) -> bool:
    """Whether colour channels carry one grey image (one channel, or all equal)."""
    return colour.shape[-1] == 1 or (
        np.array_equal(colour[..., 0], colour[..., 1])
        and np.array_equal(colour[..., 0], colour[..., 2])
    )


def _channels_to_gray(arr: np.ndarray) -> np.ndarray:
    """(H, W, C) with C in 2..4 -> (H, W): drop alpha, BT.601 luma, exact when channels equal."""
    colour = _colour_channels(arr)
    if _is_grey(colour):
        return colour[..., 0]
    integer = np.issubdtype(arr.dtype, np.integer)
    out = np.empty(colour.shape[:2], dtype=arr.dtype if integer else np.float32)
    step = max(1, _CHUNK_ELEMENTS // max(1, colour.shape[1]))
    for i in range(0, colour.shape[0], step):  # float64 luma in blocks of rows
        gray = colour[i : i + step].astype(np.float64) @ _LUMA
        if integer:
            gray = np.clip(np.rint(gray), 0, np.iinfo(arr.dtype).max)
        out[i : i + step] = gray
    return out


def colour_notes(arr: np.ndarray) -> tuple[str, ...]:
    """A note when a colour image (channels that differ) is turned into grey."""
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.shape[-1] not in (2, 3, 4) or _is_grey(_colour_channels(arr)):
        return ()  # grey, or grey stored as colour: nothing is lost
    return ("colour image: its channels differ and were combined into grey (BT.601 luma)",)


#: A picture whose 99.9th percentile (:data:`DIM_PERCENTILE`) is below this many grey levels
#: of 255 is dim: 12-bit data in a 16-bit file reads as 0..16.
DIM_BELOW = 64.0
DIM_PERCENTILE = 99.9


def picture_level(image: np.ndarray) -> float:
    """The grey level a picture's brightness is judged by: its 99.9th percentile."""
    return float(np.percentile(image, DIM_PERCENTILE))


def is_dim(level: float) -> bool:
    """Whether a picture of :func:`picture_level` ``level`` is dim (0 < level < DIM_BELOW)."""
    return 0.0 < level < DIM_BELOW


def dim_picture_level(data: np.ndarray, source_dtype: str) -> float | None:
    """The 99.9th percentile of a dim picture read from a file of more than 8 bits, else None.

    Only such files are judged: their grey levels are scaled from the file's full range, so a
    dim one usually holds fewer bits than its type (an 8-bit picture that is dark is dark)."""
    try:
        if np.dtype(source_dtype).itemsize <= 1:
            return None
    except TypeError:
        return None
    bright = int(np.count_nonzero(data >= DIM_BELOW))  # one pass: most pictures stop here
    if bright > (1.0 - DIM_PERCENTILE / 100.0) * data.size + 1.0:
        return None  # the 99.9th percentile is at least DIM_BELOW
    level = picture_level(data)
    return level if is_dim(level) else None


def fill_hint(data: np.ndarray, source_dtype: str) -> str:
    """How much of an integer file's range a picture read from it on the 0..255 scale uses,
    and the power of two that fills it: ``"its largest value, 2100, needs 12 of the file's 16
    bits: multiply the counts by 16"``; for other types, only to rescale to the full range."""
    try:
        kind = np.dtype(source_dtype)
    except TypeError:
        kind = None
    if kind is None or kind.kind != "u" or kind.itemsize < 2:
        return "rescale the file to its full range"
    info = np.iinfo(kind)
    largest = round(float(np.max(data)) * info.max / 255.0)  # back to the file's counts
    used = max(1, largest.bit_length())
    return (
        f"its largest value, {largest}, needs {used} of the file's {info.bits} bits: rescale "
        f"the file to its full range (multiply the counts by {2 ** (info.bits - used)})"
    )


def warn_dim_picture(img: SEMImage, use: str) -> str | None:
    """Log once, and return, a note naming ``img``'s file when it is a dim picture of more
    than 8 bits (:func:`dim_picture_level`); ``use`` says what works on its grey levels
    (e.g. ``"sem-degrade simulates"``)."""
    level = dim_picture_level(img.data, img.source_dtype)
    if level is None:
        return None
    lo, hi = float(np.min(img.data)), float(np.max(img.data))
    note = (
        f"dim {img.source_dtype} picture: values {lo:.3g}..{hi:.3g} of the 0..255 grey scale "
        f"(99.9th percentile {level:.3g}); {use} on these grey levels as they are; "
        f"{fill_hint(img.data, img.source_dtype)} first"
    )
    warn_once(img.path, note)
    return note
