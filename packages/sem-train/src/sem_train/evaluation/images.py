"""Images for the evaluation protocols: reading, the information-bar crop, the sample set.

Every protocol works on grayscale float32 (H, W) arrays on the 0..255 scale. Reading and the
sample generator come from :mod:`sem_physics` (``sem_physics.io``, ``sem_physics.samples``); a
minimal reader (tifffile / Pillow) and generator are used only when that module is absent, so
the protocols run against any installed ``sem-physics``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "CROP_FRACTION",
    "IMAGE_EXTENSIONS",
    "EvalImage",
    "array_sha256",
    "crop_bottom",
    "file_sha256",
    "list_images",
    "load_image",
    "sample_images",
]

#: Fraction of the image height removed at the bottom (the SEM information bar, SPEC §1).
CROP_FRACTION = 0.0667

try:  # pragma: no cover - depends on the installed sem-physics
    from sem_physics.io import IMAGE_EXTENSIONS as _PHYS_EXT
except ImportError:  # pragma: no cover
    _PHYS_EXT = None

IMAGE_EXTENSIONS: tuple[str, ...] = tuple(
    _PHYS_EXT or (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
)


@dataclass
class EvalImage:
    """A focused (or defocused) image ready for a protocol.

    ``data`` is float32 (H, W), 0..255, information bar already removed; ``pixel_size_nm`` is
    None when unknown (metrology is then skipped for that image, with the reason recorded).
    """

    name: str
    data: np.ndarray
    kind: str = "image"
    pixel_size_nm: float | None = None
    source: str | None = None
    source_sha256: str | None = None
    meta: dict = field(default_factory=dict)


def array_sha256(arr: np.ndarray) -> str:
    """SHA-256 of an array's float32 C-order bytes and shape (identity of a protocol input)."""
    a = np.ascontiguousarray(arr, dtype=np.float32)
    h = hashlib.sha256(str(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by their relative path."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {str(root)!r} does not exist or is not a folder")
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {str(root)!r}"
        )
    return files


def crop_bottom(image: np.ndarray, fraction: float = CROP_FRACTION) -> np.ndarray:
    """Remove the bottom ``round(fraction * H)`` rows (the information bar)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"crop fraction must be in [0, 1), got {fraction}")
    n = round(fraction * image.shape[0])
    return image[: image.shape[0] - n] if n else image


def _to_gray_255(arr: np.ndarray, path: Path) -> np.ndarray:
    a = np.asarray(arr)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    elif a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"{path}: expected a grayscale or RGB image, got shape {a.shape}")
    if np.issubdtype(np.asarray(arr).dtype, np.integer):
        a = a.astype(np.float64) * (255.0 / np.iinfo(np.asarray(arr).dtype).max)
    else:
        a = a.astype(np.float64)
        hi = float(np.nanmax(a)) if a.size else 0.0
        if hi <= 1.0:
            a = a * 255.0
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{path}: image contains NaN or inf values")
    return a.astype(np.float32)


def _read_fallback(path: Path) -> tuple[np.ndarray, float | None]:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return _to_gray_255(tifffile.imread(path), path), None
    from PIL import Image

    with Image.open(path) as im:
        return _to_gray_255(np.asarray(im), path), None


def load_image(
    path: str | Path, *, crop_fraction: float = CROP_FRACTION, kind: str = "image"
) -> EvalImage:
    """Read an SEM image as grayscale 0..255 float32 and remove its information bar.

    With ``sem_physics.io`` installed the bar rows it detects are used and the pixel size is
    read from the file's metadata; otherwise the bottom ``crop_fraction`` is removed.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file {str(p)!r} does not exist")
    pixel: float | None = None
    try:
        from sem_physics.io import crop_info_bar, read_image
    except ImportError:
        data, _ = _read_fallback(p)
        data = crop_bottom(data, crop_fraction)
    else:
        img = read_image(p)
        pixel = img.pixel_size_nm
        data = np.asarray(
            crop_info_bar(img.data, rows=img.info_bar_rows, fraction=crop_fraction), np.float32
        )
    return EvalImage(
        name=p.stem,
        data=np.ascontiguousarray(data, dtype=np.float32),
        kind=kind,
        pixel_size_nm=float(pixel) if pixel else None,
        source=str(p),
        source_sha256=file_sha256(p),
    )


# ----------------------------------------------------------------------------- sample set

#: Pixel size assumed for the generated samples (nm/px), as for the real resist-line image.
SAMPLE_PIXEL_SIZE_NM = 0.827
SAMPLE_KINDS = ("lines", "contacts", "texture")


def _local_sample(kind: str, shape: tuple[int, int], seed: int) -> np.ndarray:
    """Minimal generator used only when ``sem_physics.samples`` is not installed."""
    rng = np.random.default_rng(seed)
    h, w = shape
    if kind == "lines":
        from sem_metrology import make_line_image

        n_lines = max(2, int(w // 40) - 1)
        return make_line_image(n_lines, (h, w), sigma_nm=1.5, seed=rng).clean.astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == "contacts":
        pitch = 48.0
        img = np.full(shape, 150.0)
        for cy in np.arange(pitch / 2, h, pitch):
            for cx in np.arange(pitch / 2, w, pitch):
                r = 14.0 + rng.normal(0, 0.8)
                d = np.hypot(yy - cy - rng.normal(0, 0.5), xx - cx - rng.normal(0, 0.5))
                img = np.minimum(img, 50.0 + 100.0 / (1.0 + np.exp(-(d - r) / 0.7)))
        return img.astype(np.float32)
    if kind == "texture":
        from scipy.ndimage import gaussian_filter

        f = sum(gaussian_filter(rng.normal(size=shape), s) * s for s in (2.0, 6.0))
        f = (f - f.min()) / (np.ptp(f) + 1e-12)
        return (40.0 + 180.0 * f).astype(np.float32)
    raise ValueError(f"sample kind must be one of {SAMPLE_KINDS}, got {kind!r}")


def sample_images(
    n_per_kind: int = 1,
    shape: tuple[int, int] = (480, 640),
    seed: int = 0,
    kinds: tuple[str, ...] = SAMPLE_KINDS,
) -> list[EvalImage]:
    """The project's generated focused images: line/space, contact holes, textures.

    Deterministic in ``seed``; each image carries the pixel size it is rendered at.
    """
    if n_per_kind < 1:
        raise ValueError(f"n_per_kind must be >= 1, got {n_per_kind}")
    if min(shape) < 64:
        raise ValueError(f"sample shape must be at least 64x64 px, got {shape}")
    try:
        from sem_physics.samples import make_sample
    except ImportError:
        make_sample = None
    out = []
    for k_i, kind in enumerate(kinds):
        for i in range(n_per_kind):
            s = int(seed) * 1000 + k_i * 100 + i
            if make_sample is not None:
                data = np.asarray(make_sample(kind, shape=shape, seed=s), dtype=np.float32)
            else:
                data = _local_sample(kind, shape, s)
            out.append(
                EvalImage(
                    name=f"{kind}_{i:02d}",
                    data=np.ascontiguousarray(data, dtype=np.float32),
                    kind=kind,
                    pixel_size_nm=SAMPLE_PIXEL_SIZE_NM,
                    source=f"generated:{kind}:seed={s}",
                )
            )
    for im in out:
        im.source_sha256 = array_sha256(im.data)
    return out
