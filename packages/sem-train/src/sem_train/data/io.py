"""Reading SEM micrographs for training: a thin layer over :mod:`sem_physics.io`.

``sem_physics.io`` is the one place that knows SEM file formats (bit depths, colour, vendor
metadata, the information bar). This module adds what indexing a large folder tree needs: a
cheap header check that does not decode the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sem_physics.io import IMAGE_EXTENSIONS, ImageReadError, crop_info_bar, read_image

__all__ = ["IMAGE_EXTENSIONS", "check_header", "crop_bottom", "read_gray"]


def read_gray(path: str | Path) -> tuple[np.ndarray, int | None]:
    """Grayscale float32 (H, W) on 0..255 and the information-bar height in rows (or None).

    Raises :class:`sem_physics.io.ImageReadError` (a ``ValueError``) naming the file when it
    cannot be read.
    """
    img = read_image(path)
    if min(img.data.shape) < 2:
        raise ImageReadError(f"{path}: image of shape {img.data.shape} is too small")
    return img.data, img.info_bar_rows


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


def check_header(path: str | Path) -> None:
    """Parse the header of ``path`` without decoding the pixels; raise if it is malformed."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: file is empty (0 bytes)")
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                if not tif.pages:
                    raise ImageReadError(f"{path}: TIFF without image pages")
                page = tif.pages[0]
                shape = page.shape
                _check_tiff_extent(path, page.dataoffsets, page.databytecounts)
        else:
            from PIL import Image

            with Image.open(path) as im:
                w, h = im.size
                im.verify()
            shape = (h, w)
    except ImageReadError:
        raise
    except Exception as err:  # decoders raise many types for malformed files
        raise ImageReadError(f"{path}: malformed image header: {err}") from err
    if len(shape) < 2 or min(shape[:2]) < 2:
        raise ImageReadError(f"{path}: unexpected image shape {shape}")
