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
logged, so outputs and coordinates refer to the displayed frame; a frame with an info bar
(from the metadata or by look, at the bottom of the stored frame) is read as stored, with a
note, so that the bar stays where it is cropped and put back.

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
``SEMImage.acquisition`` holds the acquisition conditions those tags state (beam kV,
magnification, working distance, dwell time, detector, instrument, date:
:mod:`sem_physics.acquisition`); it is empty for a file without vendor tags and never
changes how the pixel size is read.
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

Layout: this module reads and writes files and is the entry point (every name below can be
imported from it); the rules it applies live in :mod:`sem_physics.levels` (value scale, colour,
dim pictures), :mod:`sem_physics.pixel_size` (metadata readers), :mod:`sem_physics.orientation`
(tag 274), :mod:`sem_physics.info_bar` (bar detection and cropping) and
:mod:`sem_physics.image_errors` (:class:`ImageReadError`, notes logged once per file).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .acquisition import Acquisition, tiff_acquisition
from .atomic import atomic_write
from .folders import IMAGE_EXTENSIONS
from .image_errors import ImageReadError, warn_once
from .info_bar import DEFAULT_CROP_FRACTION, crop_info_bar, detect_info_bar, frame_line_rows
from .levels import DIM_BELOW as DIM_BELOW
from .levels import DIM_PERCENTILE as DIM_PERCENTILE
from .levels import UNIT_OVERSHOOT_MAX as UNIT_OVERSHOOT_MAX
from .levels import UNIT_OVERSHOOT_SHARE as UNIT_OVERSHOOT_SHARE
from .levels import colour_notes, to_gray_255
from .levels import dim_picture_level as dim_picture_level
from .levels import is_dim as is_dim
from .levels import picture_level as picture_level
from .levels import warn_dim_picture as warn_dim_picture
from .orientation import orient, orientation_kept_note, orientation_tag
from .orientation import orientation_note as orientation_note
from .pixel_size import (
    JSON_KEY,
    PIXEL_SIZE_RANGE_NM,
    RESOLUTION_MAX_NM,
    check_pixel_size_nm,
    json_pixel_size,
    pick_pixel_size,
    tiff_metadata,
)
from .validation import validate_image, warn_if_unit_scale

__all__ = [
    "DEFAULT_CROP_FRACTION",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "JPEG_NOTE",
    "MAX_PIXELS_ENV",
    "PIXEL_SIZE_RANGE_NM",
    "RESOLUTION_MAX_NM",
    "Acquisition",
    "ImageReadError",
    "SEMImage",
    "check_image_path",
    "check_pixel_size_nm",
    "clipped_counts",
    "crop_info_bar",
    "detect_info_bar",
    "frame_line_rows",
    "held_tiff_log",
    "max_pixels_limit",
    "multipage_note",
    "open_pil_checked",
    "quantize",
    "read_image",
    "tiff_samples",
    "write_image",
]

DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "SEM_MAX_PIXELS"
WRITE_DTYPES = ("uint16", "uint8", "float32", "uint32")
#: Integer output types: the file's values per grey level of the 0..255 scale.
_INTEGER_SCALE = {"uint8": 1.0, "uint16": 65535.0 / 255.0, "uint32": 4294967295.0 / 255.0}
_PIL_FORMAT = {".png": "PNG", ".bmp": "BMP"}
#: Pixels :func:`quantize` converts at a time (8 MiB of float64 temporaries).
_QUANTIZE_BAND_PX = 1 << 20
_log = logging.getLogger(__name__)
_PIL_LOCK = threading.Lock()  # guards the PIL-global decompression-bomb limit
#: TIFF compressions that are JPEG (old-style, new-style, lossy JPEG of DNG).
_JPEG_COMPRESSIONS = frozenset({6, 7, 34892})
#: What reading a JPEG adds to ``SEMImage.notes`` (and logs, after the file name).
JPEG_NOTE = (
    "JPEG input: lossy compression removes the fine detail and noise that the blind PSF "
    "estimate and restorations rely on (results can mislead); use the microscope's TIFF or PNG"
)


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
    #: acquisition conditions from the vendor tags (empty when the file states none)
    acquisition: Acquisition = field(default_factory=Acquisition)

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
# Reading


