"""Pixel size (nm) from an image file's own metadata: Hitachi tag 40092, Zeiss ``CZ_SEM`` tag
34118, FEI/Thermo tag 34682, the JSON :func:`sem_physics.io.write_image` stores, an ImageJ
description's ``unit=`` with XResolution, and TIFF resolution tags (up to
:data:`RESOLUTION_MAX_NM`). Each reader gives candidates; :func:`pick_pixel_size` takes the
first within :data:`PIXEL_SIZE_RANGE_NM` and names it, so a wrong tag is skipped, not trusted.
The order and rules are those of :mod:`sem_physics.io`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

__all__ = [
    "JSON_KEY",
    "PIXEL_SIZE_RANGE_NM",
    "RESOLUTION_MAX_NM",
    "check_pixel_size_nm",
    "json_pixel_size",
    "pick_pixel_size",
    "tiff_metadata",
]

PIXEL_SIZE_RANGE_NM = (1e-3, 1e6)  # 1 pm .. 1 mm per pixel
#: The key of the toolkit's JSON (TIFF ImageDescription, PNG text chunk).
JSON_KEY = "sem_physics"
_log = logging.getLogger("sem_physics.io")  # the reader's log
_NUMBER = r"[-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][-+]?\d+)?"
_UNIT_TO_NM = {"pm": 1e-3, "nm": 1.0, "um": 1e3, "µm": 1e3, "μm": 1e3, "mm": 1e6, "m": 1e9}


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


def pick_pixel_size(
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


def tiff_metadata(tif: Any, height: int, path: Path) -> tuple[float | None, str, int | None]:
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
    if desc is not None and isinstance(desc.value, str) and JSON_KEY in desc.value:
        candidates.append(
            (json_pixel_size(desc.value), f"ImageDescription {JSON_KEY}.pixel_size_nm")
        )
    candidates.extend(_resolution_pixel_sizes(page.tags))
    size, source = pick_pixel_size(candidates, path)
    return size, source, bar


def json_pixel_size(text: str) -> float | None:
    try:
        value = json.loads(text).get(JSON_KEY, {}).get("pixel_size_nm")
    except (ValueError, AttributeError):
        return None
    return _number(value) if isinstance(value, int | float) else None
