"""On-the-fly (defocused, focused) training pairs from a few focused SEM images.

arXiv 2604.05960, Sec. 2.4 (multi-scale crops) and Sec. 5.2 / Eq. 21 (the forward model).

For an item ``(i, seed)``:

1. image ``i mod n`` (information bar removed, grayscale, 0..255);
2. training: a crop side ``s`` drawn from ``crop_sizes_px`` (sides larger than the image are
   replaced by the image's short side) at a random position; validation: the centred crop of
   the largest side that fits (``pairs_per_image`` validation pairs of an image share that
   crop and differ in their seeded degradations);
3. a degradation setting drawn from ``ParameterRanges`` and applied to the crop **at its native
   pixel scale** with :func:`sem_physics.degrade_torch` (blur, gain/offset, Poisson-Gaussian
   noise), then clipped to the 0..255 display range;
4. both crops resized (antialiased) to the model input side and scaled to [0, 1].

Everything random is drawn from generators seeded by ``seed``, so a pair is reproducible.

Synthesis in the training step instead (``synthesis="step"``): items carry only the focused
crop resized to the model input (``"target"``), and the step calls :class:`PairSynthesizer`
(or :func:`synthesize_pairs`) to degrade the whole batch at once on its device with
:func:`sem_physics.degrade_torch` (per-sample settings drawn as tensors, one batched FFT,
torch noise). The degradation then acts at the model-input pixel scale, not at the crop's
native scale: PSF radii and noise are in model-input pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from sem_physics import ParameterRanges, degrade_torch
from sem_physics.batched import (
    BatchParams,
    ParameterSampler,
    airy_psf_batch,
    settings_dtype,
    wiener_batch,
)
from sem_physics.psf import MAX_RADIUS_PX
from torch.utils.data import Dataset

from .augment import resize
from .dataset import load_image_tensor
from .index import note_too_small

__all__ = ["DefocusPairDataset", "GuideMaker", "PairSynthesizer", "synthesize_pairs"]


class DefocusPairDataset(Dataset):
    """Synthetic defocus pairs from focused images; items ``{"input", "target", ...}``.

    Parameters
    ----------
    images : focused images, each (1, H, W) float32 in [0, 1] (information bar removed).
    input_size_px : model input side.
    crop_sizes_px : training crop sides (the paper: 128, 256, 512, 1024).
    ranges : degradation parameter ranges (default: the paper's ranges).
    train : random crops (True) or the centred validation crop (False).
    pairs_per_image : dataset length is ``len(images) * pairs_per_image`` (one epoch); in
        validation, the degradations drawn per image (one setting per image scores a handful of
        random draws, and a flat crop at a mild setting can then decide the best checkpoint).
    channels : 1, or 3 to replicate the gray image.
    synthesis : ``"loader"`` (each item is a pair) or ``"step"`` (training items carry only
        ``"target"``; the training step synthesises ``"input"`` with :class:`PairSynthesizer`).
        Validation items are always pairs (fixed degradations).
    dihedral : training crops also get a random 90-degree rotation and flip (8 orientations),
        so a few images with lines in one direction teach every direction.
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
        synthesis: Literal["loader", "step"] = "loader",
        dihedral: bool = False,
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
        if pairs_per_image < 1:
            raise ValueError(f"pairs_per_image must be >= 1, got {pairs_per_image}")
        self.pairs_per_image = int(pairs_per_image)
        self.channels = channels
        if synthesis not in ("loader", "step"):
            raise ValueError(f"synthesis={synthesis!r} must be 'loader' or 'step'")
        self.synthesis = synthesis if train else "loader"
        self.dihedral = dihedral and train

    @classmethod
    def from_paths(cls, paths: list[Path], info_bar_fraction: float = 0.0667, **kw: Any):
        """Read the focused images from files (information bar removed). One smaller than the
        model input after the crop (which the index could not see: no header read, or an
        info bar from the file's metadata) is skipped with a warning, never upscaled."""
        size = int(kw["input_size_px"]) if "input_size_px" in kw else 0
        images = []
        for p in paths:
            img = load_image_tensor(Path(p), info_bar_fraction)
            rows, cols = img.shape[-2:]
            if min(rows, cols) < size:
                why = (
                    f"{rows}x{cols} px after the info-bar crop is smaller than the {size}-px "
                    f"training crop"
                )
                note_too_small(p, why, size)
                continue
            images.append(img)
        if not images and paths:
            raise ValueError(f"none of the {len(paths)} images is at least {size} px")
        return cls(images, **kw)

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
            if self.dihedral:
                turn = int(torch.randint(0, 8, (), generator=g))
                crop = img[..., top : top + s, left : left + s].rot90(turn % 4, dims=(-2, -1))
                return crop.flip(-1) if turn >= 4 else crop
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
        item: dict[str, Any] = {}
        if self.synthesis == "loader":
            params = self.ranges.sample(np.random.default_rng(int(seed)))
            with torch.no_grad():
                defocused = degrade_torch(focused[None] * 255.0, params, generator=g)[0]
            x = resize(defocused.clamp(0.0, 255.0) / 255.0, self.size)
            item["input"] = _channels(x, self.channels).contiguous().float()
            scale = self.size / focused.shape[-1]  # radii at the model's input scale
            item["psf"] = torch.tensor(
                [params.rx_px * scale, params.ry_px * scale, params.beta, params.theta_rad],
                dtype=torch.float64,
            )
        y = resize(focused, self.size)
        item["target"] = _channels(y, self.channels).contiguous().float()
        return {
            **item,
            "seed": torch.tensor(seed, dtype=torch.int64),
            "index": torch.tensor(i % len(self.images), dtype=torch.int64),
            "skipped": torch.tensor(0, dtype=torch.int64),
        }


def _channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    return x.expand(3, -1, -1) if channels == 3 else x


def synthesize_pairs(
    focused: torch.Tensor,
    ranges: ParameterRanges | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, BatchParams]:
    """Defocused inputs for a batch of focused images, on the batch's device.

    Parameters
    ----------
    focused : (N, C, H, W) in [0, 1]; C = 1, or 3 with the gray image replicated (channel 0
        is degraded and the result replicated).
    ranges : parameter ranges (default: the paper's); one setting is drawn per image.
    generator : torch generator on ``focused``'s device (settings and noise), or one per image
        (each pair then its own, whatever batch it is in).

    Returns
    -------
    (defocused, focused, params): defocused (N, C, H, W) in [0, 1] (clipped to the display
    range, as a detector would), ``focused`` itself, and the settings used.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y, p = synthesize_pairs(torch.rand(4, 1, 64, 64), generator=g)
    >>> x.shape, len(p)
    (torch.Size([4, 1, 64, 64]), 4)
    """
    if focused.ndim != 4 or focused.shape[1] not in (1, 3):
        raise ValueError(f"focused must be (N, 1 or 3, H, W), got {tuple(focused.shape)}")
    params = ParameterSampler(ranges, device=focused.device).step(focused.shape[0], generator)
    with torch.no_grad():
        gray = focused[:, :1].float() * 255.0
        defocused = degrade_torch(gray, params, generator).clamp(0.0, 255.0) / 255.0
    defocused = defocused.expand(-1, focused.shape[1], -1, -1).to(focused.dtype)
    return defocused.contiguous(), focused, params


def sample_generators(
    seeds: Any, n: int, device: torch.device | str, salt: int
) -> list[torch.Generator]:
    """One torch generator per sample on ``device``, seeded from that sample's own seed (and
    ``salt``, which keeps the streams of different uses apart), so that what is drawn for a
    sample does not depend on the other samples of its batch, nor on how a global batch is
    split across processes. Without seeds, the samples' positions stand in for them."""
    values = list(range(n)) if seeds is None else torch.as_tensor(seeds).reshape(-1).tolist()
    if len(values) != n:
        raise ValueError(f"{len(values)} seeds for a batch of {n}")
    return [
        torch.Generator(device=device).manual_seed((int(s) * 1_000_003 + salt) % (2**63 - 1))
        for s in values
    ]


class PairSynthesizer:
    """Training-step hook: ``batch["input"]`` synthesised from ``batch["target"]`` in place.

    Each pair's setting and noise come from a generator on the batch's device seeded from its
    item's ``"seed"``, so a pair depends only on its item: not on the rest of the batch, nor on
    how a global batch is split across processes (and a resumed run sees the same pairs). Runs
    in float32 outside any autocast region.
    """

    def __init__(self, ranges: ParameterRanges | None = None) -> None:
        self.ranges = ranges or ParameterRanges()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        target: torch.Tensor = batch["target"]
        g = sample_generators(batch.get("seed"), target.shape[0], target.device, salt=1)
        with torch.autocast(target.device.type, enabled=False):
            defocused, _, p = synthesize_pairs(target, self.ranges, g)
        psf = torch.stack([p.rx_px, p.ry_px, p.beta, p.theta_rad], dim=1)
        return {**batch, "input": defocused, "psf": psf}


class GuideMaker:
    """Appends the physics guides a guided restoration model reads to ``batch["input"]``.

    ``batch["psf"]`` (N, 4) holds each pair's true ``(rx_px, ry_px, beta, theta_rad)`` at the
    model's input scale; the guides are :func:`sem_physics.batched.wiener_batch` of the
    input's first channel at ``balances``. In training the PSF is perturbed first (radii by
    ``exp(N(0, jitter^2))``, angle by ``N(0, (jitter/2)^2)`` rad, each pair's from a generator
    seeded by its own seed, so independent of its batch), so that the model learns to use guides as imperfect as a blind estimate's; in
    validation the true PSF is used. Runs in float32 outside any autocast region.
    """

    def __init__(self, balances: list[float] | tuple[float, ...], jitter: float = 0.1) -> None:
        self.balances = tuple(float(b) for b in balances)
        self.jitter = float(jitter)

    def __call__(self, batch: dict[str, Any], train: bool) -> dict[str, Any]:
        if not self.balances:
            return batch
        if "psf" not in batch:
            raise ValueError("a guided model needs each pair's PSF (batch['psf'])")
        x: torch.Tensor = batch["input"]
        # float64 settings (float32 on a device without float64), cast before any move
        psf = torch.as_tensor(batch["psf"]).to(settings_dtype(x.device)).to(x.device)
        n = psf.shape[0]
        radius, angle = torch.ones(n, dtype=psf.dtype), torch.zeros(n, dtype=psf.dtype)
        if train and self.jitter > 0:
            draws = torch.stack(
                [
                    torch.randn(2, generator=g, dtype=psf.dtype)
                    for g in sample_generators(batch.get("seed"), n, "cpu", salt=7)
                ]
            )
            radius = torch.exp(draws[:, 0] * self.jitter)
            angle = draws[:, 1] * self.jitter / 2
        radius, angle = radius.to(x.device), angle.to(x.device)
        ones = torch.ones_like(psf[:, 0])
        params = BatchParams(
            (psf[:, 0] * radius).clamp(1e-3, MAX_RADIUS_PX),
            (psf[:, 1] * radius).clamp(1e-3, MAX_RADIUS_PX),
            psf[:, 2],
            psf[:, 3] + angle,
            ones,
            0 * ones,
            ones,
            ones,
        )
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            kernels = airy_psf_batch(params, dtype=torch.float32)
            guides = wiener_batch(x[:, :1].float(), kernels, self.balances)
        return {**batch, "input": torch.cat([x, guides.to(x.dtype)], dim=1)}
