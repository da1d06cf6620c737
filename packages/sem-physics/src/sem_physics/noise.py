"""Poisson-Gaussian detector noise of an SEM: ``N(z) = Poisson(z * dose) / dose + Normal(0, sigma^2)``.

``dose`` is the number of detected electrons per unit of intensity (0..255 scale); larger dose
means less shot noise. Negative intensities are clipped to 0 before the Poisson draw (a count
cannot be negative). Mean and variance of the result are ``max(z, 0)`` and
``max(z, 0) / dose + sigma^2``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .optional import require
from .validation import as_generator

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

__all__ = ["poisson_gaussian", "poisson_gaussian_inplace", "poisson_gaussian_torch"]


def _check_noise_params(dose: float | None, sigma: float | None) -> None:
    if dose is not None and not (np.isfinite(dose) and dose > 0):
        raise ValueError(
            f"dose must be a finite number > 0 (electrons per intensity unit), got {dose}"
        )
    if sigma is not None and not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0 (0..255 scale), got {sigma}")


def poisson_gaussian(
    z: np.ndarray,
    dose: float | None,
    sigma: float | None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Apply Poisson (``dose``) then Gaussian (``sigma``) noise; ``None`` switches a term off.

    Returns float32 (Poisson draws are made in float64 to keep counts exact). ``z`` is not
    changed: the noise is added to a float64 copy (:func:`poisson_gaussian_inplace`). ``rng``:
    a generator or a seed for one (as :func:`~sem_physics.forward.degrade` takes).
    """
    _check_noise_params(dose, sigma)
    z64 = np.array(z, dtype=np.float64, order="C")
    return poisson_gaussian_inplace(z64, dose, sigma, as_generator(rng))


#: Pixels per draw: bounds the int64 counts and float64 normals held at once (4 MiB each).
_CHUNK = 1 << 19


def poisson_gaussian_inplace(
    z: np.ndarray,
    dose: float | None,
    sigma: float | None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """:func:`poisson_gaussian` computed in place: ``z`` (float64, C-contiguous) is overwritten.

    The draws are those of one ``rng.poisson`` over the whole image followed by one
    ``rng.normal`` over it, made chunk by chunk in the same C order (numpy's generator draws
    element after element, so a chunked draw continues the stream exactly): the result is bit
    for bit that of the whole-image draws, with temporaries of a few MiB instead of frames.
    """
    _check_noise_params(dose, sigma)
    rng = as_generator(rng)
    if z.dtype != np.float64 or not z.flags.c_contiguous or not z.flags.writeable:
        raise ValueError("z must be a writeable C-contiguous float64 array (it is overwritten)")
    flat = z.reshape(-1)
    if not all(np.isfinite(flat[a : a + _CHUNK]).all() for a in range(0, flat.size, _CHUNK)):
        raise ValueError("the noise-free image contains NaN or inf values")
    if dose is not None:
        np.clip(flat, 0.0, None, out=flat)
        flat *= dose
        for a in range(0, flat.size, _CHUNK):
            part = flat[a : a + _CHUNK]
            np.divide(rng.poisson(part), dose, out=part)
    out = np.empty(z.shape, dtype=np.float32)
    dest = out.reshape(-1)
    for a in range(0, flat.size, _CHUNK):
        part = flat[a : a + _CHUNK]
        if sigma is not None and sigma > 0:
            part += rng.normal(0.0, sigma, size=part.shape)
        dest[a : a + _CHUNK] = part
    return out


def poisson_gaussian_torch(
    z: torch.Tensor,
    dose: torch.Tensor | float | None,
    sigma: torch.Tensor | float | None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """Torch version; ``dose``/``sigma`` may be per-sample tensors broadcastable to ``z``,
    ``generator`` one per image (each image's noise drawn from its own)."""
    torch = require("torch", "sem-physics[torch]", "poisson_gaussian_torch")

    from .batched import poisson_gaussian_batch

    if dose is not None:
        dose_t = torch.as_tensor(dose, dtype=z.dtype, device=z.device)
        if torch.any(dose_t <= 0) or not torch.all(torch.isfinite(dose_t)):
            raise ValueError("dose must be finite and > 0")
    if sigma is not None:
        sigma_t = torch.as_tensor(sigma, dtype=z.dtype, device=z.device)
        if not torch.all(torch.isfinite(sigma_t) & (sigma_t >= 0)):
            raise ValueError("sigma must be finite and >= 0")
    if not torch.all(torch.isfinite(z)):
        raise ValueError("the noise-free images contain NaN or inf values")
    return poisson_gaussian_batch(z, dose, sigma, generator)
