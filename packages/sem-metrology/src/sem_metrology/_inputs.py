"""The setup shared by the line and contact measurements: options, image, pixel size, crops.

One check, one message each; every refusal is a :class:`MetrologyInputError` (a ValueError).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, BeforeValidator, Field, ValidationError
from sem_physics.cli_support import validation_message
from sem_physics.validation import is_real_numeric

from .errors import MetrologyInputError
from .preprocess import row_blocks, saturation_fractions

PIXEL_SIZE_RANGE_NM = (1e-3, 1e6)
"""Physical bounds of a pixel: 1 pm to 1 mm (``sem_metrology.cli`` repeats them, import-free)."""

_Options = TypeVar("_Options", bound=BaseModel)
_Result = TypeVar("_Result", bound=BaseModel)


def merge_options(cls: type[_Options], options: _Options | None, overrides: dict) -> _Options:
    """``options`` (or the defaults) with single fields replaced, validated as ``cls``."""
    if options is not None and not isinstance(options, cls):
        raise MetrologyInputError(f"options must be a {cls.__name__}, got {type(options).__name__}")
    base = (options or cls()).model_dump()
    unknown = sorted(set(overrides) - set(cls.model_fields))
    if unknown:
        raise MetrologyInputError(
            f"unknown option(s) {unknown} for {cls.__name__}; known: {sorted(cls.model_fields)}"
        )
    try:
        return cls.model_validate({**base, **overrides})
    except ValidationError as err:  # "option threshold must be in (0, 1), got 1.5"
        raise MetrologyInputError(f"option {validation_message(err, cls)}") from None


def info_bar_choice(value: Any) -> str | int:
    """The ``info_bar`` option: ``'auto'``, ``'none'`` or a row count (an integer >= 0, not a
    bool), else ValueError naming what is accepted."""
    if isinstance(value, str) and value in ("auto", "none"):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        if value >= 0:
            return int(value)
    raise ValueError(f"must be 'auto', 'none' or a row count >= 0, got {value!r}")


#: The ``info_bar`` option of the line and contact measurements (default ``"auto"``).
InfoBar = Annotated[
    Literal["auto", "none"] | int,
    BeforeValidator(info_bar_choice),
    Field(
        description="bottom rows of an SEM info bar left out: 'auto' = the image object's "
        "info_bar_rows, or for an array the bar sem-measure detects (with a warning); "
        "'none' = every row measured; or a row count"
    ),
]


def check_pixel_size(value: Any, what: str = "pixel_size_nm") -> float:
    """``value`` as nm per pixel, refused outside 1e-3 .. 1e6 nm (1 pm .. 1 mm) and when a
    bool (``True`` is no pixel size, though ``float(True)`` is 1.0)."""
    if isinstance(value, (bool, np.bool_)):
        raise MetrologyInputError(f"{what} must be a number (nm per pixel), got {value!r}")
    try:
        size = float(value)
    except (TypeError, ValueError):
        raise MetrologyInputError(
            f"{what} must be a number (nm per pixel), got {value!r}"
        ) from None
    lo, hi = PIXEL_SIZE_RANGE_NM
    if not (math.isfinite(size) and lo <= size <= hi):
        raise MetrologyInputError(
            f"{what} = {value!r} nm is outside the physical range {lo:g} .. {hi:g} nm "
            "(1 pm .. 1 mm per pixel)"
        )
    return size


#: A given pixel size further than this (relative) from the file's metadata is warned about.
PIXEL_SIZE_TOLERANCE = 0.01


def pixel_size_mismatch(given: float, meta: Any, meta_source: str | None) -> str | None:
    """A warning when ``given`` differs from the metadata's pixel size by more than 1 %."""
    try:
        meta_nm = float(meta)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(meta_nm) and meta_nm > 0):
        return None
    diff = given / meta_nm - 1.0
    if abs(diff) <= PIXEL_SIZE_TOLERANCE:
        return None
    return (
        f"pixel size {given:g} nm given differs by {100 * diff:+.1f} % from the "
        f"{meta_nm:g} nm in the metadata ({meta_source or 'metadata'}); measured with "
        f"{given:g} nm"
    )