def _check_declared_size(path: Path, height: int, width: int, depth: int, limit: int) -> None:
    """Refuse an image whose header declares more than ``limit`` pixels, before decoding."""
    n = int(height) * int(width) * max(int(depth), 1)
    if n > limit:
        size = f"{width}x{height}" + (f"x{depth}" if depth > 1 else "")
        raise ImageReadError(
            f"{path}: declares {size} px = {pixel_count(n)}, above the limit of "
            f"{pixel_count(limit)} (raise it with ${MAX_PIXELS_ENV}, max_pixels=, or the "
            "--max-pixels of sem restore, sem-measure, sem-psf and sem-degrade)"
        )


def pixel_count(n: int) -> str:
    """``n`` pixels for a message: ``"40,000 px"``, ``"900,000,000 px (900 Mpx)"`` from 1 Mpx."""
    n = int(n)
    return f"{n:,} px" + (f" ({n / 1e6:.4g} Mpx)" if n >= 1_000_000 else "")


def multipage_note(pages: int) -> str:
    """What reading a TIFF of ``pages`` pages (more than one) adds to ``SEMImage.notes``."""
    return f"{pages:,} pages; only the first is read"


class _TiffRead(NamedTuple):
    """What :func:`_read_tiff` finds in a TIFF file, the pixels as stored."""

    pixels: np.ndarray
    source_dtype: str
    pixel_size_nm: float | None
    pixel_size_source: str
    info_bar_rows: int | None
    jpeg: bool
    pages: int
    palette8: bool  # an 8-bit palette
    orientation: int  # the Orientation tag (``read_image`` turns the pixels)
    acquisition: Acquisition


_TIFF_HELD = threading.local()  # .held: the list of this thread's held tifffile records


def _hold_tiff_record(record: logging.LogRecord) -> bool:
    """The filter on tifffile's logger: False (not emitted) for a record logged while this
    thread is in :func:`held_tiff_log`, which keeps its message."""
    held = getattr(_TIFF_HELD, "held", None)
    if held is None:
        return True
    held.append(" ".join(record.getMessage().split()))
    return False


logging.getLogger("tifffile").addFilter(_hold_tiff_record)


@contextmanager
def held_tiff_log() -> Iterator[list[str]]:
    """What tifffile logs in this thread within the block, held back in the list yielded.

    tifffile logs what it finds wrong in a file (``invalid offset to first page``,
    ``<TiffTag.fromfile> raised TiffFileError(...)``) before it raises or reads on: printed as
    they came, they were lines without the command's name beside its one-line error.
    :func:`read_image` drops them when the file cannot be read (its error says why) and keeps
    them as notes about the file (``TIFF reader: ...``) when it can; a caller opening the file
    again after it (to copy its tags) holds them back too, already noted.
    """
    outer = getattr(_TIFF_HELD, "held", None)
    held: list[str] = []
    _TIFF_HELD.held = held
    try:
        yield held
    finally:
        _TIFF_HELD.held = outer


