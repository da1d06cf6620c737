"""Input checks shared by the line and contact measurements (one check, one message each)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .preprocess import saturation_fractions


def resolve_image(
    image: Any, pixel_size_nm: float | None, roi: tuple[int, int, int, int] | None = None
) -> tuple[np.ndarray, float, str, tuple[float, float] | None]:
    """Float array (cropped to ``roi``), pixel size in nm, its source, and the dtype range.

    ``image`` is an array or an SEM image object (``.data``, ``.pixel_size_nm``, optional
    ``.info_bar_rows``); the dtype range of integer input feeds the saturation check.
    """
    meta_size, meta_source, bar_rows = None, None, None
    if hasattr(image, "data") and hasattr(image, "pixel_size_nm"):
        meta_size = image.pixel_size_nm
        meta_source = getattr(image, "pixel_size_source", None) or "metadata"
        bar_rows = getattr(image, "info_bar_rows", None)
        image = image.data
    arr = np.asarray(image)
    if bar_rows and arr.ndim >= 2 and 0 < int(bar_rows) < arr.shape[0]:
        # An SEM image object (e.g. sem_physics.io.SEMImage) holds the full frame: measure
        # above its info bar (sem_physics.io.detect_info_bar, frame line included).
        arr = arr[: arr.shape[0] - int(bar_rows)]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"image must be a 2-D grayscale array (H, W), got shape {arr.shape}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"image must be real numeric, got dtype {arr.dtype}")
    if min(arr.shape) < 8:
        raise ValueError(f"image must be at least 8x8 pixels, got shape {arr.shape}")
    dtype_range = None
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        dtype_range = (float(info.min), float(info.max))
    data = arr.astype(np.float64)
    if not np.all(np.isfinite(data)):
        raise ValueError("image contains NaN or inf values")
    if pixel_size_nm is not None:
        size, source = float(pixel_size_nm), "argument"
    elif meta_size is not None:
        size, source = float(meta_size), f"metadata ({meta_source})"
    else:
        raise ValueError(
            "pixel_size_nm is required: pass pixel_size_nm=... (nm per pixel) or an image "
            "object whose metadata carries the pixel size"
        )
    if not (math.isfinite(size) and 0 < size < 1e6):
        raise ValueError(f"pixel_size_nm must be a finite number in (0, 1e6) nm, got {size}")
    if roi is not None:
        r0, r1, c0, c1 = roi
        if not (0 <= r0 < r1 <= data.shape[0] and 0 <= c0 < c1 <= data.shape[1]):
            raise ValueError(
                f"roi {roi} must satisfy 0 <= row0 < row1 <= {data.shape[0]}, "
                f"0 <= col0 < col1 <= {data.shape[1]}"
            )
        data = data[r0:r1, c0:c1]
    return data, size, source, dtype_range


def clipping_levels(dtype_range: tuple[float, float]) -> str:
    """How messages name the clipping levels of an integer image's range."""
    return f"one end of the {dtype_range[0]:g}..{dtype_range[1]:g} range"


def unmeasurable_reason(
    data: np.ndarray, dtype_range: tuple[float, float] | None, saturation_limit: float
) -> tuple[str | None, float]:
    """Why ``data`` cannot be measured (constant or saturated), or None; and the saturation.

    With a known dtype range a constant image at a clipping level reads as saturated; without
    one every constant image is reported as constant.
    """
    sat = saturation_fractions(data, dtype_range)
    constant = data.max() == data.min()
    if constant and dtype_range is None:
        return f"constant image: every pixel is {data.flat[0]:g}", sat
    if sat >= saturation_limit:
        where = (
            clipping_levels(dtype_range)
            if dtype_range is not None
            else "the image's minimum or maximum value (clipped or flat)"
        )
        return f"saturated image: {100 * sat:.1f} % of pixels at {where}", sat
    if constant:
        return f"constant image: every pixel is {data.flat[0]:g}", sat
    return None, sat
