"""Noise2Void: a blind-spot U-Net trained on single noisy images.

A fraction ``mask_ratio`` of the pixels of every patch (0.1 = 10 % of the pixels, the paper's
setting; careamics' default is 0.002) is masked: each masked pixel's value is replaced by the
value of a random other pixel within ``±neighbourhood_px`` in both directions (never the pixel
itself, reflected at the patch border), and the loss ``mean over masked pixels of
(f(masked input) - y)^2`` compares the prediction with the original noisy value there. To
keep the blind spot strict at this high ratio, replacements are drawn only from pixels that
are not masked themselves (8 candidate offsets are tried in turn; if all fall on masked pixels,
the patch's mean over unmasked pixels is used), so the value of a masked pixel never reaches
the network input. The input is the synthetic degraded patch (the paper's parameter ranges), so the network
learns to denoise it.

When the network is wrapped in DistributedDataParallel (``sem train baseline`` under torchrun),
the mean is over the masked pixels of the global batch, whatever their count on each rank, so
N ranks with batch B train like one process with batch N B.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from pydantic import Field
from sem_physics import DegradationParams, degrade_torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..nets.unet import UNet, UNetConfig
from ..restorer import register
from .base import SCALE, LearnedConfig, NetworkRestorer

__all__ = ["Noise2VoidConfig", "Noise2VoidRestorer", "blind_spot_mask"]

CANDIDATES = 8


class Noise2VoidConfig(LearnedConfig):
    """Noise2Void settings."""

    unet: UNetConfig = Field(default_factory=UNetConfig)
    mask_ratio: float = Field(
        default=0.1, gt=0, le=0.5, description="fraction of pixels masked per patch (0.1 = 10 %)"
    )
    neighbourhood_px: int = Field(
        default=5, ge=1, le=64, description="replacement drawn within ±this many px"
    )


def _reflect(idx: torch.Tensor, n: int) -> torch.Tensor:
    idx = torch.where(idx < 0, -idx, idx)
    return torch.where(idx >= n, 2 * (n - 1) - idx, idx).clamp(0, n - 1)


def blind_spot_mask(
    y: torch.Tensor, ratio: float, radius: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked copy of ``y`` (N, 1, H, W) and the boolean mask (see the module docstring).

    Exactly ``max(1, round(ratio * H * W))`` pixels per patch are masked.
    """
    n, _, h, w = y.shape
    dev = y.device
    count = max(1, round(ratio * h * w))
    scores = torch.rand((n, h * w), generator=generator, device=dev)
    picked = scores.topk(count, dim=1).indices  # [N, count]
    mask = torch.zeros((n, h * w), dtype=torch.bool, device=dev)
    mask.scatter_(1, picked, True)
    flat = y.reshape(n, h * w)
    py, px = picked // w, picked % w  # [N, count]
    side = 2 * radius + 1
    # offsets uniformly over the (2r+1)^2 - 1 neighbours, never (0, 0)
    k = torch.randint(0, side * side - 1, (n, count, CANDIDATES), generator=generator, device=dev)
    k = k + (k >= side * side // 2).long()
    sy = _reflect(py[..., None] + k // side - radius, h)
    sx = _reflect(px[..., None] + k % side - radius, w)
    src = sy * w + sx  # [N, count, CANDIDATES]
    ok = ~torch.gather(mask, 1, src.reshape(n, -1)).reshape(src.shape)
    ok &= src != picked[..., None]
    first = ok.float().argmax(dim=-1, keepdim=True)  # first valid candidate (0 if none)
    chosen = torch.gather(src, 2, first)[..., 0]
    values = torch.gather(flat, 1, chosen)
    keep = ~mask
    fallback = (flat * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp_min(1)
    values = torch.where(ok.any(-1), values, fallback.expand_as(values))
    masked = flat.clone()
    masked.scatter_(1, picked, values)
    return masked.view_as(y), mask.view(n, 1, h, w)


@register("n2v", Noise2VoidConfig)
class Noise2VoidRestorer(NetworkRestorer):
    """Noise2Void blind-spot U-Net trained on synthetic SEM degradations."""

    config: Noise2VoidConfig

    def build_network(self) -> nn.Module:
        return UNet(self.config.unet)

    def make_batch(
        self, clean: torch.Tensor, params: list[DegradationParams], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        y = degrade_torch(clean, params, generator) / SCALE
        masked, mask = blind_spot_mask(
            y, self.config.mask_ratio, self.config.neighbourhood_px, generator
        )
        return {"input": masked, "target": y, "mask": mask}

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean squared error over the masked pixels (of the global batch under DDP)."""
        net = self.network
        out = net(batch["input"]).float()
        # weighted by the mask rather than indexed by it: boolean indexing reads the mask's
        # count to the host, a device sync at every step on a GPU
        weight = batch["mask"].to(out.dtype)
        sq = ((out - batch["target"]) ** 2 * weight).sum()
        count = weight.sum()  # exact below 2^24 pixels
        if not isinstance(net, DistributedDataParallel):
            return sq / count.clamp(min=1.0)
        # DDP averages gradients over ranks: sum * world / global count makes that average the
        # global mean, not the mean of per-rank means (their counts may differ)
        dist.all_reduce(count, group=net.process_group)
        world = dist.get_world_size(net.process_group)
        return sq * world / count.clamp(min=1.0)
