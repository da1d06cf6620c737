"""SEM image input/output: grayscale float32 on the 0..255 scale, pixel size, info bar.

Reading (:func:`read_image`) accepts 8/16-bit TIFF (also palette TIFF), PNG, JPEG and BMP.

Conversions (documented, never silent garbage):

* bit depth: ``uint8`` as is; ``uint16`` (and 16-bit PNG) scaled by ``255 / 65535``; ``uint32``
  by ``255 / (2**32 - 1)``; float data already on 0..1 scaled by 255, other float data taken
  as 0..255 values; boolean 0/255. NaN or inf pixels are an error. Float data is on 0..1 when
  its minimum is >= 0 and its maximum <= 1.05 (a resampling overshoot past 1 is noted); float
  data reaching further with at most 0.1 % of its pixels above 1 is read as 0..255 and noted.
* colour: palette images through their colour map; RGB/RGBA -> luma
  ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, the rule of PIL's ``'L'`` mode); alpha is
  dropped; images whose colour channels are equal keep that channel exactly.
* multi-page TIFF: the first page; :func:`multipage_note` (``"5,000 pages; only the first is
  read"``) is added to ``SEMImage.notes`` and logged like the JPEG note.

``SEMImage.value_scale`` is the factor applied (grey levels of the 0..255 scale per unit of the
file's values: 1 for 8-bit and for a palette of 8-bit entries, ``255 / 65535`` for 16-bit,
255 for float data on 0..1), so a writer can put results back on the file's own scale.

Orientation (EXIF, or TIFF tag 274) other than 1: the frame is turned as a viewer shows it
(PIL's ``ImageOps.exif_transpose``) and :func:`orientation_note` is added to the notes and
logged, so outputs and coordinates refer to the displayed frame.

JPEG (a ``.jpg``/``.jpeg`` file, or a JPEG-compressed TIFF): lossy compression removes the fine
detail and the noise that blind PSF estimates and restorations rely on (a JPEG of a 5-px blur
can estimate as 1.6 px). Reading one adds :data:`JPEG_NOTE` to ``SEMImage.notes`` and logs it
as a warning naming the file, once per file and process (shown by every command, ``sem-psf``
included; training, which reads each file every epoch, says it once).

Pixel size (nm) comes from the file's own metadata, in this order: Hitachi tag 40092
(``PixelSize=`` in nm; UTF-16 or ASCII text, NUL-terminated or not, ``.`` or ``,`` decimals),
Zeiss ``CZ_SEM`` tag 34118 (``ap_image_pixel_size``, else ``ap_pixel_size``, with its unit),
FEI/Thermo metadata (``[Scan] PixelWidth`` in m, else ``[EScan] PixelWidth``), the JSON
written by :func:`write_image`, an ImageJ/Fiji description's ``unit=`` with XResolution
(pixels per unit; ``pixel`` is no calibration), and plain XResolution with ResolutionUnit cm
or inch. Resolutions in cm or inch count only up to :data:`RESOLUTION_MAX_NM` (10 µm) per
pixel: the 72/96/300 dpi that image editors store in any picture are no calibration. X and Y
sizes more than 1 % apart are refused with a logged warning.
``SEMImage.pixel_size_source`` names the tag actually used.
A value outside :data:`PIXEL_SIZE_RANGE_NM` (1 pm to 1 mm per pixel) is not a pixel size: it
is ignored with a logged warning, the next source is tried, and when none is left
``pixel_size_nm`` is None and ``pixel_size_source`` says ``"none (ignored: ...)"``.

Size limit: the declared pixel count (TIFF tags, PNG/JPEG/BMP header) is checked before any
pixel is decoded; above ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`, 100 Mpx, or the
``SEM_MAX_PIXELS`` environment variable) the file is refused with :class:`ImageReadError`.
Conversions run in float32 (no full float64 copy of a large image).

The vendor information bar at the bottom of the frame is kept in ``SEMImage.data``; its height
is reported in ``info_bar_rows`` when it can be found (FEI metadata ``[Image] ResolutionY``, or a
bottom band of rows dominated by one flat background value, as in Hitachi and Zeiss bars, with
the frame line drawn above it: :func:`detect_info_bar`).
:func:`crop_info_bar` removes it (or the bottom 6.67 % when its height is unknown).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write
from .validation import validate_image, warn_if_unit_scale

__all__ = [
    "DEFAULT_CROP_FRACTION",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "JPEG_NOTE",
    "MAX_PIXELS_ENV",
    "PIXEL_SIZE_RANGE_NM",
    "RESOLUTION_MAX_NM",
    "ImageReadError",
    "SEMImage",
    "check_image_path",
    "check_pixel_size_nm",
    "clipped_counts",
    "crop_info_bar",
    "detect_info_bar",
    "frame_line_rows",
    "max_pixels_limit",
    "multipage_note",
    "open_pil_checked",
    "quantize",
    "read_image",
    "write_image",
]

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
DEFAULT_CROP_FRACTION = 0.0667
PIXEL_SIZE_RANGE_NM = (1e-3, 1e6)  # 1 pm .. 1 mm per pixel
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "SEM_MAX_PIXELS"
WRITE_DTYPES = ("uint16", "uint8", "float32")
_PIL_FORMAT = {".png": "PNG", ".bmp": "BMP"}
_JSON_KEY = "sem_physics"
_LUMA = np.array([0.299, 0.587, 0.114])
_log = logging.getLogger(__name__)
_GREY_RANGE = (32, 65535)  # span of grey levels an image with an info bar has
_EXTREME_LEVELS = 8  # grey levels from the image minimum/maximum that count as black/white
_FRAME_FRACTION = 0.9  # pixels of a frame line at black or white
_TEXT_ROW = -1000  # a black-and-white row inside a bar (dense text, a scale bar)
_NOISY_ROW = -100  # a micrograph row
_PIL_LOCK = threading.Lock()  # guards the PIL-global decompression-bomb limit
_CHUNK_ELEMENTS = 1 << 20  # float64 temporaries of large images are made in blocks of rows
_NUMBER = r"[-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][-+]?\d+)?"
#: TIFF compressions that are JPEG (old-style, new-style, lossy JPEG of DNG).
_JPEG_COMPRESSIONS = frozenset({6, 7, 34892})
#: What reading a JPEG adds to ``SEMImage.notes`` (and logs, after the file name).
JPEG_NOTE = (
    "JPEG input: lossy compression removes the fine detail and noise that the blind PSF "
    "estimate and restorations rely on (results can mislead); use the microscope's TIFF or PNG"
)
_UNIT_TO_NM = {"pm": 1e-3, "nm": 1.0, "um": 1e3, "µm": 1e3, "μm": 1e3, "mm": 1e6, "m": 1e9}


_WARNED: set[tuple[str, str]] = set()  # (resolved path, note) already logged by this process
_WARNED_LOCK = threading.Lock()


def _warn_once(path: Path, note: str) -> None:
    """Log ``note`` about ``path`` once per process: training reads each file every epoch."""
    key = (str(Path(path).resolve()), note)
    with _WARNED_LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    _log.warning("%s: %s", path, note)


class ImageReadError(ValueError):
    """An image file cannot be read or written; the message names the file and the problem."""


def check_pixel_size_nm(value: Any, name: str = "pixel_size_nm") -> float:
    """``value`` as a float if it is a pixel size in nm within :data:`PIXEL_SIZE_RANGE_NM`.

    Raises a ValueError naming ``name`` (a field, a flag or a file) and the accepted range:
    1e-3 nm (1 pm) to 1e6 nm (1 mm) per pixel covers every SEM from atomic resolution to the
    widest field of view; anything else is a unit mistake or a corrupt value.
    """
    lo, hi = PIXEL_SIZE_RANGE_NM
    try:
        nm = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of nm per pixel, got {value!r}") from None
    if not (math.isfinite(nm) and lo <= nm <= hi):
        raise ValueError(
            f"{name} must be within [{lo:g}, {hi:g}] nm per pixel (1 pm to 1 mm), got {value!r}"
        )
    return nm


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel-count limit of :func:`read_image`: ``max_pixels``, else ``$SEM_MAX_PIXELS``,
    else :data:`DEFAULT_MAX_PIXELS`. Raises a ValueError for a value that is not an integer >= 1.
    """
    name, value = "max_pixels", max_pixels
    if value is None:
        env = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not env:
            return DEFAULT_MAX_PIXELS
        name, value = f"environment variable {MAX_PIXELS_ENV}", env  # type: ignore[assignment]
    try:
        limit = int(float(value)) if isinstance(value, str) else int(value)  # type: ignore[arg-type]
        ok = float(value) == limit and limit >= 1  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer number of pixels >= 1, got {value!r}")
    return limit