def check_real_dtype(arr: np.ndarray, what: str = "image") -> None:
    """Refuse bool, complex and non-numeric (object, string) arrays, naming ``what``."""
    if not is_real_numeric(arr):
        raise MetrologyInputError(f"{what} must be real numeric, got dtype {arr.dtype}")


@dataclass
class Prepared:
    """An image ready to measure.

    ``frame`` is the full array as given (an SEM image's info bar included), ``data`` the
    float64 region measured (info bar and ``roi`` removed); ``crop`` says what was removed.
    """

    frame: np.ndarray
    data: np.ndarray
    pixel_size_nm: float
    pixel_size_source: str
    dtype_range: tuple[float, float] | None
    bar_rows: int
    crop: str | None
    warnings: list[str] = field(default_factory=list)
    acquisition: dict[str, Any] = field(default_factory=dict)  # from the file's vendor tags


def acquisition_dict(acquisition: Any) -> dict[str, Any]:
    """An image's acquisition conditions as plain values (``sem_physics.Acquisition`` or a
    dict of them), ``{}`` when it states none."""
    if acquisition is None:
        return {}
    if hasattr(acquisition, "to_dict"):
        acquisition = acquisition.to_dict() if getattr(acquisition, "known", True) else {}
    return dict(acquisition)


def prepare(
    image: Any,
    pixel_size_nm: float | None,
    roi: tuple[int, int, int, int] | None = None,
    info_bar: str | int = "auto",
) -> Prepared:
    """Validate ``image`` and the pixel size, remove an SEM image's info bar and cut ``roi``.

    ``image`` is an array or an SEM image object (``.data``, ``.pixel_size_nm``, optional
    ``.info_bar_rows`` and ``.pixel_size_source``); the dtype range of integer input feeds the
    saturation check. ``roi`` rows/columns are in the frame's coordinates. ``info_bar``:
    ``'auto'`` leaves out the object's ``info_bar_rows``, or for an array (an object without
    them) the bar :func:`detected_info_bar_rows` finds, with a warning; ``'none'`` keeps every
    row; a number of bottom rows leaves out those.
    """
    meta_size, meta_source, bar_rows, bar_source = None, None, 0, "auto"
    acquisition: dict[str, Any] = {}
    known_bar = False  # the image object says where its bar is (or that it has none)
    if hasattr(image, "data") and hasattr(image, "pixel_size_nm"):
        acquisition = acquisition_dict(getattr(image, "acquisition", None))
        meta_size = image.pixel_size_nm
        meta_source = getattr(image, "pixel_size_source", None) or "metadata"
        known_bar = hasattr(image, "info_bar_rows")
        bar_rows = int(getattr(image, "info_bar_rows", None) or 0)
        bar_source = str(getattr(image, "info_bar_source", "auto"))
        image = image.data
    try:
        arr = np.asarray(image)
    except Exception as err:  # ragged lists, objects numpy cannot hold
        raise MetrologyInputError(f"image is not an array: {err}") from None
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise MetrologyInputError(
            f"image must be a 2-D grayscale array (H, W), got shape {arr.shape}"
        )
    check_real_dtype(arr)
    if arr.size == 0:
        raise MetrologyInputError(f"image is empty, shape {arr.shape}")
    if not 0 <= bar_rows < arr.shape[0]:
        raise MetrologyInputError(
            f"info_bar_rows must be in [0, {arr.shape[0] - 1}], got {bar_rows}"
        )
    warnings: list[str] = []
    if info_bar == "none":
        bar_rows, bar_source = 0, "api-none"
    elif not isinstance(info_bar, str):
        if not 0 <= int(info_bar) < arr.shape[0]:
            raise MetrologyInputError(
                f"option info_bar: must be 'auto', 'none' or a row count in "
                f"[0, {arr.shape[0] - 1}] (the image's rows less one), got {info_bar}"
            )
        bar_rows, bar_source = int(info_bar), "api-option"
    elif not known_bar:
        found = detected_info_bar_rows(arr)
        if found:
            bar_rows, bar_source = found, "api-auto"
            warnings.append(
                f"info bar detected: the bottom {found} of {arr.shape[0]} rows are a flat "
                "black or white band (with its frame line) under the micrograph, as "
                "sem_physics.io.read_image and sem-measure find it, and are left out; "
                "info_bar='none' measures them, info_bar=ROWS sets the count"
            )
    dtype_range = None
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        dtype_range = (float(info.min), float(info.max))
    with np.errstate(over="ignore", invalid="ignore"):
        frame = arr.astype(np.float64)
    # band by band: no image-sized boolean array
    bad = sum(
        int(np.size(frame[r0:r1]) - np.count_nonzero(np.isfinite(frame[r0:r1])))
        for r0, r1 in row_blocks(*frame.shape)
    )
    if bad:
        raise MetrologyInputError(f"image contains {bad} NaN or infinite value(s)")
    if pixel_size_nm is not None:
        size, source = check_pixel_size(pixel_size_nm), "argument"
        mismatch = pixel_size_mismatch(size, meta_size, meta_source)
        warnings.extend([mismatch] if mismatch else [])
    elif meta_size is not None:
        size = check_pixel_size(meta_size, f"pixel size in the metadata ({meta_source})")
        source = f"metadata ({meta_source})"
    else:
        raise MetrologyInputError(
            "pixel_size_nm is required: pass pixel_size_nm=... (nm per pixel) or an image "
            "object whose metadata carries the pixel size"
        )
    data = frame[: frame.shape[0] - bar_rows] if bar_rows else frame
    crop = f"info bar: bottom {bar_rows} rows removed" if bar_rows else None
    if roi is not None:
        r0, r1, c0, c1 = roi
        if not (0 <= r0 < r1 <= data.shape[0] and 0 <= c0 < c1 <= data.shape[1]):
            raise MetrologyInputError(
                f"roi {tuple(roi)} must satisfy 0 <= row0 < row1 <= {data.shape[0]}, "
                f"0 <= col0 < col1 <= {data.shape[1]}"
                + _bar_limit_note(r1, data.shape[0], frame.shape[0], bar_rows, bar_source)
            )
        data = data[r0:r1, c0:c1]
    if min(data.shape) < 8:
        raise MetrologyInputError(
            f"image must be at least 8x8 pixels after cropping, got shape {data.shape}"
        )
    return Prepared(frame, data, size, source, dtype_range, bar_rows, crop, warnings, acquisition)


