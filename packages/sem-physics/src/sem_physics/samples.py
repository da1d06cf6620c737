"""The project's own SEM-like sample images (no third-party images are ever shipped).

Three default kinds, each on the 0..255 scale, float32, deterministic by seed:

* ``"lines"``: vertical line/space resist pattern, pitch 28-44 px, duty 0.40-0.55, edges with
  correlated roughness (Gaussian-filtered white noise, sigma 0.8-1.8 px, correlation length
  4-12 px), bright secondary-electron edge bloom on both edges of each line.
* ``"contacts"``: hexagonal array of dark contact holes (pitch 36-56 px, radius ~0.3 pitch,
  +-5 % size variation and low-order rim roughness) with bright rims.
* ``"texture"``: grainy, slowly shaded substrate with bright particles of varied size and
  elongation, each with an SE edge rim.

On request only (``EXTRA_KINDS``; the default sets are the three above):

* ``"resist"``: line/space resist as a low-voltage CD-SEM shows it, pitch 22-44 px, duty
  0.35-0.60, the same edge roughness, rounded across the lines (Gaussian, 1-4 px) with weak or
  no edge bloom (0-25 grey levels), where ``"lines"`` have sharp sidewalls and strong bloom.

All get a slight probe blur (Gaussian, 0.7 px) and mild shot noise (Poisson with 3-6 electrons
per grey level), then are clipped to 0..255: realistic focused inputs for the forward model.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from scipy import ndimage as ndi

from .io import MAX_PIXELS_ENV, max_pixels_limit, pixel_count, write_image
from .validation import as_generator

__all__ = [
    "ALL_SAMPLE_KINDS",
    "EXTRA_KINDS",
    "SAMPLE_KINDS",
    "SampleKind",
    "make_sample",
    "write_samples",
]

#: Every kind the generator makes, in seed order.
SampleKind = Literal["lines", "contacts", "texture", "resist"]
ALL_SAMPLE_KINDS: tuple[str, ...] = get_args(SampleKind)
#: The default sets (demo, S→S protocol, training data); the others are made on request only.
SAMPLE_KINDS: tuple[SampleKind, ...] = ("lines", "contacts", "texture")
EXTRA_KINDS = ("resist",)
_MIN_SIDE = 32


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _rough_edge(rng: np.random.Generator, n: int, sigma_px: float, corr_px: float) -> np.ndarray:
    """Correlated edge displacement: white noise filtered by a Gaussian, rescaled to ``sigma_px``."""
    noise = ndi.gaussian_filter1d(rng.standard_normal(n), corr_px, mode="wrap")
    return noise * (sigma_px / max(float(noise.std()), 1e-12))


def _line_edges(
    rng: np.random.Generator, h: int, w: int, pitch: float, cd: float, sigma: float, corr: float
) -> tuple[np.ndarray, np.ndarray]:
    """Signed distances (px, positive inside) of every pixel to its line's left and right edges.

    Vertical lines of ``pitch`` and width ``cd`` at a random phase, each edge displaced by its
    own correlated roughness (:func:`_rough_edge`).
    """
    first = rng.uniform(-pitch, 0)
    n_lines = int(np.ceil((w - first) / pitch)) + 2
    centres = first + pitch * np.arange(n_lines)  # nominal line centres
    left = centres[:, None] - cd / 2 + np.stack([_rough_edge(rng, h, sigma, corr) for _ in centres])
    right = (
        centres[:, None] + cd / 2 + np.stack([_rough_edge(rng, h, sigma, corr) for _ in centres])
    )
    x = np.arange(w, dtype=np.float64)
    nearest = np.clip(np.rint((x - first) / pitch).astype(int), 0, n_lines - 1)  # line of column
    return x[None, :] - left.T[:, nearest], right.T[:, nearest] - x[None, :]


@dataclass(frozen=True)
class _LineStyle:
    """Uniform ranges of a line/space pattern's drawn parameters (px and grey levels)."""

    pitch_px: tuple[float, float]
    duty: tuple[float, float]
    rough_sigma_px: tuple[float, float]
    rough_corr_px: tuple[float, float]
    space_level: tuple[float, float]
    line_level: tuple[float, float]
    bloom_amp: tuple[float, float]
    bloom_w_px: tuple[float, float] = (1.5, 3.0)
    rounding_px: tuple[float, float] | None = None  # Gaussian rounding across the lines


#: Sharp sidewalls with strong secondary-electron bloom on both edges.
_LINES = _LineStyle((28, 44), (0.40, 0.55), (0.8, 1.8), (4, 12), (40, 70), (95, 130), (50, 90))
#: Resist as a low-voltage CD-SEM shows it: rounded, soft sidewalls, weak or no bloom.
_RESIST = _LineStyle(
    (22, 44), (0.35, 0.60), (0.8, 2.0), (4, 16), (30, 70), (80, 140), (0, 25), rounding_px=(1, 4)
)


