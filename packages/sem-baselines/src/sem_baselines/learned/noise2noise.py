"""Noise2Noise: a U-Net trained to map one noisy realisation of a patch to another.

For each focused patch ``x`` and degradation setting ``(h, a, b, dose, sigma)`` the loss is
``mean (f(y1) - y2)^2`` (or ``|f(y1) - y2|``) with ``y1 = N1(a (x ⊛ h) + b)`` and:

* ``target="degraded"`` (default, classical Noise2Noise): ``y2 = N2(a (x ⊛ h) + b)``, an
  independent noise draw of the *same* blurred patch; the minimiser is ``E[y2 | y1]``, so the
  network learns to denoise (not to deblur);
* ``target="focused"``: ``y2 = N2(x)``, an independent noisy observation of the focused patch;
  the minimiser is then the (noise-free) focused image, i.e. denoising and deblurring.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from sem_physics import DegradationParams, degrade_torch, poisson_gaussian_torch
from torch import nn

from ..nets.unet import UNet, UNetConfig
from ..restorer import register
from .base import SCALE, LearnedConfig, NetworkRestorer

__all__ = ["Noise2NoiseConfig", "Noise2NoiseRestorer"]


class Noise2NoiseConfig(LearnedConfig):
    """Noise2Noise settings."""

    unet: UNetConfig = Field(default_factory=UNetConfig)
    loss: Literal["mse", "l1"] = Field(default="mse", description="loss between f(y1) and y2")
    target: Literal["degraded", "focused"] = Field(
        default="degraded", description="what the second realisation observes"
    )


def _noise_cols(params: list[DegradationParams], ref: torch.Tensor) -> tuple[torch.Tensor, ...]:
    n = len(params)
    dose = torch.tensor([p.dose for p in params], dtype=ref.dtype, device=ref.device)
    sigma = torch.tensor([p.sigma for p in params], dtype=ref.dtype, device=ref.device)
    return dose.view(n, 1, 1, 1), sigma.view(n, 1, 1, 1)


@register("n2n", Noise2NoiseConfig)
class Noise2NoiseRestorer(NetworkRestorer):
    """Noise2Noise U-Net trained on synthetic SEM degradations."""

    config: Noise2NoiseConfig

    def build_network(self) -> nn.Module:
        return UNet(self.config.unet)

    def make_batch(
        self, clean: torch.Tensor, params: list[DegradationParams], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        dose, sigma = _noise_cols(params, clean)
        blurred = degrade_torch(clean, params, generator, poisson=False, gaussian=False)
        y1 = poisson_gaussian_torch(blurred, dose, sigma, generator)
        source = blurred if self.config.target == "degraded" else clean
        y2 = poisson_gaussian_torch(source, dose, sigma, generator)
        return {"input": y1 / SCALE, "target": y2 / SCALE}

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.network(batch["input"]).float()
        if self.config.loss == "l1":
            return F.l1_loss(out, batch["target"])
        return F.mse_loss(out, batch["target"])