@dataclass(frozen=True)
class SEMImage:
    """A read SEM image: float32 (H, W) grayscale on 0..255, full frame (info bar kept).

    The one image-with-metadata type carried from reading to reports: helpers that change it
    return a new ``SEMImage`` and keep (or name anew) ``pixel_size_source``.
    """

    data: np.ndarray
    path: Path
    pixel_size_nm: float | None
    pixel_size_source: str
    info_bar_rows: int | None
    source_dtype: str
    cropped_rows: int = 0  # bottom rows removed by :meth:`without_info_bar`
    notes: tuple[str, ...] = ()  # what reading changed beyond the scale (e.g. colour to grey)
    value_scale: float = 1.0  # grey levels (0..255 scale) per unit of the file's values

    def with_pixel_size(self, pixel_size_nm: float | None, source: str) -> SEMImage:
        """A copy with another pixel size (e.g. a user's flag) and the ``source`` naming it.

        ``pixel_size_nm`` is checked against :data:`PIXEL_SIZE_RANGE_NM`; None makes it unknown.
        """
        if pixel_size_nm is not None:
            pixel_size_nm = check_pixel_size_nm(pixel_size_nm, f"{self.path}: pixel_size_nm")
        return replace(self, pixel_size_nm=pixel_size_nm, pixel_size_source=str(source))

    def without_info_bar(
        self, rows: int | None = None, fraction: float = DEFAULT_CROP_FRACTION
    ) -> SEMImage:
        """A copy without the bottom ``rows`` (default: the detected bar, else ``fraction H``).

        Pixel size and its source are kept; ``cropped_rows`` adds up the rows removed.
        """
        if rows is None:
            rows = self.info_bar_rows
        data = crop_info_bar(self.data, rows=rows, fraction=fraction)
        removed = self.data.shape[0] - data.shape[0]
        bar = None if self.info_bar_rows is None else max(self.info_bar_rows - removed, 0)
        return replace(self, data=data, info_bar_rows=bar, cropped_rows=self.cropped_rows + removed)