def _line_pattern(rng: np.random.Generator, h: int, w: int, style: _LineStyle) -> np.ndarray:
    """Vertical lines of ``style``; the parameters are drawn in a fixed order (seeds stay)."""
    pitch = rng.uniform(*style.pitch_px)
    cd = rng.uniform(*style.duty) * pitch
    sigma, corr = rng.uniform(*style.rough_sigma_px), rng.uniform(*style.rough_corr_px)
    space_level, line_level = rng.uniform(*style.space_level), rng.uniform(*style.line_level)
    bloom_amp, bloom_w = rng.uniform(*style.bloom_amp), rng.uniform(*style.bloom_w_px)
    rounding = None if style.rounding_px is None else rng.uniform(*style.rounding_px)
    s_left, s_right = _line_edges(rng, h, w, pitch, cd, sigma, corr)
    inside = _sigmoid(np.minimum(s_left, s_right) / 0.6)
    # unit-height ridges just inside both edges
    bloom = np.exp(-(((s_left - 1.0) / bloom_w) ** 2)) + np.exp(-(((s_right - 1.0) / bloom_w) ** 2))
    img = space_level + (line_level - space_level) * inside + bloom_amp * bloom
    if rounding is None:
        return img
    return ndi.gaussian_filter1d(img, rounding, axis=1, mode="reflect")


def _add_blob(
    img: np.ndarray,
    cy: float,
    cx: float,
    radius: np.ndarray | float,
    harmonics: np.ndarray,
    level: float,
    rim_amp: float,
    rim_w: float,
    elong: float = 1.0,
    angle: float = 0.0,
) -> None:
    """Add a filled, rim-lit blob (``level`` inside, bright rim) to ``img`` in place."""
    h, w = img.shape
    reach = float(radius) * max(elong, 1.0) * 1.2 + 4 * rim_w + 3
    y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 1, h)
    x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 1, w)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = (c * dx + s * dy) / elong, -s * dx + c * dy
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    k = np.arange(2, 2 + harmonics.shape[0])
    edge = float(radius) * (
        1.0
        + (
            harmonics[:, 0, None, None]
            * np.cos(k[:, None, None] * phi + harmonics[:, 1, None, None])
        ).sum(axis=0)
    )
    depth = edge - rho  # > 0 inside
    img[y0:y1, x0:x1] += level * _sigmoid(depth / 0.6) + rim_amp * np.exp(
        -(((depth - 1.0) / rim_w) ** 2)
    )


def _harmonics(rng: np.random.Generator, n: int = 4, amp: float = 0.02) -> np.ndarray:
    return np.stack([rng.normal(0, amp, n), rng.uniform(0, 2 * np.pi, n)], axis=1)