def _bar_limit_note(r1: int, limit: int, height: int, bar_rows: int, bar_source: str) -> str:
    """Where the roi's row limit comes from, when an info bar lowered it and the roi needs it."""
    if not bar_rows or r1 <= limit:
        return ""
    how = {
        "auto": "detected and removed automatically; --info-bar none keeps it, --info-bar "
        "ROWS sets it",
        "api-auto": "detected and removed automatically; info_bar='none' keeps it, "
        "info_bar=ROWS sets it",
        "api-option": "removed as asked with info_bar",
    }.get(bar_source, "removed as asked with --info-bar")
    return (
        f" (the row limit {limit} is the image's {height} rows less its {bar_rows}-row info "
        f"bar, {how})"
    )


#: Rows of the picture above a detected bar that look like bar rows (flat at black or white)
#: from which on the "bar" is taken for more of the picture: a rendered image without noise
#: (horizontal lines generated without noise: 16-24 bottom rows of space read as a bar).
_FLAT_PICTURE_ROWS = 12


def detected_info_bar_rows(data: np.ndarray) -> int | None:
    """Rows of an SEM info bar at the bottom of an array, as the command line finds it
    (:func:`sem_physics.io.detect_info_bar` on grey levels: integer images as they are, float
    images on 0..1 scaled to 0..255 as :func:`sem_physics.io.read_image` reads them), or None.

    The detector takes rows dominated by one flat black or white value for a bar, since the
    rows of an SEM micrograph are noisy and never are; a picture above the band with
    :data:`_FLAT_PICTURE_ROWS` or more such rows itself (a rendered image without noise) has
    no bar by that rule, and None is returned."""
    from .preprocess import detect_info_bar_rows

    a = np.asarray(data)
    if a.ndim != 2 or a.shape[0] < 2 or not is_real_numeric(a) or a.dtype == np.bool_:
        return None
    grey = a
    if np.issubdtype(a.dtype, np.floating) and a.size:
        lo, hi = float(np.min(a)), float(np.max(a))
        if math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo and hi <= 1.0:
            grey = a * 255.0
    rows = detect_info_bar_rows(grey)
    if not rows:
        return None
    picture = np.asarray(grey[: a.shape[0] - rows])
    span = (float(np.min(grey)), float(np.max(grey)))
    if _flat_extreme_rows(picture, span, _FLAT_PICTURE_ROWS) >= _FLAT_PICTURE_ROWS:
        return None
    return int(rows)