# ----------------------------------------------------------------------------------------------
# Pixel conversion


def _to_gray_255(arr: np.ndarray, path: Path) -> tuple[np.ndarray, float, tuple[str, ...]]:
    """Any supported pixel array -> float32 (H, W) on 0..255 (see the module docstring), the
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
        data = arr.astype(np.float32)
        return data * np.float32(scale) if scale != 1.0 else data
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


# ----------------------------------------------------------------------------------------------
# Metadata


def _number(value: Any) -> float | None:
    """A float from a metadata value: a number, or text with a ``.`` or ``,`` decimal mark."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        m = re.fullmatch(_NUMBER, value.strip().rstrip("\x00").strip())
        if m:
            return float(m.group(0).replace(",", "."))
    return None


def _tag_text(raw: Any) -> str:
    """Text of a vendor tag: UTF-16-LE (Windows XP tags) or ASCII/Latin-1, NULs stripped.

    UTF-16 is recognised by its zero high bytes (every second byte of ASCII-range text), not by
    the mere presence of a NUL: an ASCII tag that ends in a NUL terminator stays ASCII.
    """
    if isinstance(raw, tuple | list) and all(isinstance(b, int) for b in raw):
        raw = bytes(b & 0xFF for b in raw)
    if not isinstance(raw, bytes):
        return str(raw).replace("\x00", "")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16", "ignore").replace("\x00", "")
    core = raw.rstrip(b"\x00")
    high = core[1::2]
    if len(core) >= 2 and high.count(0) >= 0.5 * len(high):
        return (core + b"\x00" * (len(core) % 2)).decode("utf-16-le", "ignore").replace("\x00", "")
    return core.replace(b"\x00", b"").decode("latin-1")


def _hitachi_pixel_size(raw: Any) -> float | None:
    m = re.search(rf"PixelSize\s*=\s*({_NUMBER})", _tag_text(raw))
    return float(m.group(1).replace(",", ".")) if m else None


def _cz_sem_pixel_sizes(md: dict[str, Any]) -> list[tuple[float | None, str]]:
    out: list[tuple[float | None, str]] = []
    for key in ("ap_image_pixel_size", "ap_pixel_size"):
        entry = md.get(key)
        if not isinstance(entry, tuple | list) or len(entry) < 2:
            continue
        if len(entry) >= 3:  # (label, value, unit)
            value, unit = _number(entry[1]), str(entry[2]).strip()
        else:  # (label, "value unit"): tifffile leaves a comma decimal unparsed
            m = re.fullmatch(rf"\s*({_NUMBER})\s*(\S+)\s*", str(entry[1]))
            value, unit = (_number(m.group(1)), m.group(2)) if m else (None, "")
        factor = _UNIT_TO_NM.get(unit)
        if value is not None and factor is not None:
            out.append((value * factor, f"CZ_SEM {key}"))
    return out


def _fei_pixel_sizes(fei: dict[str, Any]) -> list[tuple[float | None, str]]:
    out: list[tuple[float | None, str]] = []
    for section in ("Scan", "EScan"):
        entries = fei.get(section)
        value = _number(entries.get("PixelWidth")) if isinstance(entries, dict) else None
        if value is not None:
            out.append((value * 1e9, f"FEI metadata {section}.PixelWidth"))
    return out


