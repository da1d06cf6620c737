"""SEM image input/output: grayscale float32 on the 0..255 scale, pixel size, info bar.

Reading (:func:`read_image`) accepts 8/16-bit TIFF (also palette TIFF), PNG, JPEG and BMP.

Conversions (documented, never silent garbage):

* bit depth: ``uint8`` as is; ``uint16`` (and 16-bit PNG) scaled by ``255 / 65535``; ``uint32``
  by ``255 / (2**32 - 1)``; float data already on 0..1 (max <= 1) scaled by 255, other float
  data taken as 0..255 values; boolean 0/255. NaN or inf pixels are an error.
* colour: palette images through their colour map; RGB/RGBA -> luma
  ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, the rule of PIL's ``'L'`` mode); alpha is
  dropped; images whose colour channels are equal keep that channel exactly.
* multi-page TIFF: the first page.

Pixel size (nm) comes from the file's own metadata, in this order: Hitachi tag 40092
(``PixelSize=`` in nm), Zeiss ``CZ_SEM`` tag 34118 (``ap_image_pixel_size`` with its unit),
FEI/Thermo metadata (``[Scan] PixelWidth`` in m), and the JSON written by :func:`write_image`.
``SEMImage.pixel_size_source`` says which one was used.

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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_CROP_FRACTION",
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "SEMImage",
    "crop_info_bar",
    "detect_info_bar",
    "frame_line_rows",
    "quantize",
    "read_image",
    "write_image",
]

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
DEFAULT_CROP_FRACTION = 0.0667
WRITE_DTYPES = ("uint16", "uint8", "float32")
_JSON_KEY = "sem_physics"
_LUMA = np.array([0.299, 0.587, 0.114])
_log = logging.getLogger(__name__)
_GREY_RANGE = (32, 65535)  # span of grey levels an image with an info bar has
_EXTREME_LEVELS = 8  # grey levels from the image minimum/maximum that count as black/white
_FRAME_FRACTION = 0.9  # pixels of a frame line at black or white
_UNIT_TO_NM = {"pm": 1e-3, "nm": 1.0, "um": 1e3, "µm": 1e3, "μm": 1e3, "mm": 1e6, "m": 1e9}


class ImageReadError(ValueError):
    """An image file cannot be read or written; the message names the file and the problem."""


@dataclass(frozen=True)
class SEMImage:
    """A read SEM image: float32 (H, W) grayscale on 0..255, full frame (info bar kept)."""

    data: np.ndarray
    path: Path
    pixel_size_nm: float | None
    pixel_size_source: str
    info_bar_rows: int | None
    source_dtype: str


# ----------------------------------------------------------------------------------------------
# Pixel conversion


def _to_gray_255(arr: np.ndarray, path: Path) -> np.ndarray:
    """Any supported pixel array -> float32 (H, W) on 0..255 (see the module docstring)."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (2, 3, 4):
        arr = _channels_to_gray(arr)
    if arr.ndim != 2:
        raise ImageReadError(f"{path}: expected a 2-D grayscale or RGB(A) image, got {arr.shape}")
    if arr.size == 0 or min(arr.shape) < 1:
        raise ImageReadError(f"{path}: image has no pixels, shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.float32) * 255.0
    if arr.dtype == np.uint8:
        return arr.astype(np.float32)
    if arr.dtype == np.uint16:
        return (arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.float32)
    if arr.dtype == np.uint32:
        return (arr.astype(np.float64) * (255.0 / 4294967295.0)).astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        data = arr.astype(np.float64)
        if not np.all(np.isfinite(data)):
            raise ImageReadError(f"{path}: contains NaN or inf pixels")
        if data.max() <= 1.0 and data.min() >= 0.0:
            data = data * 255.0
        return data.astype(np.float32)
    raise ImageReadError(
        f"{path}: unsupported pixel type {arr.dtype} (accepted: uint8, uint16, uint32, float, bool)"
    )


def _channels_to_gray(arr: np.ndarray) -> np.ndarray:
    """(H, W, C) with C in 2..4 -> (H, W): drop alpha, BT.601 luma, exact when channels equal."""
    c = arr.shape[-1]
    colour = arr[..., :1] if c == 2 else arr[..., :3]
    if colour.shape[-1] == 1 or (
        np.array_equal(colour[..., 0], colour[..., 1])
        and np.array_equal(colour[..., 0], colour[..., 2])
    ):
        return colour[..., 0]
    gray = colour.astype(np.float64) @ _LUMA
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(np.rint(gray), 0, np.iinfo(arr.dtype).max).astype(arr.dtype)
    return gray


# ----------------------------------------------------------------------------------------------
# Metadata


def _hitachi_pixel_size(raw: Any) -> float | None:
    if isinstance(raw, bytes):
        text = raw.decode("utf-16-le", "ignore") if b"\x00" in raw else raw.decode("latin-1")
    else:
        text = str(raw)
    m = re.search(r"PixelSize\s*=\s*([-+0-9.eE]+)", text)
    return float(m.group(1)) if m else None


def _cz_sem_pixel_size(md: dict[str, Any]) -> float | None:
    for key in ("ap_image_pixel_size", "ap_pixel_size"):
        entry = md.get(key)
        if isinstance(entry, tuple) and len(entry) >= 3 and isinstance(entry[1], int | float):
            factor = _UNIT_TO_NM.get(str(entry[2]).strip())
            if factor is not None:
                return float(entry[1]) * factor
    return None


def _positive(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) and value > 0 else None


def _tiff_metadata(tif: Any, height: int) -> tuple[float | None, str, int | None]:
    """(pixel size nm, its source, info-bar rows from metadata) of an open ``TiffFile``."""
    page = tif.pages[0]
    size, source, bar = None, "none", None
    tag = page.tags.get(40092)
    if tag is not None:
        size = _positive(_hitachi_pixel_size(tag.value))
        if size is not None:
            return size, "TIFF tag 40092 (Hitachi PixelSize)", None
    md = tif.sem_metadata if 34118 in page.tags else None
    if md:
        size = _positive(_cz_sem_pixel_size(md))
        if size is not None:
            return size, "CZ_SEM ap_image_pixel_size", None
    fei = tif.fei_metadata if (34680 in page.tags or 34682 in page.tags) else None
    if fei:
        scan = fei.get("Scan", {}) or fei.get("EScan", {})
        width = scan.get("PixelWidth")
        if isinstance(width, int | float):
            size = _positive(float(width) * 1e9)
            source = "FEI metadata Scan.PixelWidth" if size is not None else "none"
        res_y = fei.get("Image", {}).get("ResolutionY")
        if isinstance(res_y, int) and 0 < res_y < height:
            bar = height - res_y
        if size is not None:
            return size, source, bar
    desc = page.tags.get(270)
    if desc is not None and isinstance(desc.value, str) and _JSON_KEY in desc.value:
        size = _positive(_json_pixel_size(desc.value))
        if size is not None:
            return size, f"ImageDescription {_JSON_KEY}.pixel_size_nm", bar
    return None, "none", bar


def _json_pixel_size(text: str) -> float | None:
    try:
        value = json.loads(text).get(_JSON_KEY, {}).get("pixel_size_nm")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


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
    common value, which lies within 8 levels of the image minimum or maximum), the text on it
    occupying the rest; image rows of an SEM micrograph are noisy and never are. The bar is the
    tallest band of such rows sharing one background value that starts within ``bottom_slack``
    rows of the bottom (frame lines or leftover scan rows may lie below it), with gaps of at
    most ``max_gap`` rows inside it, at least ``min_rows`` high and at most ``max_fraction`` of
    the frame. Up to ``max_frame_rows`` frame lines right above the band (rows of the other
    extreme, e.g. the black line over a white Zeiss bar; see :func:`frame_line_rows`) belong
    to the bar too. The returned height counts from the bar's top row to the last row of the
    frame.
    """
    img = np.asarray(image, dtype=np.float64)
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
    modes = []
    for row in rows[::-1] - lo:  # index 0 = bottom row
        counts = np.bincount(row)
        mode = int(counts.argmax())
        flat = counts[max(mode - 2, 0) : mode + 3].sum() >= flat_fraction * row.size
        extreme = mode <= _EXTREME_LEVELS or mode >= hi - lo - _EXTREME_LEVELS
        modes.append(mode if flat and extreme else -100)
    best: int | None = None
    for start in range(min(bottom_slack + 1, len(modes))):
        if modes[start] < 0:
            continue
        top, gap = start, 0
        for i in range(start, len(modes)):
            if abs(modes[i] - modes[start]) <= 3:
                top, gap = i, 0
            else:
                gap += 1
                if gap > max_gap:
                    break
        if top + 1 - start >= min_rows and top + 1 <= limit and (best is None or top + 1 > best):
            best = top + 1
    if best is None:
        return None
    return best + _frame_rows(img[: h - best], lo, hi, min(max_frame_rows, limit - best))


def frame_line_rows(image: np.ndarray, max_rows: int = 4) -> int:
    """Number of frame lines (at most ``max_rows``) at the bottom of ``image``.

    A frame line is a row with at least 90 % of its pixels within 8 grey levels (0..255
    scale) of the image's minimum or maximum: the thin black or white line vendors draw
    between the micrograph and the information bar. Micrograph rows are noisy and never are.
    Returns 0 for an image without such a range (flat, or spanning fewer than 32 levels); at
    least one row is always left.
    """
    img = np.asarray(image, dtype=np.float64)
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
        low = np.mean(row <= lo + _EXTREME_LEVELS)
        high = np.mean(row >= hi - _EXTREME_LEVELS)
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
    if isinstance(rows, bool) or int(rows) != rows or not 0 <= int(rows) <= h - 1:
        raise ValueError(f"rows must be an integer in [0, {h - 1}] for height {h}, got {rows}")
    rows = int(rows)
    return arr[: h - rows] if rows else arr


# ----------------------------------------------------------------------------------------------
# Reading


def _read_tiff(path: Path) -> tuple[np.ndarray, str, float | None, str, int | None]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise ImageReadError(f"{path}: TIFF file has no image pages")
        page: Any = tif.pages[0]  # a TiffPage: the first page is never a TiffFrame
        arr = page.asarray()
        source_dtype = str(arr.dtype)
        photometric = int(page.photometric)
        axes = page.axes
        if axes.startswith("S") and arr.ndim == 3:
            arr = np.moveaxis(arr, 0, -1)
        if photometric == 3 and page.colormap is not None:  # palette
            cmap = np.asarray(page.colormap)
            if int(arr.max()) >= cmap.shape[-1]:
                raise ImageReadError(f"{path}: palette index beyond the colour map")
            lut = cmap.T  # (entries, 3), 16-bit colour values
            arr = _channels_to_gray(lut[arr].astype(np.uint16))
        elif photometric == 0 and np.issubdtype(arr.dtype, np.integer):  # MINISWHITE
            arr = np.iinfo(arr.dtype).max - arr
        try:
            size, size_source, bar = _tiff_metadata(tif, arr.shape[0])
        except Exception as err:  # metadata is best effort: the pixels are still good
            _log.warning("%s: vendor metadata unreadable (%s); no pixel size", path, err)
            size, size_source, bar = None, "none", None
    return arr, source_dtype, size, size_source, bar


def _read_pil(path: Path) -> tuple[np.ndarray, str, float | None, str]:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode = im.mode
        info = dict(im.info)
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
    size = _positive(_json_pixel_size(str(info.get(_JSON_KEY, ""))))
    source = f"PNG text {_JSON_KEY}.pixel_size_nm" if size is not None else "none"
    return arr, source_dtype, size, source


def read_image(path: str | Path) -> SEMImage:
    """Read an SEM image as float32 grayscale on 0..255 with its pixel size and info bar.

    Raises :class:`ImageReadError` (a ``ValueError``) naming the file for a missing file, an
    unknown extension, or a corrupt/truncated/unsupported image.

    Examples
    --------
    >>> img = read_image("lines_euv_resist_0p827nm.tif")  # doctest: +SKIP
    >>> img.pixel_size_nm, img.pixel_size_source, img.info_bar_rows  # doctest: +SKIP
    (0.827009, 'TIFF tag 40092 (Hitachi PixelSize)', 64)
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ImageReadError(
            f"{path}: unknown image format {ext or '(no extension)'!r}; "
            f"accepted: {', '.join(IMAGE_EXTENSIONS)}"
        )
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    bar: int | None = None
    try:
        if ext in (".tif", ".tiff"):
            arr, source_dtype, size, source, bar = _read_tiff(path)
        else:
            arr, source_dtype, size, source = _read_pil(path)
    except ImageReadError:
        raise
    except Exception as err:  # decoders raise many types for corrupt files
        kind = "TIFF" if ext in (".tif", ".tiff") else ext.lstrip(".").upper()
        raise ImageReadError(
            f"{path}: cannot decode as {kind} (corrupt, truncated or unsupported): {err}"
        ) from err
    data = _to_gray_255(arr, path)
    if bar is None:
        bar = detect_info_bar(data)
    return SEMImage(
        data=np.ascontiguousarray(data),
        path=path,
        pixel_size_nm=size,
        pixel_size_source=source,
        info_bar_rows=bar,
        source_dtype=source_dtype,
    )


