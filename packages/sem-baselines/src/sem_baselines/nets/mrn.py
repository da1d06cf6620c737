"""The multi-scale refocus network (MRN): coarse-to-fine encoder-decoder with three outputs.

No public code of the MRN exists; this is our reading of the paper's description: a U-Net-like
encoder (levels 1, 1/2, 1/4, 1/8) and a decoder that emits an image at 1/4, 1/2 and full
scale. Each output is a residual on top of the next-coarser one: the 1/4 output refines the
input average-pooled by 4; the 1/2 output refines the bilinearly up-sampled 1/4 output, which
is also fed to the 1/2 decoder stage as an extra channel; the full-scale output likewise
refines the up-sampled 1/2 output. Trained with L1 at all three scales against targets
average-pooled to each scale (see ``sem_baselines.learned.mrn``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field
from sem_physics.fields import NoBoolNumbers
from torch import nn

from .unet import conv_block, pad_to_multiple

__all__ = ["MRNConfig", "MultiScaleRefocusNet"]

SCALES = (4, 2, 1)


class MRNConfig(NoBoolNumbers):
    """MRN size: ``width`` channels at full resolution, doubled per level (4 levels)."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(default=32, ge=1, le=256, description="channels at full resolution")


def _up(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class MultiScaleRefocusNet(nn.Module):
    """(N, 1, H, W) -> [(N, 1, H/4, W/4), (N, 1, H/2, W/2), (N, 1, H, W)], coarse to fine."""

    def __init__(self, config: MRNConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or MRNConfig()
        w = [cfg.width * 2**level for level in range(4)]
        self.enc = nn.ModuleList(
            [conv_block(1, w[0]), conv_block(w[0], w[1]), conv_block(w[1], w[2])]
        )
        self.bottom = conv_block(w[2], w[3])
        self.up = nn.ModuleList(
            [
                nn.Conv2d(w[3], w[2], 3, padding=1),
                nn.Conv2d(w[2], w[1], 3, padding=1),
                nn.Conv2d(w[1], w[0], 3, padding=1),
            ]
        )
        # decoder stages at 1/4, 1/2, 1: [upsampled features, skip, (coarser prediction)]
        self.dec = nn.ModuleList(
            [
                conv_block(2 * w[2], w[2]),
                conv_block(2 * w[1] + 1, w[1]),
                conv_block(2 * w[0] + 1, w[0]),
            ]
        )
        self.heads = nn.ModuleList(
            [nn.Conv2d(w[2], 1, 1), nn.Conv2d(w[1], 1, 1), nn.Conv2d(w[0], 1, 1)]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # x: [N, 1, H, W]
        xp, (h, w) = pad_to_multiple(x, 8)
        s0 = self.enc[0](xp)  # [N, w0, H, W]
        s1 = self.enc[1](F.max_pool2d(s0, 2))  # [N, w1, H/2, W/2]
        s2 = self.enc[2](F.max_pool2d(s1, 2))  # [N, w2, H/4, W/4]
        z = self.bottom(F.max_pool2d(s2, 2))  # [N, w3, H/8, W/8]
        outs: list[torch.Tensor] = []
        prev = F.avg_pool2d(xp, 4)  # coarse starting estimate: the input at 1/4
        for i, skip in enumerate((s2, s1, s0)):
            z = self.up[i](_up(z, skip.shape[-2:]))
            feats = [z, skip] if i == 0 else [z, skip, _up(prev, skip.shape[-2:])]
            z = self.dec[i](torch.cat(feats, dim=1))
            base = prev if i == 0 else _up(prev, skip.shape[-2:])
            prev = base + self.heads[i](z)
            outs.append(prev)
        # crop the padding: scale s keeps ceil(h / s) rows
        return [o[..., : -(-h // s), : -(-w // s)] for o, s in zip(outs, SCALES, strict=True)]
