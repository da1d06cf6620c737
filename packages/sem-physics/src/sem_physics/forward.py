"""The SEM defocus forward model ``y = N(a (x ⊛ h) + b)``, numpy and torch.

arXiv 2604.05960, Sec. 5.2 / Eq. 21.

:func:`validate_image` (defined in :mod:`sem_physics.validation`) is the one image validator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .convolution import convolve_reflect, convolve_reflect_torch
from .noise import poisson_gaussian_inplace, poisson_gaussian_torch
from .optional import require
from .params import DegradationParams
from .psf import airy_psf
from .validation import (
    as_generator,
    refuse_negative_counts,
    refuse_other_scale,
    validate_image,
    warn_if_unit_scale,
)

if TYPE_CHECKING:
    import torch
    from torch import Tensor

__all__ = ["MAX_ABS_INTENSITY", "degrade", "degrade_torch", "validate_image"]

# Images are on the 0..255 scale; far beyond it the Poisson draw overflows (its rate must stay
# below ~9e18: 1e6 x gain 100 x dose 1e9 = 1e17) and the result means nothing.
MAX_ABS_INTENSITY = 1e6


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
    image : (H, W) focused image on the 0..255 scale: finite, integers at most 255, floats at
        most 1000 (:data:`~sem_physics.validation.MAX_FLOAT_GREY`; scale counts to 0..255),
        not substantially negative (:func:`~sem_physics.validation.refuse_negative_counts`).
    params : the setting (PSF, gain, offset, noise).
    rng : generator or seed; the result is fully determined by (image, params, seed).
    blur, gain_offset, poisson, gaussian : switch each term off for testing.

    Returns
    -------
    float32 (H, W), 0..255 scale, not clipped (noise may leave the range). Peak memory beyond
    the image is about 14 bytes per pixel (the float64 transform buffer the blurred image and
    its noise are computed in, and the result); the image itself is not copied.

    Examples
    --------
    >>> import numpy as np
    >>> from sem_physics import ParameterRanges, degrade
    >>> y = degrade(np.full((64, 64), 100.0), ParameterRanges().midpoint(), rng=0)
    >>> y.shape, y.dtype
    ((64, 64), dtype('float32'))
    """
    for name, switch in (
        ("blur", blur), ("gain_offset", gain_offset), ("poisson", poisson), ("gaussian", gaussian)
    ):  # fmt: skip
        if not isinstance(switch, bool | np.bool_):
            raise TypeError(f"{name} must be True or False, got {switch!r}")
    raw = validate_image(image, dtype=None)
    # The checks and the blur read the image as it is: its float64 values, bit for bit,
    # without a float64 copy of the frame (dtypes float64 cannot hold exactly are copied).
    x = raw if raw.dtype in _EXACT_IN_FLOAT64 else validate_image(raw)
    warn_if_unit_scale(x)
    if isinstance(params, dict):  # e.g. a setting read back from a manifest: validated here
        params = DegradationParams(**params)
    elif not hasattr(params, "psf"):
        raise TypeError(
            f"params must be a DegradationParams (or its dict), got {type(params).__name__}"
        )
    peak = max(abs(float(np.max(x))), abs(float(np.min(x))))  # |x|.max() without |x|
    if peak > MAX_ABS_INTENSITY:
        raise ValueError(
            f"image values must lie within [-{MAX_ABS_INTENSITY:g}, {MAX_ABS_INTENSITY:g}] "
            f"(the 0..255 scale), got |x| up to {peak:g}"
        )
    refuse_other_scale(raw)
    refuse_negative_counts(x)
    # z is this function's own float64 buffer: gain, offset and noise are applied in place
    if blur:
        z = convolve_reflect(x, airy_psf(params.psf), dtype=np.float64)
    else:
        z = np.array(x, dtype=np.float64, order="C")
    if gain_offset:
        z *= params.gain
        z += params.offset
    return poisson_gaussian_inplace(
        z, params.dose if poisson else None, params.sigma if gaussian else None, as_generator(rng)
    )


#: Image dtypes whose every value float64 holds exactly (the forward model computes in float64).
_EXACT_IN_FLOAT64 = frozenset(
    map(np.dtype, "float16 float32 float64 int8 int16 int32 uint8 uint16 uint32".split())
)


if TYPE_CHECKING:
    from .batched import BatchParams


def degrade_torch(
    images: torch.Tensor,
    params: DegradationParams | Sequence[DegradationParams] | BatchParams,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    *,
    blur: bool = True,
    gain_offset: bool = True,
    poisson: bool = True,
    gaussian: bool = True,
) -> torch.Tensor:
    """Batched forward model on any device: ``y_i = N_i(a_i (x_i ⊛ h_i) + b_i)``.

    Parameters
    ----------
    images : (N, 1, H, W) focused images on the 0..255 scale, any device.
    params : one :class:`DegradationParams` for all images, a sequence of N, or a
        :class:`sem_physics.batched.BatchParams` (per-sample settings as tensors, e.g. from
        :class:`sem_physics.batched.ParameterSampler`).
    generator : torch generator on the images' device; seeds the noise. N generators, one per
        image, give each image its own noise, whatever batch it is in.
    blur, gain_offset, poisson, gaussian : switch each term off for testing.

    Returns
    -------
    (N, 1, H, W) in the images' floating dtype (bf16/half computed in float32), not clipped.
    With the noise off it equals :func:`degrade` of each image to float rounding. The kernels
    are built in torch on the images' device on one grid, the blur is one batched FFT and the
    noise is drawn in torch (:mod:`sem_physics.batched`): no numpy and no loop per sample.
    """
    torch = require("torch", "sem-physics[torch]", "degrade_torch")

    from .batched import BatchParams, airy_psf_batch

    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"images must be a torch tensor (N, 1, H, W), got {type(images).__name__} "
            "(sem_physics.image_to_tensor converts arrays; degrade() takes one numpy image)"
        )
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, H, W), got {tuple(images.shape)}")
    if images.numel() == 0:
        raise ValueError(f"images are empty, shape {tuple(images.shape)}")
    n = images.shape[0]
    if isinstance(params, BatchParams):
        batch = params.check()
        if len(batch) != n:
            raise ValueError(f"got {len(batch)} parameter settings for {n} images")
    else:
        batch = BatchParams.from_params(params, n=n, device=images.device)
    out_dtype = images.dtype if images.is_floating_point() else torch.float32
    x = images if images.dtype in (torch.float32, torch.float64) else images.float()
    if blur:
        x = convolve_reflect_torch(x, airy_psf_batch(batch, dtype=x.dtype, device=x.device))

    def col(v: Tensor) -> Tensor:
        return v.to(device=x.device, dtype=x.dtype).view(n, 1, 1, 1)

    if gain_offset:
        x = col(batch.gain) * x + col(batch.offset)
    y = poisson_gaussian_torch(
        x, col(batch.dose) if poisson else None, col(batch.sigma) if gaussian else None, generator
    )
    return y.to(out_dtype)
