"""Richardson-Lucy deconvolution (30 iterations, fixed Airy PSF) via scikit-image.

Multiplicative update for a non-negative image ``x`` observed as ``y = h ⊛ x``::

    x_{t+1} = x_t * ( h~ ⊛ ( y / (h ⊛ x_t) ) ),     h~(u) = h(-u)

Scaling: ``skimage.restoration.richardson_lucy`` starts from a constant 0.5 and (by default)
clips the result to [-1, 1], so the image is divided by 255 first, negative values (noise) are
clipped to 0 because the update assumes non-negative data, the call is made with
``clip=False``, and the result is multiplied back by 255. Boundaries: see :mod:`.deconv`.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sem_physics import PSFParams
from skimage.restoration import richardson_lucy

from ..restorer import check_image, register
from .deconv import DEFAULT_PSF, DeconvBoundary, crop, fixed_psf, pad_reflect

__all__ = ["RichardsonLucyConfig", "RichardsonLucyRestorer"]


class RichardsonLucyConfig(BaseModel):
    """Deployment-style settings (the paper's): 30 iterations, one fixed PSF."""

    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(default=30, ge=1, le=10_000, description="RL iterations")
    psf: PSFParams = Field(default=DEFAULT_PSF, description="fixed PSF (radii in px)")
    boundary: DeconvBoundary = Field(default="reflect", description="image extension")
    clip: bool = Field(default=True, description="clip the output to 0..255")


@register("richardson-lucy", RichardsonLucyConfig)
class RichardsonLucyRestorer:
    """Richardson-Lucy deconvolution with the fixed PSF of SPEC §4."""

    def __init__(self, config: RichardsonLucyConfig | None = None) -> None:
        self.config = config or RichardsonLucyConfig()
        self.kernel = fixed_psf(self.config.psf)

    def restore(self, image: np.ndarray) -> np.ndarray:
        x = check_image(image).astype(np.float64) / 255.0
        pad = self.kernel.shape[0] // 2 if self.config.boundary == "reflect" else 0
        y = np.clip(pad_reflect(x, pad), 0.0, None)
        out = richardson_lucy(y, self.kernel, num_iter=self.config.iterations, clip=False)
        out = crop(out, pad) * 255.0
        if self.config.clip:
            out = np.clip(out, 0.0, 255.0)
        return out.astype(np.float32)