def _flat_extreme_rows(picture: np.ndarray, span: tuple[float, float], enough: int) -> int:
    """Rows of ``picture`` (counted up to ``enough``) that the info bar detector would take for
    bar rows: 60 % of the pixels within 2 grey levels of the row's most common value, that value
    within 8 levels of the image's minimum or maximum ``span`` (or of 0 or 255)."""
    lo, hi = span
    count = 0
    for row in picture:
        r = np.rint(np.asarray(row, dtype=np.float64))
        values, counts = np.unique(r, return_counts=True)
        mode = float(values[int(np.argmax(counts))])
        near = int(np.count_nonzero(np.abs(r - mode) <= 2.0))
        extreme = min(abs(mode - lo), abs(mode - hi), abs(mode), abs(mode - 255.0)) <= 8.0
        if extreme and near >= 0.6 * r.size:
            count += 1
            if count >= enough:
                break
    return count


def clipping_levels(dtype_range: tuple[float, float]) -> str:
    """How messages name the clipping levels of an integer image's range."""
    return f"one end of the {dtype_range[0]:g}..{dtype_range[1]:g} range"


def unmeasurable_reason(prep: Prepared, saturation_limit: float) -> str | None:
    """Why ``prep.data`` cannot be measured (constant or saturated), or None.

    With a known dtype range a constant image at a clipping level reads as saturated; without
    one every constant image is reported as constant. A large saturated share below the limit
    adds a warning to ``prep.warnings``.
    """
    data, dtype_range = prep.data, prep.dtype_range
    sat = saturation_fractions(data, dtype_range)
    constant = data.max() == data.min()
    if constant and dtype_range is None:
        return f"constant image: every pixel is {data.flat[0]:g}"
    if sat >= saturation_limit and dtype_range is None and np.unique(data).size == 2:
        return _two_level_reason(data)
    if sat >= saturation_limit:
        where = (
            clipping_levels(dtype_range)
            if dtype_range is not None
            else "the image's minimum or maximum value (clipped or flat)"
        )
        return f"saturated image: {100 * sat:.1f} % of pixels at {where}"
    if constant:
        return f"constant image: every pixel is {data.flat[0]:g}"
    if dtype_range is not None and sat > CLIPPED_SHARE:
        prep.warnings.append(f"{100 * sat:.1f} % of pixels at {clipping_levels(dtype_range)}")
    elif dtype_range is None:
        warning = float_clipping_warning(data)
        prep.warnings.extend([warning] if warning else [])
    return None


