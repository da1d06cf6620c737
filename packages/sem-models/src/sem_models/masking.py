"""Masks and reconstructions of a :class:`~sem_models.mae.MaskedAutoencoder` as images.

Helpers that training and visualisation share: per-sample seeded masking noise (so a
student and its teacher, a resumed run and a distributed one all draw the same masks), the
patch mask as a pixel mask, and the prediction mapped back to ``[0, 1]`` images.
"""

from __future__ import annotations

import torch

from .imaging import denormalize, float32_or_wider, normalize
from .mae import MaskedAutoencoder

__all__ = ["patch_noise", "pixel_mask", "reconstruction"]


def patch_noise(seeds: torch.Tensor, num_patches: int, device: torch.device) -> torch.Tensor:
    """Per-sample masking noise (N, L), row ``i`` drawn from a generator seeded ``seeds[i] + 1``.

    Passed as ``noise`` to the MAE's ``random_masking``, it fixes each sample's mask by its
    seed alone, independently of batch composition, device and process count.
    """
    rows = [
        torch.rand(num_patches, generator=torch.Generator().manual_seed(int(s) + 1))
        for s in seeds.tolist()
    ]
    return torch.stack(rows).to(device)


def pixel_mask(model: MaskedAutoencoder, mask: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Patch mask (N, L), 1 = masked, -> pixel mask (N, C, H, W) on a grid of ``hw`` patches."""
    p, c = int(model.patch_size), int(model.in_chans)
    patches = mask[..., None].expand(*mask.shape, p * p * c).to(torch.float32)
    return model.unpatchify(patches, hw)


def reconstruction(
    model: MaskedAutoencoder, imgs: torch.Tensor, pred: torch.Tensor
) -> torch.Tensor:
    """``pred`` (N, L, p*p*C) in the model's normalised space -> images (N, C, H, W) in [0, 1].

    With ``norm_pix_loss`` the prediction is per-patch standardised; each patch is given back
    the mean and variance of the corresponding input patch (MAE's visualisation convention).
    """
    p = int(model.patch_size)
    hw = (imgs.shape[-2] // p, imgs.shape[-1] // p)
    if model.norm_pix_loss:
        ref = model.patchify(normalize(imgs))
        mean, var = ref.mean(-1, keepdim=True), ref.var(-1, keepdim=True)
        pred = pred * (var + 1e-6).sqrt() + mean
    return denormalize(model.unpatchify(float32_or_wider(pred), hw))