# ----------------------------------------------------------------------------------------------
# Writing


def quantize(image: np.ndarray, dtype: str = "uint16") -> np.ndarray:
    """The exact array :func:`write_image` stores for a 0..255 image and an output ``dtype``.

    ``uint16``: ``rint(clip(x, 0, 255) * 65535 / 255)``; ``uint8``: ``rint(clip(x, 0, 255))``;
    ``float32``: the values unchanged.
    """
    data = np.asarray(image, dtype=np.float64)
    if dtype == "uint16":
        return np.rint(np.clip(data, 0, 255) * (65535.0 / 255.0)).astype(np.uint16)
    if dtype == "uint8":
        return np.rint(np.clip(data, 0, 255)).astype(np.uint8)
    if dtype == "float32":
        return np.asarray(image, dtype=np.float32)
    raise ValueError(f"unsupported dtype {dtype!r}; accepted: {WRITE_DTYPES}")


def write_image(
    path: str | Path,
    image: np.ndarray,
    dtype: str = "uint16",
    *,
    pixel_size_nm: float | None = None,
) -> Path:
    """Write a 0..255-scale image: ``uint16`` PNG/TIFF, ``uint8`` PNG/TIFF/BMP, ``float32`` TIFF.

    Integer outputs clip to 0..255 and scale (``uint16``: ``x * 65535 / 255``, rounded), so
    reading them back with :func:`read_image` returns the image to within half a grey level
    / 257. ``float32`` TIFF stores the values unchanged (no clipping), bit-exact on reading.
    ``pixel_size_nm`` is stored as JSON in the TIFF ImageDescription or a PNG text chunk and is
    read back by :func:`read_image`.
    """
    path = Path(path)
    ext = path.suffix.lower()
    arr = np.asarray(image)
    if arr.ndim != 2 or arr.size == 0:
        raise ImageReadError(f"{path}: can only write a non-empty 2-D image, got {arr.shape}")
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
    if not np.all(np.isfinite(arr)):
        raise ImageReadError(f"{path}: image contains NaN or inf values")
    if pixel_size_nm is not None and not (math.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise ImageReadError(f"{path}: pixel_size_nm must be > 0, got {pixel_size_nm}")
    out = quantize(arr, dtype)
    meta = json.dumps({_JSON_KEY: {"pixel_size_nm": pixel_size_nm}}) if pixel_size_nm else None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if ext in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(path, out, description=meta, metadata=None, photometric="minisblack")
        else:
            from PIL import Image
            from PIL.PngImagePlugin import PngInfo

            pnginfo = None
            if meta and ext == ".png":
                pnginfo = PngInfo()
                pnginfo.add_text(_JSON_KEY, meta)
            kwargs: dict[str, Any] = {"pnginfo": pnginfo} if pnginfo else {}
            Image.fromarray(out).save(path, **kwargs)
    except OSError as err:
        raise ImageReadError(f"{path}: cannot write: {err}") from err
    return path
