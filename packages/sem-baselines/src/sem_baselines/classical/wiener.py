"""Wiener(-Hunt) deconvolution (balance 0.01, fixed Airy PSF) via scikit-image.

With ``H`` the transfer function of the PSF, ``D`` that of the discrete Laplacian
``[[0, -1, 0], [-1, 4, -1], [0, -1, 0]]`` (scikit-image's default regulariser) and
``lambda`` the balance, the estimate in the Fourier domain is::

    X = conj(H) Y / (|H|^2 + lambda |D|^2)

The filter is linear, so the 0..255 scale is kept through ``/255 ... *255`` only to match
scikit-image's [0, 1] convention; its [-1, 1] clip is switched off (``clip=False``). The FFT
makes the image periodic; boundaries: see :mod:`.deconv`.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sem_physics import PSFParams
from skimage.restoration import wiener

from ..restorer import check_image, register
from .deconv import DEFAULT_PSF, DeconvBoundary, crop, fixed_psf, pad_reflect

__all__ = ["WienerConfig", "WienerRestorer"]


class WienerConfig(BaseModel):
    """Deployment-style settings (the paper's): balance 0.01, one fixed PSF."""

    model_config = ConfigDict(extra="forbid")

    balance: float = Field(default=0.01, gt=0, le=1e6, description="regularisation lambda")
    psf: PSFParams = Field(default=DEFAULT_PSF, description="fixed PSF (radii in px)")
    boundary: DeconvBoundary = Field(default="reflect", description="image extension")
    clip: bool = Field(default=True, description="clip the output to 0..255")


@register("wiener", WienerConfig)
class WienerRestorer:
    """Wiener-Hunt deconvolution with the fixed PSF of SPEC §4 and a Laplacian prior."""

    def __init__(self, config: WienerConfig | None = None) -> None:
        self.config = config or WienerConfig()
        self.kernel = fixed_psf(self.config.psf)

    def restore(self, image: np.ndarray) -> np.ndarray:
        x = check_image(image).astype(np.float64) / 255.0
        pad = self.kernel.shape[0] // 2 if self.config.boundary == "reflect" else 0
        out = wiener(pad_reflect(x, pad), self.kernel, self.config.balance, clip=False)
        out = crop(out, pad) * 255.0
        if self.config.clip:
            out = np.clip(out, 0.0, 255.0)
        return out.astype(np.float32)