def _read_tiff(path: Path, limit: int) -> _TiffRead:
    """The pixels as stored and what the file says about them (:class:`_TiffRead`).

    An 8-bit palette (colour-map entries all multiples of 257, as 8-bit values are stored, or
    all multiples of 256, as ImageJ, Pillow and JEOL store them: ``v << 8``, read as ``v``) is
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
        arr = _page_samples(path, page, limit)
        source_dtype = str(arr.dtype)
        jpeg = int(page.compression) in _JPEG_COMPRESSIONS
        photometric = int(page.photometric)
        palette8 = False
        axes = page.axes
        if axes.startswith("S") and arr.ndim == 3:
            arr = np.moveaxis(arr, 0, -1)
        tag = page.tags.get(274)
        orientation = orientation_tag(tag.value if tag is not None else 1)
        if photometric == 3 and page.colormap is not None:  # palette
            cmap = np.asarray(page.colormap)
            if arr.size and int(arr.max()) >= cmap.shape[-1]:
                raise ImageReadError(f"{path}: palette index beyond the colour map")
            lut = cmap.T  # (entries, 3), 16-bit colour values
            palette8 = not np.any(lut % 257)
            if not palette8 and not np.any(lut % 256):  # 8-bit entries stored as v << 8
                lut = (lut >> 8) * 257  # (ImageJ, Pillow, JEOL): v, not v * 256 / 257
                palette8 = True
            arr = lut[arr].astype(np.uint16)  # (H, W, 3): made grey (and noted) as RGB is
        elif photometric == 0 and np.issubdtype(arr.dtype, np.integer):  # MINISWHITE
            arr = np.iinfo(arr.dtype).max - arr
        try:
            size, size_source, bar = tiff_metadata(tif, arr.shape[0], path)
        except Exception as err:  # metadata is best effort: the pixels are still good
            _log.warning("%s: vendor metadata unreadable (%s); no pixel size", path, err)
            size, size_source, bar = None, "none", None
        acquisition = tiff_acquisition(tif)  # apart from the pixel size; never raises
        try:
            pages = len(tif.pages)
        except Exception:  # a broken chain after the first page: that page is still good
            pages = 1
    return _TiffRead(
        arr, source_dtype, size, size_source, bar, jpeg, pages, palette8, orientation, acquisition
    )


def _page_samples(path: Path, page: Any, limit: int) -> np.ndarray:
    """A TIFF page's samples as stored: tifffile's, or Pillow's where tifffile needs the
    optional imagecodecs package for the page's compression (:func:`_pillow_tiff_samples`)."""
    try:
        return page.asarray()
    except Exception as err:  # a compression tifffile decodes only with imagecodecs
        if "imagecodecs" not in str(err):
            raise
        return _pillow_tiff_samples(path, page, limit, err)


def _pillow_tiff_samples(path: Path, page: Any, limit: int, err: Exception) -> np.ndarray:
    """The first page's samples as stored, decoded by Pillow, whose libtiff reads LZW,
    PackBits, Deflate and JPEG without the optional imagecodecs package tifffile needs for
    them (LZW is what image editors write); tifffile's ``err`` is raised again when Pillow
    fails or gives another shape or sample type."""
    from PIL import Image

    try:
        with open_pil_checked(path, limit) as im, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            arr = np.asarray(im)
    except Exception:
        raise err from None
    want = np.dtype(page.dtype)
    same_type = arr.dtype.kind == want.kind and arr.dtype.itemsize == want.itemsize
    if arr.shape != tuple(page.shape) or not same_type:
        raise err
    return arr.astype(want.newbyteorder("="), copy=False)


def tiff_samples(path: str | os.PathLike[str]) -> np.ndarray:
    """The first page of a TIFF as stored (no colour map, scale or Orientation applied),
    decoded as :func:`read_image` decodes it (Pillow where tifffile needs imagecodecs)."""
    import tifffile

    path = Path(path)
    with held_tiff_log(), tifffile.TiffFile(path) as tif:  # its complaints: said when read
        page: Any = tif.pages[0]
        declared = int(page.imagelength) * int(page.imagewidth)  # accepted when read
        return _page_samples(path, page, max(declared, 1))


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


