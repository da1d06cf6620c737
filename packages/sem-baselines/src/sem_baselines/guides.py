"""Physics guides for guided restoration models: the image's Wiener-Hunt deconvolutions.

A :class:`sem_models.RestorationModel` built with ``guide_balances`` reads, after the image,
one Wiener-Hunt deconvolution per balance (``sem_physics.batched.wiener_batch``). At inference
the PSF is the blind estimate of the whole image (:func:`sem_physics.estimate_degradation`),
computed once before the sliding window cuts the image, so every window sees the
deconvolution of the full field (no window-border artefacts from the 30-px kernels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sem_physics import PSFParams, airy_psf
from sem_physics.batched import wiener_batch

from .classical.deconv import DEFAULT_PSF

__all__ = ["guide_channels", "image_psf"]


def image_psf(image255: np.ndarray) -> tuple[PSFParams, dict[str, Any]]:
    """The blind PSF estimate of a (H, W) 0..255 image, and a record of where it came from
    (the paper's deployment PSF when the image is too small or flat to estimate one)."""
    from sem_physics import estimate_degradation

    try:
        psf = estimate_degradation(image255).psf_params()
    except ValueError as err:  # too small, or flat: no structure to read a PSF from
        return DEFAULT_PSF, {"psf": DEFAULT_PSF.model_dump(), "psf_source": f"paper ({err})"}
    return psf, {"psf": psf.model_dump(), "psf_source": "estimated"}


def guide_channels(image01: np.ndarray, psf: PSFParams, balances: tuple[float, ...]) -> np.ndarray:
    """``(1 + G, H, W)`` float32: the [0, 1] image (channel 0) and its G deconvolutions."""
    x = torch.from_numpy(np.ascontiguousarray(image01, dtype=np.float32))[None, None]
    kernel = torch.from_numpy(airy_psf(psf)).float()
    guides = wiener_batch(x, kernel, balances)  # (1, G, H, W)
    return torch.cat([x, guides], dim=1)[0].numpy()