def _contacts(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    pitch = rng.uniform(36, 56)
    r0 = rng.uniform(0.27, 0.34) * pitch
    surface, hole = rng.uniform(95, 125), rng.uniform(25, 45)
    rim_amp, rim_w = rng.uniform(50, 90), rng.uniform(1.5, 2.5)
    img = np.full((h, w), surface)
    row_step = pitch * np.sqrt(3) / 2
    oy, ox = rng.uniform(0, row_step), rng.uniform(0, pitch)
    for i, cy in enumerate(np.arange(oy - row_step, h + row_step, row_step)):
        shift = 0.5 * pitch * (i % 2)
        for cx in np.arange(ox - pitch + shift, w + pitch, pitch):
            radius = r0 * (1.0 + rng.normal(0, 0.05))
            _add_blob(img, cy, cx, radius, _harmonics(rng), hole - surface, rim_amp, rim_w)
    return img


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.uniform(60, 90)
    grain = ndi.gaussian_filter(rng.standard_normal((h, w)), rng.uniform(1.0, 2.0))
    shade = ndi.gaussian_filter(rng.standard_normal((h // 8 + 1, w // 8 + 1)), 3.0)
    shade = ndi.zoom(shade, (h / shade.shape[0], w / shade.shape[1]), order=1)[:h, :w]
    img = base + grain * (12.0 / max(float(grain.std()), 1e-12))
    img += shade * (15.0 / max(float(shade.std()), 1e-12))
    n_particles = int(rng.integers(25, 60) * h * w / (480 * 640)) + 3
    for _ in range(n_particles):
        radius = float(np.exp(rng.uniform(np.log(3), np.log(16))))
        _add_blob(
            img,
            rng.uniform(0, h),
            rng.uniform(0, w),
            radius,
            _harmonics(rng, amp=0.06),
            level=rng.uniform(20, 60),
            rim_amp=rng.uniform(30, 70),
            rim_w=rng.uniform(1.0, 2.0),
            elong=rng.uniform(1.0, 2.0),
            angle=rng.uniform(0, np.pi),
        )
    return img


_MAKERS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "lines": partial(_line_pattern, style=_LINES),
    "contacts": _contacts,
    "texture": _texture,
    "resist": partial(_line_pattern, style=_RESIST),
}


def make_sample(kind: str, shape: tuple[int, int] = (480, 640), seed: int = 0) -> np.ndarray:
    """One SEM-like focused image of ``kind`` (see ``SAMPLE_KINDS``): float32 (H, W) on 0..255.

    ``shape``: two integers >= 32 whose product is at most the pixel limit of
    :func:`~sem_physics.io.read_image` (:func:`~sem_physics.io.max_pixels_limit`, 100 Mpx by
    default); ``seed``: an integer >= 0 (or a numpy Generator).

    Examples
    --------
    >>> img = make_sample("lines", (96, 128), seed=1)
    >>> img.shape, img.dtype, bool(0 <= img.min() and img.max() <= 255)
    ((96, 128), dtype('float32'), True)
    """
    if kind not in _MAKERS:
        raise ValueError(f"unknown sample kind {kind!r}; accepted: {', '.join(ALL_SAMPLE_KINDS)}")
    h, w = _check_shape(shape)
    rng = as_generator(seed, "seed")
    img = _MAKERS[kind](rng, h, w)
    img = ndi.gaussian_filter(img, 0.7, mode="reflect")
    dose = rng.uniform(3.0, 6.0)
    img = rng.poisson(np.clip(img, 0, None) * dose) / dose
    return np.clip(img, 0, 255).astype(np.float32)


def _is_side(value: object) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return bool(int(value) == value and value >= _MIN_SIDE)  # type: ignore[call-overload,operator]
    except (TypeError, ValueError, OverflowError):
        return False


def _check_shape(shape: object) -> tuple[int, int]:
    """``shape`` as (rows, cols), or a ValueError naming it and the accepted sizes."""
    if not (isinstance(shape, tuple | list) and len(shape) == 2 and all(map(_is_side, shape))):
        raise ValueError(f"shape must be two integers >= {_MIN_SIDE} (rows, cols), got {shape}")
    h, w = int(shape[0]), int(shape[1])
    limit = max_pixels_limit()
    if h * w > limit:
        raise ValueError(
            f"shape {(h, w)} is {pixel_count(h * w)}, above the limit of {pixel_count(limit)} "
            f"(${MAX_PIXELS_ENV} raises it)"
        )
    return h, w


def sample_seed(seed: int, kind: str, index: int) -> int:
    """The seed of sample ``index`` of ``kind`` in a set made with master ``seed``."""
    seq = np.random.SeedSequence([int(seed), ALL_SAMPLE_KINDS.index(kind), int(index)])
    return int(seq.generate_state(1, dtype=np.uint32)[0])


def _differs(path: Path, img: np.ndarray, pixel_size_nm: float | None) -> bool:
    """Whether the existing ``path`` is not, byte for byte, what :func:`write_samples` writes."""
    if not path.is_file():
        return True
    with tempfile.TemporaryDirectory(prefix=".sem-sample-") as tmp:
        ours = write_image(Path(tmp) / path.name, img, "uint16", pixel_size_nm=pixel_size_nm)
        if ours.stat().st_size != path.stat().st_size:  # a large file is not read
            return True
        return ours.read_bytes() != path.read_bytes()


def write_samples(
    out_dir: str | Path,
    n_per_kind: int = 2,
    shape: tuple[int, int] = (480, 640),
    seed: int = 0,
    pixel_size_nm: float | None = None,
    *,
    overwrite: bool = True,
) -> list[Path]:
    """Write ``n_per_kind`` samples of every kind to ``out_dir``, deterministic by ``seed``.

    Files are 16-bit PNG ``<kind>_<i>.png``, or 16-bit TIFF ``<kind>_<i>.tif`` carrying the
    pixel size when ``pixel_size_nm`` is given. Returns the paths in writing order.
    ``overwrite=False``: an existing file at a sample's name that is not that very sample (the
    same bytes: an earlier identical call wrote it) raises :class:`FileExistsError` naming it,
    before anything is written.
    """
    if isinstance(n_per_kind, bool) or int(n_per_kind) != n_per_kind or n_per_kind < 1:
        raise ValueError(f"n_per_kind must be an integer >= 1, got {n_per_kind}")
    out = Path(out_dir)
    ext = ".png" if pixel_size_nm is None else ".tif"
    count = range(int(n_per_kind))
    names = [(kind, i, out / f"{kind}_{i:03d}{ext}") for kind in SAMPLE_KINDS for i in count]
    if not overwrite:
        _refuse_other_files(names, shape, seed, pixel_size_nm)
    paths = []
    for kind, i, path in names:
        img = make_sample(kind, shape, seed=sample_seed(seed, kind, i))
        paths.append(write_image(path, img, "uint16", pixel_size_nm=pixel_size_nm))
    return paths


def _refuse_other_files(
    names: Sequence[tuple[str, int, Path]],
    shape: tuple[int, int],
    seed: int,
    pixel_size_nm: float | None,
) -> None:
    """Raise :class:`FileExistsError` naming the existing files at sample names that differ
    from the samples (files equal to them are kept: rewriting them changes nothing)."""
    other = [
        path
        for kind, i, path in names
        if path.exists()
        and _differs(path, make_sample(kind, shape, seed=sample_seed(seed, kind, i)), pixel_size_nm)
    ]
    if other:
        more = f" (and {len(other) - 1} more)" if len(other) > 1 else ""
        raise FileExistsError(
            f"{other[0]}{more} exists and differs from the sample of that name: not overwritten; "
            "pass --overwrite to replace it or choose another --make-samples DIR"
        )
