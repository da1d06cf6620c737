"""A plain 2-D U-Net (configurable depth and width), shared by Noise2Noise and Noise2Void.

Level ``l`` (0 = full resolution) has ``width * 2**l`` channels and two 3x3 conv + LeakyReLU
layers; down-sampling by 2x2 max-pooling, up-sampling bilinear followed by a 3x3 conv, skips by
concatenation, a 1x1 output conv. With ``residual=True`` the network predicts a correction that
is added to its input. Inputs of any size are padded (reflect, or replicate when too small) to
a multiple of ``2**depth`` and the output is cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field
from sem_physics.fields import NoBoolNumbers
from torch import nn

__all__ = ["UNet", "UNetConfig", "conv_block", "pad_to_multiple"]


class UNetConfig(NoBoolNumbers):
    """U-Net size: ``depth`` poolings, ``width`` channels at full resolution."""

    model_config = ConfigDict(extra="forbid")

    depth: int = Field(default=3, ge=1, le=6, description="number of 2x down-samplings")
    width: int = Field(default=32, ge=1, le=512, description="channels at full resolution")
    residual: bool = Field(default=True, description="predict a correction added to the input")


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv + LeakyReLU(0.1) layers."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.LeakyReLU(0.1, inplace=True),
    )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (N, C, H, W) at the bottom/right to multiples of ``multiple``; returns the old H, W."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


class UNet(nn.Module):
    """(N, 1, H, W) -> (N, 1, H, W) encoder-decoder with skip connections."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or UNetConfig()
        widths = [cfg.width * 2**level for level in range(cfg.depth + 1)]
        self.down = nn.ModuleList()
        cin = 1
        for w in widths[:-1]:
            self.down.append(conv_block(cin, w))
            cin = w
        self.bottom = conv_block(widths[-2], widths[-1])
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for level in reversed(range(cfg.depth)):
            self.up.append(nn.Conv2d(widths[level + 1], widths[level], 3, padding=1))
            self.dec.append(conv_block(2 * widths[level], widths[level]))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [N, 1, H, W]
        xp, (h, w) = pad_to_multiple(x, 2**self.config.depth)
        skips = []
        z = xp
        for block in self.down:
            z = block(z)
            skips.append(z)  # [N, width * 2**l, H / 2**l, W / 2**l]
            z = F.max_pool2d(z, 2)
        z = self.bottom(z)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            z = up(F.interpolate(z, size=skip.shape[-2:], mode="bilinear", align_corners=False))
            z = dec(torch.cat([z, skip], dim=1))
        out = self.head(z)
        if self.config.residual:
            out = out + xp
        return out[..., :h, :w]