#: Share of pixels at one clipping level above which a warning names it.
CLIPPED_SHARE = 0.2
#: Share at the other extreme below which a pile at one extreme reads as clipped, not as the
#: flat plateau of a noise-free image (whose spaces and lines both sit at exact values).
_OTHER_END_SHARE = 0.01
#: The usual grey scales of float images: a value at one of their ends is a clipping level.
_FLOAT_SCALES = ((0.0, 1.0), (0.0, 255.0), (0.0, 65535.0))


def float_clipping_warning(data: np.ndarray) -> str | None:
    """The saturation warning of a float image (no dtype range), or None.

    More than :data:`CLIPPED_SHARE` of the pixels at exactly the image's maximum (or minimum)
    is clipping when that value ends the image's usual scale (255 or 0 of data within
    0..255, 1 or 0 of 0..1 data, 65535 or 0 of 16-bit data: the integer message), or when the
    other extreme holds almost no pixels (a clipped noisy image, not a noise-free one).
    """
    lo, hi = float(data.min()), float(data.max())
    share_lo, share_hi = float(np.mean(data == lo)), float(np.mean(data == hi))
    scale = next((s for s in _FLOAT_SCALES if s[0] <= lo and hi <= s[1]), None)
    for value, share, other, name in (
        (hi, share_hi, share_lo, "maximum"),
        (lo, share_lo, share_hi, "minimum"),
    ):
        if share <= CLIPPED_SHARE:
            continue
        if scale is not None and value in scale:
            return f"{100 * share:.1f} % of pixels at {clipping_levels(scale)}"
        if other < _OTHER_END_SHARE:
            return f"{100 * share:.1f} % of pixels at the image's {name} {value:g} (clipped?)"
    return None


def _two_level_reason(data: np.ndarray) -> str:
    """The reason for an image of two grey levels, most pixels at one: a drawn or thresholded
    mask, whose edges have no grey-level transition to place a contour on."""
    values, counts = np.unique(data, return_counts=True)
    shares = ", ".join(
        f"{v:g} on {100 * c / data.size:.1f} %" for v, c in zip(values, counts, strict=True)
    )
    return (
        f"two grey levels only ({shares} of the pixels): a drawn or thresholded mask, not an "
        "SEM image; its edges have no grey-level transition to measure"
    )


@dataclass
class Measurement(Generic[_Options, _Result]):
    """A measurement under way: its options, its prepared image, the fields every result of it
    carries (``base``), and why it cannot go on (``reason``, None when it can)."""

    opts: _Options
    prep: Prepared
    base: dict[str, Any]
    reason: str | None
    result_cls: Callable[..., _Result]

    @property
    def warnings(self) -> list[str]:
        return self.prep.warnings

    def invalid(self, reason: str, **extra: Any) -> _Result:
        """The result saying why nothing was measured, with what is known so far."""
        return self.result_cls(
            valid=False, reason=reason, warnings=self.warnings, **self.base, **extra
        )


def begin_measurement(
    options_cls: type[_Options],
    result_cls: Callable[..., _Result],
    image: Any,
    pixel_size_nm: float | None,
    options: _Options | None,
    overrides: dict,
) -> Measurement[_Options, _Result]:
    """The setup of ``measure_lines`` and ``measure_contacts``: options merged, image and pixel
    size checked (:func:`prepare`), the common result fields, the constant/saturated check."""
    opts = merge_options(options_cls, options, overrides)
    roi = opts.roi  # type: ignore[attr-defined]
    prep = prepare(image, pixel_size_nm, roi, opts.info_bar)  # type: ignore[attr-defined]
    base: dict[str, Any] = {
        "pixel_size_nm": prep.pixel_size_nm,
        "pixel_size_source": prep.pixel_size_source,
        "acquisition": prep.acquisition,
        "threshold": opts.threshold,  # type: ignore[attr-defined]
        "roi": roi,
        "crop": prep.crop,
    }
    reason = unmeasurable_reason(prep, opts.saturation_limit)  # type: ignore[attr-defined]
    return Measurement(opts, prep, base, reason, result_cls)
