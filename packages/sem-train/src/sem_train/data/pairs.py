"""On-the-fly (defocused, focused) training pairs from a few focused SEM images (SPEC §3).

For an item ``(i, seed)``:

1. image ``i mod n`` (information bar removed, grayscale, 0..255);
2. training: a crop side ``s`` drawn from ``crop_sizes_px`` (sides larger than the image are
   replaced by the image's short side) at a random position; validation: the centred crop of
   the largest side that fits;
3. a degradation setting drawn from ``ParameterRanges`` and applied to the crop **at its native
   pixel scale** with :func:`sem_physics.degrade_torch` (blur, gain/offset, Poisson-Gaussian
   noise), then clipped to the 0..255 display range;
4. both crops resized (antialiased) to the model input side and scaled to [0, 1].

Everything random is drawn from generators seeded by ``seed``, so a pair is reproducible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sem_physics import ParameterRanges, degrade_torch
from torch.utils.data import Dataset

from .augment import resize
from .dataset import load_image_tensor

__all__ = ["DefocusPairDataset"]


class DefocusPairDataset(Dataset):
    """Synthetic defocus pairs from focused images; items ``{"input", "target", ...}``.

    Parameters
    ----------
    images : focused images, each (1, H, W) float32 in [0, 1] (information bar removed).
    input_size_px : model input side.
    crop_sizes_px : training crop sides (the paper: 128, 256, 512, 1024).
    ranges : degradation parameter ranges (default: the SPEC ranges).
    train : random crops (True) or the centred validation crop (False).
    pairs_per_image : dataset length is ``len(images) * pairs_per_image`` (one epoch).
    channels : 1, or 3 to replicate the gray image.
    """

    def __init__(
        self,
        images: list[torch.Tensor],
        *,
        input_size_px: int,
        crop_sizes_px: tuple[int, ...] = (128, 256, 512, 1024),
        ranges: ParameterRanges | None = None,
        train: bool = True,
        pairs_per_image: int = 1,
        channels: int = 1,
    ) -> None:
        if not images:
            raise ValueError("DefocusPairDataset needs at least one focused image")
        for k, im in enumerate(images):
            if im.ndim != 3 or im.shape[0] != 1 or min(im.shape[-2:]) < 8:
                raise ValueError(
                    f"image {k} must be (1, H, W) with H, W >= 8, got {tuple(im.shape)}"
                )
        if not crop_sizes_px or min(crop_sizes_px) < 8:
            raise ValueError(f"crop_sizes_px={crop_sizes_px} must be non-empty with sides >= 8")
        self.images = images
        self.size = int(input_size_px)
        self.crop_sizes = tuple(int(c) for c in crop_sizes_px)
        self.ranges = ranges or ParameterRanges()
        self.train = train
        self.pairs_per_image = pairs_per_image if train else 1
        self.channels = channels

    @classmethod
    def from_paths(cls, paths: list[Path], info_bar_fraction: float = 0.0667, **kw: Any):
        """Read the focused images from files (information bar removed)."""
        return cls([load_image_tensor(Path(p), info_bar_fraction) for p in paths], **kw)

    def __len__(self) -> int:
        return len(self.images) * self.pairs_per_image

    def _crop(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        h, w = img.shape[-2:]
        short = min(h, w)
        if self.train:
            k = int(torch.randint(0, len(self.crop_sizes), (), generator=g))
            s = min(self.crop_sizes[k], short)
            top = int(torch.randint(0, h - s + 1, (), generator=g))
            left = int(torch.randint(0, w - s + 1, (), generator=g))
        else:
            fitting = [c for c in self.crop_sizes if c <= short]
            s = max(fitting) if fitting else short
            top, left = (h - s) // 2, (w - s) // 2
        return img[..., top : top + s, left : left + s]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        i, seed = (key, key) if isinstance(key, int) else (int(key[0]), int(key[1]))
        img = self.images[i % len(self.images)]
        g = torch.Generator().manual_seed(int(seed))
        focused = self._crop(img, g)
        params = self.ranges.sample(np.random.default_rng(int(seed)))
        with torch.no_grad():
            defocused = degrade_torch(focused[None] * 255.0, params, generator=g)[0]
        defocused = defocused.clamp(0.0, 255.0) / 255.0
        x, y = resize(defocused, self.size), resize(focused, self.size)
        if self.channels == 3:
            x, y = x.expand(3, -1, -1), y.expand(3, -1, -1)
        return {
            "input": x.contiguous().float(),
            "target": y.contiguous().float(),
            "seed": torch.tensor(seed, dtype=torch.int64),
            "index": torch.tensor(i % len(self.images), dtype=torch.int64),
            "skipped": torch.tensor(0, dtype=torch.int64),
        }
