"""The one image validator of the toolkit: shape, dtype and finiteness checks in one place.

Kept free of scipy and pydantic so that image I/O, the forward model and the numpy <-> torch
converter can share it without importing each other.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .levels import UNIT_OVERSHOOT_MAX

__all__ = [
    "MAX_FLOAT_GREY",
    "MAX_GREY",
    "NEGATIVE_NOISE_REACH",
    "NEGATIVE_SHARE",
    "UnitScaleWarning",
    "as_generator",
    "is_real_numeric",
    "refuse_negative_counts",
    "refuse_other_scale",
    "refuse_sem_image",
    "scale_hint",
    "validate_image",
    "warn_if_unit_scale",
]


def is_real_numeric(arr: np.ndarray) -> bool:
    """Whether ``arr`` holds real numbers (not bool, complex, object or strings): what every
    image check of the toolkit asks before reading values."""
    return bool(
        arr.dtype != bool and np.issubdtype(arr.dtype, np.number) and not np.iscomplexobj(arr)
    )


def validate_image(
    image: Any, name: str = "image", dtype: type[np.floating] | None = np.float64
) -> np.ndarray:
    """Return ``image`` as a 2-D real array or raise a ValueError that says what is wrong.

    A trailing channel axis of length 1 is dropped. ``dtype`` is the returned precision
    (float64 by default, as the forward model computes in it); ``None`` keeps the input's
    numeric dtype and makes no copy. Empty, non-numeric, boolean, complex and non-finite
    (NaN or inf) images are refused; ``name`` starts the message.
    """
    refuse_sem_image(image, name)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D grayscale array (H, W), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty, shape {arr.shape}")
    if not is_real_numeric(arr):
        raise ValueError(f"{name} must be real numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf values")
    if dtype is not None:
        narrowing = np.dtype(dtype).itemsize < arr.dtype.itemsize
        with np.errstate(over="ignore"):  # checked just below
            arr = arr.astype(dtype, copy=False)
        if narrowing and not np.isfinite(arr).all():  # e.g. float64 1e300 in float32
            raise ValueError(f"{name} has values beyond the range of {np.dtype(dtype).name}")
    return arr


def refuse_sem_image(obj: Any, name: str = "image") -> None:
    """A read SEMImage where pixels are expected: say to pass ``.data`` (numpy would make a
    0-d object array of it and fail with "got shape ()")."""
    if hasattr(obj, "pixel_size_nm") and hasattr(obj, "data"):
        raise ValueError(
            f"{name} is a SEMImage: pass its pixels, {name}.data (or "
            f"{name}.without_info_bar().data)"
        )


#: Brightest grey level a 0..255-scale function accepts (the scale plus noise); beyond it the
#: input is on another scale (e.g. 16-bit counts).
MAX_GREY = 1.5 * 255.0


#: Brightest value of a float image the forward model accepts: its own unclipped simulations
#: reach about 310; beyond 1000 the image is on another scale (e.g. 16-bit counts).
MAX_FLOAT_GREY = 1000.0

#: Grey levels below 0 that detector noise reaches: 3.2 x the paper's largest sigma (10).
NEGATIVE_NOISE_REACH = 32.0

#: Share of pixels below ``-NEGATIVE_NOISE_REACH`` that makes an image substantially negative
#: (sem-degrade float32 outputs at the paper's settings have none; a black field with offset 1
#: and sigma 10 has 0.05 %).
NEGATIVE_SHARE = 0.01


def scale_hint(peak: float) -> str:
    """How to bring an image reaching ``peak`` onto the 0..255 grey scale, for a message: the
    factor that puts its brightest value at white and, for counts of a detector's usual bit
    depth (10, 12, 14 or 16 bits), the factor of that depth's full scale, which keeps the
    image's own brightness."""
    full = next((2**b - 1 for b in (10, 12, 14, 16) if 255 < peak <= 2**b - 1), None)
    depth = (
        f", or by 255/{full} = {255.0 / full:.3g} if these are {full.bit_length()}-bit counts "
        f"(0..{full})"
        if full is not None and full != peak
        else ""
    )
    return (
        f"scale it to 0..255, e.g. multiply by 255/{peak:g} = {255.0 / peak:.3g} (its "
        f"brightest value to white){depth}; sem_physics.read_image scales 8/16-bit files to "
        "0..255"
    )