#: nm per unit of an ImageJ ``unit=`` (ImageJ writes ``micron`` for µm, and ``\u00B5m`` for
#: ``µm``); ``pixel`` and other words mean no calibration.
_IMAGEJ_UNIT_NM = {
    **dict.fromkeys(("pm", "picometer", "picometers", "picometre", "picometres"), 1e-3),
    **dict.fromkeys(("å", "angstrom", "angstroms"), 0.1),
    **dict.fromkeys(("nm", "nanometer", "nanometers", "nanometre", "nanometres"), 1.0),
    **dict.fromkeys(("µm", "μm", "um", "micron", "microns", "micrometer", "micrometers"), 1e3),
    **dict.fromkeys(("micrometre", "micrometres"), 1e3),
    **dict.fromkeys(("mm", "millimeter", "millimeters", "millimetre", "millimetres"), 1e6),
    **dict.fromkeys(("cm", "centimeter", "centimeters", "centimetre", "centimetres"), 1e7),
    **dict.fromkeys(("inch", "inches"), 2.54e7),
    **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), 1e9),
}
#: nm per TIFF ResolutionUnit (tag 296): 2 inch, 3 cm (1, no unit, is no calibration).
_RESOLUTION_UNIT_NM = {2: ("inch", 2.54e7), 3: ("cm", 1e7)}
#: Pixels per inch or cm are a calibration only up to this pixel size (10 µm): image editors
#: store 72, 96 or 300 dpi (350, 265 or 85 µm per pixel) in any picture they save.
RESOLUTION_MAX_NM = 1e4
#: nm per unit of the units image editors store resolutions in (cm, inch).
_EDITOR_UNITS_NM = (1e7, 2.54e7)
#: X and Y pixel sizes further apart than this share are not one pixel size.
_XY_TOLERANCE = 0.01


def _per_unit(tags: Any, code: int) -> float | None:
    """Pixels per unit of XResolution (282) or YResolution (283); None when absent or not > 0."""
    tag = tags.get(code)
    value = tag.value if tag is not None else None
    if isinstance(value, tuple | list) and len(value) == 2:
        try:
            value = float(value[0]) / float(value[1])
        except (TypeError, ValueError, ZeroDivisionError):
            return None
    number = _number(value)
    return number if number is not None and math.isfinite(number) and number > 0 else None


def _imagej_fields(text: str) -> dict[str, str]:
    """The ``key=value`` lines of an ImageJ ImageDescription, ``\\uXXXX`` escapes decoded."""
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _resolution_pixel_sizes(tags: Any) -> list[tuple[float | str | None, str]]:
    """The pixel size from XResolution/YResolution (pixels per unit), in the unit of an ImageJ
    description (``unit=``, as Fiji saves a calibrated image), else of ResolutionUnit (inch or
    cm). Inch and cm sizes above :data:`RESOLUTION_MAX_NM` are image-editor defaults, skipped;
    X and Y sizes that differ by more than 1 % give a reason to refuse instead of a size.
    """
    x = _per_unit(tags, 282)
    if x is None:
        return []
    y = _per_unit(tags, 283)
    desc = tags.get(270)
    text = desc.value if desc is not None and isinstance(desc.value, str) else ""
    fields = _imagej_fields(text) if text.startswith("ImageJ=") else {}
    if "unit" in fields:  # ImageJ's own calibration: its unit replaces ResolutionUnit
        unit = fields["unit"]
        x_nm = _IMAGEJ_UNIT_NM.get(unit.lower())
        y_nm = _IMAGEJ_UNIT_NM.get(fields.get("yunit", unit).lower())
        if x_nm is None or y_nm is None:
            return []  # "pixel" or an unknown unit: uncalibrated
        source = f"ImageJ description unit={unit} and XResolution"
    else:
        unit_tag = tags.get(296)
        try:
            name, x_nm = _RESOLUTION_UNIT_NM[int(unit_tag.value)]
        except (AttributeError, KeyError, TypeError, ValueError):
            return []  # no ResolutionUnit, or neither inch nor cm
        y_nm, source = x_nm, f"TIFF XResolution (ResolutionUnit {name})"
    size_x = x_nm / x
    size_y = y_nm / y if y is not None else size_x
    editor_unit = x_nm in _EDITOR_UNITS_NM  # ImageJ keeps an editor's dpi as unit=inch
    if editor_unit and min(size_x, size_y) > RESOLUTION_MAX_NM:
        return []
    if abs(size_x - size_y) > _XY_TOLERANCE * max(size_x, size_y):
        return [
            (
                f"X {size_x:.6g} nm and Y {size_y:.6g} nm per pixel differ by more than 1 %",
                source,
            )
        ]
    return [(size_x, source)]


def _pick_pixel_size(
    candidates: list[tuple[float | str | None, str]], path: Path
) -> tuple[float | None, str]:
    """The first candidate inside :data:`PIXEL_SIZE_RANGE_NM`; out-of-range ones, and those
    given as a reason (text) to refuse them, are logged and named in the source."""
    ignored = []
    for value, source in candidates:
        if value is None:
            continue
        if isinstance(value, str):
            _log.warning("%s: %s: %s; pixel size ignored", path, source, value)
            ignored.append(f"{source}: {value}")
            continue
        try:
            return check_pixel_size_nm(value, source), source
        except ValueError as err:
            _log.warning("%s: %s; pixel size ignored", path, err)
            ignored.append(f"{source} = {value:g} nm outside [1e-3, 1e6] nm")
    return None, f"none (ignored: {'; '.join(ignored)})" if ignored else "none"