#: PNG colour types with more than one sample per pixel (grey + alpha, RGB, RGBA): at 16 bits
#: Pillow decodes them to 8 bits.
_PNG_MULTI_SAMPLE = {4: "grey + alpha", 2: "RGB", 6: "RGBA"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _refuse_16bit_colour_png(path: Path) -> None:
    """:class:`ImageReadError` for a PNG whose header (IHDR: bit depth at byte 24, colour type
    at 25) declares 16-bit colour or grey + alpha: Pillow, the only PNG decoder among the
    dependencies, would read it as 8 bits and lose the depth silently."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
    except OSError:
        return  # the decoder reports it
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return
    depth, colour = head[24], head[25]
    if depth == 16 and colour in _PNG_MULTI_SAMPLE:
        raise ImageReadError(
            f"{path}: 16-bit {_PNG_MULTI_SAMPLE[colour]} PNG: it cannot be read at its full "
            "depth (Pillow decodes it to 8 bits); save it as a 16-bit grayscale PNG or a "
            f"16-bit TIFF (e.g. magick {path.name} -depth 16 {path.stem}.tif)"
        )


def _read_pil(path: Path, limit: int) -> tuple[np.ndarray, str, float | None, str, int]:
    """(pixels, sample type, pixel size, its source, EXIF Orientation), the pixels as stored
    (``read_image`` turns them). A 16-bit colour PNG is refused (it would read as 8 bits)."""
    from PIL import Image

    _refuse_16bit_colour_png(path)
    with open_pil_checked(path, limit) as im:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
            mode = im.mode
            info = dict(im.info)
            orientation = orientation_tag(im.getexif().get(274, 1))
            target = {"P": "RGBA", "PA": "RGBA", "1": "L"}.get(mode)
            if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                target = "RGB"
            arr = np.asarray(im.convert(target) if target else im)
    if mode.startswith("I;16") or (mode == "I" and path.suffix.lower() == ".png"):
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageReadError(f"{path}: 16-bit image with values outside 0..65535")
        arr = arr.astype(np.uint16, copy=False)  # an I;16 image is uint16 already
    elif mode == "I":
        raise ImageReadError(f"{path}: 32-bit integer images are not supported")
    source_dtype = str(arr.dtype)
    candidate = json_pixel_size(str(info.get(JSON_KEY, "")))
    size, source = pick_pixel_size([(candidate, f"PNG text {JSON_KEY}.pixel_size_nm")], path)
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
    acquisition = Acquisition()
    kind = "TIFF" if ext in (".tif", ".tiff") else ext.lstrip(".").upper()
    tiff_log: list[str] = []
    try:
        if kind == "TIFF":
            with held_tiff_log() as tiff_log:
                got = _read_tiff(path, limit)
            arr, source_dtype, size, source = got[:4]
            bar, jpeg, pages, palette8, orientation, acquisition = got[4:]
            del got  # holds the decoded pixels, freed once converted
        else:
            arr, source_dtype, size, source, orientation = _read_pil(path, limit)
            jpeg = kind in ("JPG", "JPEG")
        notes = colour_notes(arr)
        data, value_scale, read_notes = to_gray_255(arr, path)
        del arr  # the decoded pixels: freed before the info bar search's temporaries
        if palette8:  # grey levels per unit of the 8-bit colour-map entries
            value_scale = 1.0
    except ImageReadError:
        raise
    except MemoryError as err:
        raise ImageReadError(f"{path}: not enough memory to decode the image") from err
    except Exception as err:  # decoders raise many types for corrupt files
        # the decoder's text without the file name it may quote again (Pillow's "cannot
        # identify image file '...'"): the message names the file once, first
        why = " ".join(str(err).replace(f" {str(path)!r}", "").split()) or type(err).__name__
        raise ImageReadError(
            f"{path}: cannot decode as {kind} (corrupt, truncated or unsupported): {why}"
        ) from err
    if bar is None:
        bar = detect_info_bar(_brightened_for_bar_search(data, source_dtype))
    if orientation != 1 and bar is not None:
        read_notes = (orientation_kept_note(orientation, bar), *read_notes)
    elif orientation != 1:
        data = orient(data, orientation)
        read_notes = (orientation_note(orientation), *read_notes)
    read_notes = (*(f"TIFF reader: {text}" for text in dict.fromkeys(tiff_log)), *read_notes)
    for note in read_notes:
        notes = (*notes, note)
        if log_notes:
            warn_once(path, note)
    if jpeg:
        notes = (*notes, JPEG_NOTE)
        if log_notes:
            warn_once(path, JPEG_NOTE)
    if pages > 1:
        notes = (*notes, multipage_note(pages))
        if log_notes:
            warn_once(path, multipage_note(pages))
    return SEMImage(
        data=np.ascontiguousarray(data),
        path=path,
        pixel_size_nm=size,
        pixel_size_source=source,
        info_bar_rows=bar,
        source_dtype=source_dtype,
        notes=notes,
        value_scale=value_scale,
        acquisition=acquisition,
    )


# ----------------------------------------------------------------------------------------------
# Writing


def _brightened_for_bar_search(data: np.ndarray, source_dtype: str) -> np.ndarray:
    """``data``, or for a dim picture of a file of more than 8 bits (12-bit counts in a 16-bit
    file read as 0..16) a copy multiplied by the power of two that brings its maximum into
    128..255: the info bar search's black, white and flat levels are grey levels of the 0..255
    scale, which such a picture spans too little of (an 8-bit picture that is dark is dark)."""
    try:
        wide = np.dtype(source_dtype).kind == "u" and np.dtype(source_dtype).itemsize > 1
    except TypeError:
        return data
    hi = float(np.max(data)) if wide and data.size else 0.0
    if not 0.0 < hi < 127.5:
        return data
    return data * np.float32(2.0 ** math.floor(math.log2(255.0 / hi)))


def quantize(image: np.ndarray, dtype: str = "uint16") -> np.ndarray:
    """The exact array :func:`write_image` stores for a 0..255 image and an output ``dtype``.

    ``uint16``: ``rint(clip(x, 0, 255) * 65535 / 255)``; ``uint8``: ``rint(clip(x, 0, 255))``;
    ``uint32``: ``rint(clip(x, 0, 255) * (2**32 - 1) / 255)`` (exact in float64);
    ``float32``: the values unchanged (no float64 copy: a float32 image is returned as is).
    The float64 arithmetic runs on bands of :data:`_QUANTIZE_BAND_PX` pixels written into the
    integer result (elementwise, so the same values as on the whole array), which keeps a
    large frame's temporaries to a few MiB instead of 24 bytes per pixel.
    """
    if dtype == "float32":
        return np.asarray(image, dtype=np.float32)
    if dtype not in WRITE_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; accepted: {WRITE_DTYPES}")
    arr = np.asarray(image)
    factor = _INTEGER_SCALE[dtype]
    if arr.ndim == 0 or arr.dtype.kind not in "biuf":  # no rows to band, or no real numbers
        data = np.asarray(arr, dtype=np.float64)
        return np.rint(np.clip(data, 0, 255) * factor).astype(dtype)
    out = np.empty_like(arr, dtype=dtype)
    step = max(1, _QUANTIZE_BAND_PX // max(1, int(np.prod(arr.shape[1:]))))
    buf = np.empty((min(step, arr.shape[0]), *arr.shape[1:]), dtype=np.float64)
    for a in range(0, arr.shape[0], step):
        band = buf[: min(step, arr.shape[0] - a)]
        np.copyto(band, arr[a : a + step], casting="unsafe")  # as astype(np.float64)
        np.clip(band, 0, 255, out=band)
        if dtype != "uint8":
            np.multiply(band, factor, out=band)
        np.rint(band, out=band)
        out[a : a + step] = band
    return out


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
    orientation: int = 1,
) -> Path:
    """Write a 0..255-scale image: ``uint16`` PNG/TIFF, ``uint8`` PNG/TIFF/BMP, ``float32`` or
    ``uint32`` TIFF.

    ``orientation`` other than 1 is stored as the Orientation tag (TIFF tag 274, PNG EXIF; BMP
    has none), for a frame kept as stored under the tag its source carried.

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
        "uint32": (".tif", ".tiff"),
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
    meta = json.dumps({JSON_KEY: {"pixel_size_nm": pixel_size_nm}}) if pixel_size_nm else None

    def write(tmp: Path) -> None:
        if ext in (".tif", ".tiff"):
            import tifffile

            tags = [(274, "H", 1, orientation, True)] if orientation != 1 else []
            tifffile.imwrite(
                tmp, out, description=meta, metadata=None, photometric="minisblack", extratags=tags
            )
        else:
            from PIL import Image
            from PIL.PngImagePlugin import PngInfo

            pnginfo = None
            if meta and ext == ".png":
                pnginfo = PngInfo()
                pnginfo.add_text(JSON_KEY, meta)
            kwargs: dict[str, Any] = {"pnginfo": pnginfo} if pnginfo else {}
            if orientation != 1 and ext == ".png":
                exif = Image.Exif()
                exif[274] = orientation
                kwargs["exif"] = exif
            Image.fromarray(out).save(tmp, format=_PIL_FORMAT[ext], **kwargs)

    return atomic_write(path, write)