def refuse_other_scale(arr: np.ndarray, name: str = "image") -> None:
    """Refuse an image on another scale than 0..255: integers above 255 (e.g. uint16 counts)
    or floats above :data:`MAX_FLOAT_GREY`."""
    peak = float(np.max(arr))
    integer = np.issubdtype(arr.dtype, np.integer)
    if peak > (255 if integer else MAX_FLOAT_GREY):
        limit = f"{arr.dtype} above 255" if integer else f"float above {MAX_FLOAT_GREY:g}"
        raise ValueError(
            f"{name} reaches {peak:g} ({limit}), beyond the 0..255 grey scale the noise model "
            f"is on ({scale_hint(peak)})"
        )


def refuse_negative_counts(arr: np.ndarray, name: str = "image") -> None:
    """Refuse an image whose grey levels are substantially negative: more than
    :data:`NEGATIVE_SHARE` of its pixels below ``-NEGATIVE_NOISE_REACH`` (a negative pedestal
    or a negated image; noise excursions of an unclipped simulation stay accepted)."""
    low = float(np.min(arr))
    if low >= -NEGATIVE_NOISE_REACH:
        return
    if float(np.mean(arr < -NEGATIVE_NOISE_REACH)) <= NEGATIVE_SHARE:
        return
    share = 100.0 * float(np.mean(arr < 0))
    raise ValueError(
        f"{name} reaches {low:g}, with {share:.3g} % of its pixels below 0: the noise model "
        "assumes counts >= 0 on the 0..255 grey scale (a pedestal-subtracted image needs its "
        "offset added back; a negated image its sign restored)"
    )


class UnitScaleWarning(UserWarning):
    """A 0..255-scale function was given an image on 0..1 (:func:`warn_if_unit_scale`)."""


def warn_if_unit_scale(arr: np.ndarray, name: str = "image", stacklevel: int = 3) -> None:
    """Warn when a 0..255-scale function gets an image on 0..1 (a likely scale slip: it would
    come out nearly black, or drowned in the model's noise): peaking above 0 and at most
    :data:`~sem_physics.levels.UNIT_OVERSHOOT_MAX`, the bound up to which the reader takes a
    float file as 0..1 (a resampled 0..1 image overshoots 1 by a few percent)."""
    peak = float(np.max(arr))
    if 0.0 < peak <= UNIT_OVERSHOOT_MAX:
        warnings.warn(
            f"{name} spans {float(np.min(arr)):g}..{peak:g}: 0..255 grey levels are expected "
            "(multiply a 0..1 image by 255)",
            UnitScaleWarning,
            stacklevel=stacklevel,
        )


def _is_seed(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and bool(value >= 0)


def as_generator(
    rng: np.random.Generator | int | Sequence[int] | None, name: str = "rng"
) -> np.random.Generator:
    """``rng`` itself, or a new generator seeded with it: an integer >= 0 or a sequence of
    them (numpy's entropy), None for fresh entropy.

    Other seeds are refused with a message naming ``name`` and the accepted values (numpy's
    own is "expected non-negative integer" or a TypeError about SeedSequence entropy).
    """
    if isinstance(rng, np.random.Generator):
        return rng
    ok = rng is None or _is_seed(rng)
    if isinstance(rng, list | tuple):
        ok = len(rng) > 0 and all(_is_seed(v) for v in rng)
    if not ok:
        raise ValueError(
            f"{name} must be a numpy Generator, an integer seed >= 0 (or a sequence of them) "
            f"or None, got {rng!r}"
        )
    return np.random.default_rng(rng)