def _tiff_metadata(tif: Any, height: int, path: Path) -> tuple[float | None, str, int | None]:
    """(pixel size nm, its source, info-bar rows from metadata) of an open ``TiffFile``."""
    page = tif.pages[0]
    candidates: list[tuple[float | str | None, str]] = []
    bar = None
    tag = page.tags.get(40092)
    if tag is not None:
        candidates.append((_hitachi_pixel_size(tag.value), "TIFF tag 40092 (Hitachi PixelSize)"))
    md = tif.sem_metadata if 34118 in page.tags else None
    if md:
        candidates.extend(_cz_sem_pixel_sizes(md))
    fei = tif.fei_metadata if (34680 in page.tags or 34682 in page.tags) else None
    if fei:
        candidates.extend(_fei_pixel_sizes(fei))
        image = fei.get("Image")
        res_y = image.get("ResolutionY") if isinstance(image, dict) else None
        if isinstance(res_y, int) and not isinstance(res_y, bool) and 0 < res_y < height:
            bar = height - res_y
    desc = page.tags.get(270)
    if desc is not None and isinstance(desc.value, str) and _JSON_KEY in desc.value:
        candidates.append(
            (_json_pixel_size(desc.value), f"ImageDescription {_JSON_KEY}.pixel_size_nm")
        )
    candidates.extend(_resolution_pixel_sizes(page.tags))
    size, source = _pick_pixel_size(candidates, path)
    return size, source, bar


def _json_pixel_size(text: str) -> float | None:
    try:
        value = json.loads(text).get(_JSON_KEY, {}).get("pixel_size_nm")
    except (ValueError, AttributeError):
        return None
    return _number(value) if isinstance(value, int | float) else None


# ----------------------------------------------------------------------------------------------
# Info bar


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

    ``image`` holds grey levels on the 0..255 scale (as :func:`read_image` returns). A bar row
    is dominated by one flat background value at an extreme of the image's range (black or
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
    if not np.all(np.isfinite(img)):
        return None
    rows = np.rint(img[max(h - limit - bottom_slack - 1, 0) :]).astype(np.int64)
    lo, hi = int(np.rint(img.min())), int(np.rint(img.max()))
    if not _GREY_RANGE[0] <= hi - lo <= _GREY_RANGE[1]:  # flat, or not on a grey-level scale
        return None
    levels = np.arange(hi - lo + 1) + lo  # the image's grey levels, from its minimum
    extreme = _black(levels, lo) | _white(levels, hi)  # which of them are black or white
    modes = []
    for row in rows[::-1] - lo:  # index 0 = bottom row
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
    if img.dtype == bool or not np.issubdtype(img.dtype, np.number) or np.iscomplexobj(img):
        return np.zeros((0,), np.float32)  # not an image: no bar, no frame
    return img if np.issubdtype(img.dtype, np.floating) else img.astype(np.float32)


def frame_line_rows(image: np.ndarray, max_rows: int = 4) -> int:
    """Number of frame lines (at most ``max_rows``) at the bottom of ``image``.

    A frame line is a row with at least 90 % of its pixels within 8 grey levels (0..255
    scale) of the image's minimum or maximum (or of 0 or 255): the thin black or white line vendors draw
    between the micrograph and the information bar. Micrograph rows are noisy and never are.
    Returns 0 for an image without such a range (flat, or spanning fewer than 32 levels); at
    least one row is always left.
    """
    img = _as_float(image)
    if img.ndim != 2 or img.shape[0] < 2 or not np.all(np.isfinite(img)):
        return 0
    lo, hi = float(img.min()), float(img.max())
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


# ----------------------------------------------------------------------------------------------
# Reading


def _check_declared_size(path: Path, height: int, width: int, depth: int, limit: int) -> None:
    """Refuse an image whose header declares more than ``limit`` pixels, before decoding."""
    n = int(height) * int(width) * max(int(depth), 1)
    if n > limit:
        size = f"{width}x{height}" + (f"x{depth}" if depth > 1 else "")
        raise ImageReadError(
            f"{path}: declares {size} px = {pixel_count(n)}, above the limit of "
            f"{pixel_count(limit)} (raise it with --max-pixels, max_pixels= or ${MAX_PIXELS_ENV})"
        )


def pixel_count(n: int) -> str:
    """``n`` pixels for a message: ``"40,000 px"``, ``"900,000,000 px (900 Mpx)"`` from 1 Mpx."""
    n = int(n)
    return f"{n:,} px" + (f" ({n / 1e6:.4g} Mpx)" if n >= 1_000_000 else "")


def multipage_note(pages: int) -> str:
    """What reading a TIFF of ``pages`` pages (more than one) adds to ``SEMImage.notes``."""
    return f"{pages:,} pages; only the first is read"


