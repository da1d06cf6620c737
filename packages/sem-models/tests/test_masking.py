"""Seeded masking noise, pixel masks and reconstructions of the MAE (sem_models.masking)."""

from __future__ import annotations

import pytest
import torch
from sem_models import build_mae
from sem_models.masking import patch_noise, pixel_mask, reconstruction
from sem_models.testing import MICRO_MAE

TINY = {**MICRO_MAE, "in_chans": 1, "depth": 1}


def test_patch_noise_depends_only_on_each_samples_seed():
    a = patch_noise(torch.tensor([3, 7, 11]), 16, torch.device("cpu"))
    b = patch_noise(torch.tensor([11, 3]), 16, torch.device("cpu"))
    assert a.shape == (3, 16) and torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], a[1]) and float(a.min()) >= 0 and float(a.max()) < 1


@pytest.mark.parametrize("loss", ["l1_norm", "mse_norm_pix"])
def test_reconstruction_of_the_target_is_the_input(loss):
    torch.manual_seed(0)
    model = build_mae("tiny", loss=loss, **TINY).eval()
    imgs = torch.rand(2, 1, 32, 32) * 0.8 + 0.1
    # Predicting the target exactly must give back the input images in [0, 1].
    assert torch.allclose(reconstruction(model, imgs, model.target(imgs)), imgs, atol=1e-4)


def test_pixel_mask_covers_exactly_the_masked_patches():
    torch.manual_seed(0)
    model = build_mae("tiny", **TINY).eval()
    imgs = torch.rand(2, 1, 32, 32)
    noise = patch_noise(torch.tensor([1, 2]), 16, torch.device("cpu"))
    _, _, mask = model(imgs, mask_ratio=0.75, noise=noise)
    m = pixel_mask(model, mask, (4, 4))
    assert m.shape == (2, 1, 32, 32) and float(m.mean()) == 0.75
    # Patch (i, j) of the mask is the 8x8 block (i, j) of the pixel mask.
    blocks = m.reshape(2, 4, 8, 4, 8).amax(dim=(2, 4)).reshape(2, 16)
    assert torch.equal(blocks, mask)
