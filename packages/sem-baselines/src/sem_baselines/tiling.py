"""Feed-forward inference of fully convolutional networks on large images, tile by tile.

Overlap-crop tiling: the image is cut into a grid of core tiles of side ``tile - 2 * margin``;
each is processed with ``margin`` pixels of real image context on every side (less at the
image border, where the network sees the true border exactly as on the whole image) and only
its core is written to the output. For an operator whose output at a pixel depends only on
inputs within ``margin`` pixels, the result equals processing the whole image at once; for a
U-Net the far context beyond ``margin`` is negligible. Memory is bounded by ``tile``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["tile_starts", "tiled_apply"]


def tile_starts(n: int, core: int) -> list[int]:
    """Start offsets of cores of length ``core`` covering ``0..n`` (last one flush with the end)."""
    if n <= core:
        return [0]
    starts = list(range(0, n - core, core))
    starts.append(n - core)
    return starts


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: int = 512,
    margin: int = 32,
) -> torch.Tensor:
    """Apply ``fn`` ((1, C, h, w) -> (1, C', h, w)) to ``image`` (1, C, H, W) in tiles.

    Images no larger than ``tile`` go through ``fn`` in one call.
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be (1, C, H, W), got {tuple(image.shape)}")
    if margin < 0 or tile <= 2 * margin:
        raise ValueError(f"need tile > 2 * margin >= 0, got tile={tile}, margin={margin}")
    h, w = image.shape[-2:]
    if h <= tile and w <= tile:
        return fn(image)
    core = tile - 2 * margin
    out: torch.Tensor | None = None
    for y0 in tile_starts(h, core):
        for x0 in tile_starts(w, core):
            y1, x1 = min(y0 + core, h), min(x0 + core, w)
            ya, xa = max(y0 - margin, 0), max(x0 - margin, 0)
            yb, xb = min(y1 + margin, h), min(x1 + margin, w)
            res = fn(image[..., ya:yb, xa:xb])
            if out is None:
                out = res.new_zeros((1, res.shape[1], h, w))
            out[..., y0:y1, x0:x1] = res[..., y0 - ya : y1 - ya, x0 - xa : x1 - xa]
    assert out is not None
    return out