def _read_tiff(
    path: Path, limit: int
) -> tuple[np.ndarray, str, float | None, str, int | None, bool, int, bool, int]:
    """(pixels, sample type, pixel size, its source, info-bar rows, JPEG-compressed, pages,
    8-bit palette, Orientation tag). The pixels are turned to the displayed orientation.

    An 8-bit palette (colour-map entries all multiples of 257, as 8-bit values are stored) is
    looked up as 16-bit values like any palette, and flagged so that the value scale recorded
    is that of its 8-bit entries.

    The page count follows the chain of page offsets without decoding a page (20,000 pages
    take about 20 ms).
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise ImageReadError(f"{path}: TIFF file has no image pages")
        page: Any = tif.pages[0]  # a TiffPage: the first page is never a TiffFrame
        _check_declared_size(path, page.imagelength, page.imagewidth, page.imagedepth, limit)
        if page.size > 4 * limit:  # samples per pixel beyond RGBA
            raise ImageReadError(
                f"{path}: declares {page.samplesperpixel} samples per pixel "
                f"({page.size / 1e6:.1f} M values), above 4 x {limit / 1e6:g} M"
            )
        arr = page.asarray()
        source_dtype = str(arr.dtype)
        jpeg = int(page.compression) in _JPEG_COMPRESSIONS
        photometric = int(page.photometric)
        palette8 = False
        axes = page.axes
        if axes.startswith("S") and arr.ndim == 3:
            arr = np.moveaxis(arr, 0, -1)
        tag = page.tags.get(274)
        orientation = _orientation_tag(tag.value if tag is not None else 1)
        if photometric == 3 and page.colormap is not None:  # palette
            cmap = np.asarray(page.colormap)
            if arr.size and int(arr.max()) >= cmap.shape[-1]:
                raise ImageReadError(f"{path}: palette index beyond the colour map")
            lut = cmap.T  # (entries, 3), 16-bit colour values
            palette8 = not np.any(lut % 257)
            arr = lut[arr].astype(np.uint16)  # (H, W, 3): made grey (and noted) as RGB is
        elif photometric == 0 and np.issubdtype(arr.dtype, np.integer):  # MINISWHITE
            arr = np.iinfo(arr.dtype).max - arr
        try:
            size, size_source, bar = _tiff_metadata(tif, arr.shape[0], path)
        except Exception as err:  # metadata is best effort: the pixels are still good
            _log.warning("%s: vendor metadata unreadable (%s); no pixel size", path, err)
            size, size_source, bar = None, "none", None
        if orientation != 1:  # the bar rows counted in the stored frame: found again by look
            arr, bar = np.ascontiguousarray(_orient(arr, orientation)), None
        try:
            pages = len(tif.pages)
        except Exception:  # a broken chain after the first page: that page is still good
            pages = 1
    return arr, source_dtype, size, size_source, bar, jpeg, pages, palette8, orientation


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


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
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


def _orientation_tag(value: Any) -> int:
    """The Orientation tag as an int in 1..8 (1, the stored frame, for a missing or odd one)."""
    try:
        value = int(value)
    except (TypeError, ValueError):
        return 1
    return value if value in _ORIENTATIONS else 1


def open_pil_checked(path: Path, limit: int) -> Any:
    """``path`` opened by PIL (its header read, no pixel decoded; the caller closes it), with
    the declared size checked against ``limit`` pixels. Our limit replaces PIL's
    decompression-bomb check (a warning above 89 Mpx, an error above 179 Mpx, raised inside
    ``open``), which is lifted while the header is read."""
    from PIL import Image

    with _PIL_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            im = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    try:
        width, height = im.size
        _check_declared_size(path, height, width, 1, limit)
    except BaseException:
        im.close()
        raise
    return im


def _read_pil(path: Path, limit: int) -> tuple[np.ndarray, str, float | None, str, int]:
    """(pixels, sample type, pixel size, its source, EXIF Orientation); the pixels are turned
    to the displayed orientation."""
    from PIL import Image, ImageOps

    with open_pil_checked(path, limit) as im:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
            mode = im.mode
            info = dict(im.info)
            orientation = _orientation_tag(im.getexif().get(274, 1))
            if orientation != 1:
                im = ImageOps.exif_transpose(im)
            target = {"P": "RGBA", "PA": "RGBA", "1": "L"}.get(mode)
            if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                target = "RGB"
            arr = np.asarray(im.convert(target) if target else im)
    if mode.startswith("I;16") or (mode == "I" and path.suffix.lower() == ".png"):
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageReadError(f"{path}: 16-bit image with values outside 0..65535")
        arr = arr.astype(np.uint16)
    elif mode == "I":
        raise ImageReadError(f"{path}: 32-bit integer images are not supported")
    source_dtype = str(arr.dtype)
    candidate = _json_pixel_size(str(info.get(_JSON_KEY, "")))
    size, source = _pick_pixel_size([(candidate, f"PNG text {_JSON_KEY}.pixel_size_nm")], path)
    return arr, source_dtype, size, source, orientation


def _as_path(path: Any, name: str = "path") -> Path:
    """``path`` as a Path, or a TypeError naming ``name`` and what it accepts."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"{name} must be a file path (str or os.PathLike), got {type(path).__name__}"
        )
    return Path(path)


