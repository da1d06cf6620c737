"""Reading SEM micrographs for training: a thin layer over :mod:`sem_physics.io`.

``sem_physics.io`` is the one place that knows SEM file formats (bit depths, colour, vendor
metadata, the information bar). This module adds what indexing a large folder tree needs: a
cheap header check that does not decode the pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
from sem_physics.io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    _check_declared_size,
    crop_info_bar,
    held_tiff_log,
    max_pixels_limit,
    open_pil_checked,
    read_image,
)

__all__ = ["IMAGE_EXTENSIONS", "check_header", "crop_bottom", "dim_picture_note", "read_gray"]

log = logging.getLogger(__name__)


def read_gray(path: str | Path) -> tuple[np.ndarray, int | None]:
    """Grayscale float32 (H, W) on 0..255 and the information-bar height in rows (or None).

    Raises :class:`sem_physics.io.ImageReadError` (a ``ValueError``) naming the file when it
    cannot be read. A dim picture from a file of more than 8 bits (12-bit data in a 16-bit
    TIFF reads as 0..16 of 255) is warned about once per file (:func:`dim_picture_note`).
    """
    img = read_image(path)
    if min(img.data.shape) < 2:
        raise ImageReadError(f"{path}: image of shape {img.data.shape} is too small")
    key = str(img.path)
    if key not in _DIM_CHECKED:
        _DIM_CHECKED.add(key)
        note = dim_picture_note(img.data, img.source_dtype)
        if note is not None:
            log.warning("%s: %s", img.path, note)
    return img.data, img.info_bar_rows


#: Files :func:`read_gray` checked for a dim picture (each is warned about once per process).
_DIM_CHECKED: set[str] = set()


def dim_picture_note(data: np.ndarray, source_dtype: str) -> str | None:
    """Why a picture read from a file of ``source_dtype`` trains badly when it is dim, or
    None: the rule of ``sem restore``, sem-degrade and sem-psf
    (:func:`sem_physics.levels.dim_picture_level`), applied to files of more than 8 bits."""
    from sem_physics.levels import dim_picture_level, fill_hint

    level = dim_picture_level(data, source_dtype)
    if level is None:
        return None
    return (
        f"dim {source_dtype} picture: its 99.9th percentile is {level:.3g} of 255 grey levels; "
        f"training reads it as it is, at {level / 255:.1%} of the range "
        f"({fill_hint(data, source_dtype)} to train on it at full contrast)"
    )


def crop_bottom(data: np.ndarray, fraction: float, rows: int | None = None) -> np.ndarray:
    """Remove the SEM information bar: ``rows`` if known, else ``round(fraction H)`` (arXiv 2604.05960, Sec. 2.4: the bottom 6.7 %)."""
    if rows is not None:
        rows = min(int(rows), data.shape[0] - 1)
    return crop_info_bar(data, rows=rows, fraction=fraction)


def _check_tiff_extent(path: Path, offsets: Sequence[int], counts: Sequence[int]) -> None:
    """A truncated TIFF: its header is intact but its pixel data runs past the file's end
    (found from the strip/tile table, without decoding)."""
    if not offsets or len(offsets) != len(counts):
        raise ImageReadError(f"{path}: truncated or malformed TIFF: no pixel data table")
    size = path.stat().st_size
    end = max((int(o) + int(c) for o, c in zip(offsets, counts, strict=True) if c), default=0)
    if end > size:
        raise ImageReadError(
            f"{path}: truncated TIFF: its pixel data runs to byte {end}, the file has {size}"
        )


def _pil_header(path: Path, limit: int) -> tuple[int, int]:
    """(rows, columns) of a PNG, JPEG or BMP, refused above ``limit`` pixels as
    :func:`sem_physics.io.read_image` refuses it."""
    with open_pil_checked(path, limit) as im:
        w, h = im.size
        im.verify()
    return h, w


def check_header(path: str | Path) -> tuple[int, int]:
    """Parse the header of ``path`` without decoding the pixels; raise if it is malformed or
    declares more pixels than :func:`sem_physics.io.read_image` reads
    (:func:`sem_physics.io.max_pixels_limit`).

    Returns the image's (rows, columns)."""
    path = Path(path)
    limit = max_pixels_limit()
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: file is empty (0 bytes)")
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            # what tifffile logs of a bad file (``invalid offset to first page``) is held
            # back: the file's one skip line says why, and read_image notes it for a read one
            with held_tiff_log(), tifffile.TiffFile(path) as tif:
                if not tif.pages:
                    raise ImageReadError(f"{path}: TIFF without image pages")
                page = cast("tifffile.TiffPage", tif.pages[0])  # page 0 is never a TiffFrame
                shape = (page.imagelength, page.imagewidth)
                _check_declared_size(path, *shape, page.imagedepth, limit)
                _check_tiff_extent(path, page.dataoffsets, page.databytecounts)
        else:
            shape = _pil_header(path, limit)
    except ImageReadError:
        raise
    except Exception as err:  # decoders raise many types for malformed files
        raise ImageReadError(f"{path}: malformed image header: {err}") from err
    if len(shape) < 2 or min(shape[:2]) < 2:
        raise ImageReadError(f"{path}: unexpected image shape {shape}")
    return int(shape[0]), int(shape[1])
