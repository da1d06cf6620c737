"""Reading one SEM micrograph as a grayscale float32 (H, W) array on the 0..255 scale.

``sem_physics.io`` is the one place that knows SEM file formats (bit depths, metadata, the
information bar); this module only calls it and adds a small fallback (tifffile / Pillow) for
installations where that module is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "check_header", "crop_bottom", "read_gray"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def _to_gray_255(arr: np.ndarray) -> np.ndarray:
    """Integer images scale by their dtype's maximum; float images are kept, RGB averaged."""
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3]
    if np.issubdtype(arr.dtype, np.integer):
        scale = 255.0 / float(np.iinfo(arr.dtype).max)
        out = arr.astype(np.float32) * np.float32(scale)
    else:
        out = arr.astype(np.float32)
    if out.ndim == 3:
        out = out.mean(axis=-1) if out.shape[-1] == 3 else out[..., 0]
    return out


def _fallback_read(path: Path) -> tuple[np.ndarray, int | None]:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.imread(path)
        if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
            arr = np.moveaxis(arr, 0, -1)
    else:
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    return _to_gray_255(np.asarray(arr)), None


def read_gray(path: str | Path) -> tuple[np.ndarray, int | None]:
    """Read ``path`` as grayscale float32 (H, W), 0..255; also the info-bar rows if detected.

    Raises an ``OSError``/``ValueError`` for unreadable or malformed files.
    """
    path = Path(path)
    try:
        from sem_physics.io import read_image
    except ImportError:
        data, rows = _fallback_read(path)
    else:
        img = read_image(path)
        data, rows = np.asarray(img.data, dtype=np.float32), getattr(img, "info_bar_rows", None)
    if data.ndim != 2 or min(data.shape) < 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{path}: contains NaN or inf pixels")
    return data, rows


def crop_bottom(data: np.ndarray, fraction: float, rows: int | None = None) -> np.ndarray:
    """Remove the SEM information bar: ``rows`` if known (metadata), else ``round(fraction H)``.

    Same rule as ``sem_physics.io.crop_info_bar`` (SPEC §1: fraction 0.0667), applied to the
    array so that it works with either reader.
    """
    n = int(rows) if rows is not None else round(fraction * data.shape[0])
    n = min(max(n, 0), data.shape[0] - 1)
    return data[: data.shape[0] - n] if n > 0 else data


def check_header(path: str | Path) -> None:
    """Open ``path`` and parse its header without decoding the pixels; raise if malformed."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise ValueError(f"{path}: TIFF without pages")
            shape = tif.pages[0].shape
            if len(shape) < 2 or min(shape[:2]) < 2:
                raise ValueError(f"{path}: unexpected TIFF shape {shape}")
    else:
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
            im.verify()
        if min(w, h) < 2:
            raise ValueError(f"{path}: image of size {w}x{h}")