def check_image_path(path: str | Path) -> None:
    """What can be said of an image file without opening it: :class:`ImageReadError` naming
    the file for a folder, a missing file, an unknown extension, a special or an empty file
    (a TypeError for a ``path`` that is no str or os.PathLike).

    :func:`read_image` starts with it; a command calls it first to refuse bad input before
    loading a model."""
    path = _as_path(path)
    ext = path.suffix.lower()
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image file")
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if ext not in IMAGE_EXTENSIONS:
        raise ImageReadError(
            f"{path}: unknown image format {ext or '(no extension)'!r}; "
            f"accepted: {', '.join(IMAGE_EXTENSIONS)}"
        )
    if not path.is_file():
        raise ImageReadError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")


def read_image(
    path: str | Path, *, max_pixels: int | None = None, log_notes: bool = True
) -> SEMImage:
    """Read an SEM image as float32 grayscale on 0..255 with its pixel size and info bar.

    ``max_pixels`` bounds the declared pixel count, checked before decoding (default
    ``$SEM_MAX_PIXELS``, else 100 Mpx: a small file may declare a huge image). Raises
    :class:`ImageReadError` (a ``ValueError``) naming the file for a missing file, an unknown
    extension, an image above the limit, or a corrupt/truncated/unsupported image; a TypeError
    for a ``path`` that is no str or os.PathLike.
    ``log_notes``: log the JPEG and multi-page notes as warnings (once per file); False for a
    caller that reports ``SEMImage.notes`` itself.

    Examples
    --------
    >>> img = read_image("lines_euv_resist_0p827nm.tif")  # doctest: +SKIP
    >>> img.pixel_size_nm, img.pixel_size_source, img.info_bar_rows  # doctest: +SKIP
    (0.827009, 'TIFF tag 40092 (Hitachi PixelSize)', 64)
    """
    path = _as_path(path)
    limit = max_pixels_limit(max_pixels)
    check_image_path(path)
    ext = path.suffix.lower()
    bar: int | None = None
    pages = 1
    palette8 = False
    kind = "TIFF" if ext in (".tif", ".tiff") else ext.lstrip(".").upper()
    try:
        if kind == "TIFF":
            arr, source_dtype, size, source, bar, jpeg, pages, palette8, orientation = _read_tiff(
                path, limit
            )
        else:
            arr, source_dtype, size, source, orientation = _read_pil(path, limit)
            jpeg = kind in ("JPG", "JPEG")
        notes = _colour_notes(arr)
        data, value_scale, read_notes = _to_gray_255(arr, path)
        if palette8:  # grey levels per unit of the 8-bit colour-map entries
            value_scale = 1.0
    except ImageReadError:
        raise
    except MemoryError as err:
        raise ImageReadError(f"{path}: not enough memory to decode the image") from err
    except Exception as err:  # decoders raise many types for corrupt files
        raise ImageReadError(
            f"{path}: cannot decode as {kind} (corrupt, truncated or unsupported): {err}"
        ) from err
    if bar is None:
        bar = detect_info_bar(data)
    if orientation != 1:
        read_notes = (orientation_note(orientation), *read_notes)
    for note in read_notes:
        notes = (*notes, note)
        if log_notes:
            _warn_once(path, note)
    if jpeg:
        notes = (*notes, JPEG_NOTE)
        if log_notes:
            _warn_once(path, JPEG_NOTE)
    if pages > 1:
        notes = (*notes, multipage_note(pages))
        if log_notes:
            _warn_once(path, multipage_note(pages))
    return SEMImage(
        data=np.ascontiguousarray(data),
        path=path,
        pixel_size_nm=size,
        pixel_size_source=source,
        info_bar_rows=bar,
        source_dtype=source_dtype,
        notes=notes,
        value_scale=value_scale,
    )


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
        f"(99.9th percentile {level:.3g}; e.g. 12-bit data in a 16-bit file); {use} on these "
        "grey levels as they are: rescale the file to its full range first (e.g. multiply "
        "12-bit counts by 16)"
    )
    _warn_once(img.path, note)
    return note


def _colour_notes(arr: np.ndarray) -> tuple[str, ...]:
    """A note when a colour image (channels that differ) is turned into grey."""
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.shape[-1] not in (2, 3, 4) or _is_grey(_colour_channels(arr)):
        return ()  # grey, or grey stored as colour: nothing is lost
    return ("colour image: its channels differ and were combined into grey (BT.601 luma)",)


# ----------------------------------------------------------------------------------------------
# Writing


