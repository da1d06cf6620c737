"""Feed-forward inference of fully convolutional networks on large images, tile by tile.

Overlap-crop tiling: the image is cut into a grid of core tiles of side ``tile - 2 * margin``;
each is processed inside a window of ``tile`` px (the image side when smaller) holding at least
``margin`` pixels of real image context on every side (at the image border the window is
shifted inward, so the network sees the true border exactly as on the whole image) and only
its core is written to the output. For an operator whose output at a pixel depends only on
inputs within ``margin`` pixels, the result equals processing the whole image at once; for a
U-Net the far context beyond ``margin`` is negligible. All windows have one shape, so they run
``batch_size`` at a time, one forward per batch, under :func:`torch.inference_mode` (bf16
autocast on CUDA). Memory is bounded by ``batch_size`` windows of ``tile`` px.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from sem_models.sliding_window import inference_context

__all__ = ["DEFAULT_TILE_BATCH", "tile_starts", "tiled_apply"]

#: Windows per forward pass (512-px windows of a small U-Net: a few hundred MB on a CPU).
DEFAULT_TILE_BATCH = 4


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
    batch_size: int = DEFAULT_TILE_BATCH,
    amp: bool = True,
) -> torch.Tensor:
    """Apply ``fn`` ((B, C, h, w) -> (B, C', h, w)) to ``image`` (1, C, H, W) in tiles.

    Images no larger than ``tile`` go through ``fn`` in one call. ``batch_size`` windows go
    through ``fn`` per call; the result does not depend on it (for a per-sample ``fn``).
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be (1, C, H, W), got {tuple(image.shape)}")
    if margin < 0 or tile <= 2 * margin:
        raise ValueError(f"need tile > 2 * margin >= 0, got tile={tile}, margin={margin}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    h, w = image.shape[-2:]
    with inference_context(image.device, amp):
        if h <= tile and w <= tile:
            return fn(image).float()
        core = tile - 2 * margin
        th, tw = min(tile, h), min(tile, w)
        tiles = []  # (core rows, core cols, window origin)
        for y0 in tile_starts(h, core):
            for x0 in tile_starts(w, core):
                ya = min(max(y0 - margin, 0), h - th)
                xa = min(max(x0 - margin, 0), w - tw)
                tiles.append((y0, min(y0 + core, h), x0, min(x0 + core, w), ya, xa))
        out: torch.Tensor | None = None
        for b in range(0, len(tiles), batch_size):
            chunk = tiles[b : b + batch_size]
            batch = torch.cat([image[..., ya : ya + th, xa : xa + tw] for *_, ya, xa in chunk])
            res = fn(batch).float()
            if out is None:
                out = res.new_zeros((1, res.shape[1], h, w))
            for t, (y0, y1, x0, x1, ya, xa) in enumerate(chunk):
                out[0, :, y0:y1, x0:x1] = res[t, :, y0 - ya : y1 - ya, x0 - xa : x1 - xa]
    assert out is not None
    return out
