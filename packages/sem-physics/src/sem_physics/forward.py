"""The SEM defocus forward model ``y = N(a (x ⊛ h) + b)``, numpy and torch.

arXiv 2604.05960, Sec. 5.2 / Eq. 21.

:func:`validate_image` (defined in :mod:`sem_physics.validation`) is the one image validator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .convolution import convolve_reflect, convolve_reflect_torch
from .noise import poisson_gaussian, poisson_gaussian_torch
from .params import DegradationParams
from .psf import airy_psf
from .validation import validate_image

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_ABS_INTENSITY", "degrade", "degrade_torch", "validate_image"]

# Images are on the 0..255 scale; far beyond it the Poisson draw overflows (its rate must stay
# below ~9e18: 1e6 x gain 100 x dose 1e9 = 1e17) and the result means nothing.
MAX_ABS_INTENSITY = 1e6


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def degrade(
    image: np.ndarray,
    params: DegradationParams,
    rng: np.random.Generator | int | None = None,
    *,
    blur: bool = True,
    gain_offset: bool = True,
    poisson: bool = True,
    gaussian: bool = True,
) -> np.ndarray:
    """Simulate a defocused, noisy SEM observation of a focused image.

    Parameters
    ----------
    image : (H, W) focused image on the 0..255 scale (finite, ``|x| <= 1e6``).
    params : the setting (PSF, gain, offset, noise).
    rng : generator or seed; the result is fully determined by (image, params, seed).
    blur, gain_offset, poisson, gaussian : switch each term off for testing.

    Returns
    -------
    float32 (H, W), 0..255 scale, not clipped (noise may leave the range).

    Examples
    --------
    >>> import numpy as np
    >>> from sem_physics import ParameterRanges, degrade
    >>> y = degrade(np.full((64, 64), 100.0), ParameterRanges().midpoint(), rng=0)
    >>> y.shape, y.dtype
    ((64, 64), dtype('float32'))
    """
    x = validate_image(image)
    peak = float(np.abs(x).max())
    if peak > MAX_ABS_INTENSITY:
        raise ValueError(
            f"image values must lie within [-{MAX_ABS_INTENSITY:g}, {MAX_ABS_INTENSITY:g}] "
            f"(the 0..255 scale), got |x| up to {peak:g}"
        )
    z = convolve_reflect(x, airy_psf(params.psf), dtype=np.float64) if blur else x
    if gain_offset:
        z = params.gain * z + params.offset
    return poisson_gaussian(
        z, params.dose if poisson else None, params.sigma if gaussian else None, _rng(rng)
    )


def degrade_torch(
    images: torch.Tensor,
    params: DegradationParams | Sequence[DegradationParams],
    generator: torch.Generator | None = None,
    *,
    blur: bool = True,
    gain_offset: bool = True,
    poisson: bool = True,
    gaussian: bool = True,
) -> torch.Tensor:
    """Batched forward model on any device: ``images`` (N, 1, H, W), one setting or N settings.

    Used to synthesise training pairs on the fly; kernels of different sizes are handled in one
    batched FFT.
    """
    import torch

    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, H, W), got {tuple(images.shape)}")
    n = images.shape[0]
    plist = [params] * n if isinstance(params, DegradationParams) else list(params)
    if len(plist) != n:
        raise ValueError(f"got {len(plist)} parameter settings for {n} images")
    x = images.float() if not images.is_floating_point() else images
    if blur:
        kernels = [torch.as_tensor(airy_psf(p.psf), dtype=x.dtype) for p in plist]
        x = convolve_reflect_torch(x, kernels)

    def col(field: str) -> torch.Tensor:
        vals = [getattr(p, field) for p in plist]
        return torch.tensor(vals, dtype=x.dtype, device=x.device).view(n, 1, 1, 1)

    if gain_offset:
        x = col("gain") * x + col("offset")
    return poisson_gaussian_torch(
        x, col("dose") if poisson else None, col("sigma") if gaussian else None, generator
    )