def quantize(image: np.ndarray, dtype: str = "uint16") -> np.ndarray:
    """The exact array :func:`write_image` stores for a 0..255 image and an output ``dtype``.

    ``uint16``: ``rint(clip(x, 0, 255) * 65535 / 255)``; ``uint8``: ``rint(clip(x, 0, 255))``;
    ``float32``: the values unchanged (no float64 copy: a float32 image is returned as is).
    """
    if dtype == "float32":
        return np.asarray(image, dtype=np.float32)
    if dtype not in WRITE_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; accepted: {WRITE_DTYPES}")
    data = np.asarray(image, dtype=np.float64)
    if dtype == "uint16":
        return np.rint(np.clip(data, 0, 255) * (65535.0 / 255.0)).astype(np.uint16)
    return np.rint(np.clip(data, 0, 255)).astype(np.uint8)


def clipped_counts(image: np.ndarray) -> tuple[int, int]:
    """Pixels of a 0..255 image below 0 and above 255: those an integer format clips."""
    arr = np.asarray(image)
    return int(np.count_nonzero(arr < 0)), int(np.count_nonzero(arr > 255))


def _warn_clipped(path: Path, arr: np.ndarray, dtype: str) -> None:
    """One warning naming ``path`` when writing ``arr`` as ``dtype`` clips pixels."""
    below, above = clipped_counts(arr)
    if below or above:
        parts = [
            f"{n:,} {side} ({100 * n / arr.size:.3g} %)"
            for n, side in ((below, "below 0"), (above, "above 255"))
            if n
        ]
        warnings.warn(
            f"{path}: {' and '.join(parts)} of {arr.size:,} pixels clipped to 0..255 by "
            f"{dtype}; a float32 TIFF keeps them",
            stacklevel=3,
        )


def write_image(
    path: str | Path,
    image: np.ndarray,
    dtype: str = "uint16",
    *,
    pixel_size_nm: float | None = None,
    warn_clipped: bool = True,
) -> Path:
    """Write a 0..255-scale image: ``uint16`` PNG/TIFF, ``uint8`` PNG/TIFF/BMP, ``float32`` TIFF.

    Integer outputs clip to 0..255 and scale (``uint16``: ``x * 65535 / 255``, rounded), so
    reading them back with :func:`read_image` returns the image to within half a grey level
    / 257; pixels outside 0..255 are clipped with one warning naming the file and their counts
    (``warn_clipped=False``: for a caller that counts them itself, :func:`clipped_counts`). ``float32`` TIFF stores the values unchanged (no clipping), bit-exact on reading.
    ``pixel_size_nm`` is stored as JSON in the TIFF ImageDescription or a PNG text chunk and is
    read back by :func:`read_image`. The file is written atomically (:mod:`sem_physics.atomic`:
    temporary name, fsync, rename): a failure raises :class:`~sem_physics.atomic.OutputWriteError`
    (an ``OSError``) and leaves no partial file. Missing parent folders are created.
    """
    path = _as_path(path)
    ext = path.suffix.lower()
    if dtype not in WRITE_DTYPES:
        raise ImageReadError(f"{path}: unsupported dtype {dtype!r}; accepted: {WRITE_DTYPES}")
    allowed = {
        "uint16": (".png", ".tif", ".tiff"),
        "uint8": (".png", ".tif", ".tiff", ".bmp"),
        "float32": (".tif", ".tiff"),
    }[dtype]
    if ext not in allowed:
        raise ImageReadError(
            f"{path}: cannot write dtype {dtype} as {ext or '(no extension)'!r}; "
            f"use one of {', '.join(allowed)}"
        )
    try:
        arr = validate_image(image, f"{path}: image", dtype=None)
        if arr.ndim != np.ndim(image):
            raise ValueError(f"{path}: can only write a 2-D image, got {np.shape(image)}")
        if pixel_size_nm is not None:
            pixel_size_nm = check_pixel_size_nm(pixel_size_nm, f"{path}: pixel_size_nm")
    except ValueError as err:
        raise ImageReadError(str(err)) from None
    if dtype != "float32":  # a float32 TIFF keeps any scale exactly
        warn_if_unit_scale(arr, f"{path}: image")
        if warn_clipped:
            _warn_clipped(path, arr, dtype)
    out = quantize(arr, dtype)
    meta = json.dumps({_JSON_KEY: {"pixel_size_nm": pixel_size_nm}}) if pixel_size_nm else None

    def write(tmp: Path) -> None:
        if ext in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp, out, description=meta, metadata=None, photometric="minisblack")
        else:
            from PIL import Image
            from PIL.PngImagePlugin import PngInfo

            pnginfo = None
            if meta and ext == ".png":
                pnginfo = PngInfo()
                pnginfo.add_text(_JSON_KEY, meta)
            kwargs: dict[str, Any] = {"pnginfo": pnginfo} if pnginfo else {}
            Image.fromarray(out).save(tmp, format=_PIL_FORMAT[ext], **kwargs)

    return atomic_write(path, write)
