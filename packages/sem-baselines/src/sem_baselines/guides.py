"""Physics guides for guided restoration models: the image's Wiener-Hunt deconvolutions.

A :class:`sem_models.RestorationModel` built with ``guide_balances`` reads, after the image,
one Wiener-Hunt deconvolution per balance (``sem_physics.batched.wiener_batch``). At inference
the PSF is the blind estimate of the whole image, chosen as the deconvolution baselines
choose theirs (:func:`.classical.deconv.choose_psf`: the paper's PSF where none can be read),
computed once before the sliding window cuts the image, so every window sees the
deconvolution of the full field (no window-border artefacts from the 30-px kernels).
"""

from __future__ import annotations

import numpy as np
import torch
from sem_physics import PSFParams, airy_psf
from sem_physics.batched import wiener_batch

__all__ = ["guide_channels"]


def guide_channels(
    image01: np.ndarray,
    psf: PSFParams,
    balances: tuple[float, ...],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``(1 + G, H, W)`` float32 on ``device`` (the network's: the full-frame FFTs run there):
    the [0, 1] image (channel 0) and its G deconvolutions."""
    x = torch.from_numpy(np.ascontiguousarray(image01, dtype=np.float32))[None, None]
    x = x.to(device)
    kernel = torch.from_numpy(airy_psf(psf)).float().to(device)
    guides = wiener_batch(x, kernel, balances)  # (1, G, H, W)
    return torch.cat([x, guides], dim=1)[0]
