"""Pinned against independent computations and closed forms (per-sample masking noise)."""

from __future__ import annotations

import torch
from sem_models.masking import patch_noise


def test_patch_noise_rows_follow_the_documented_per_sample_seed():
    """Row i is drawn from a generator seeded seeds[i] + 1 (the docstring's contract, which
    resumed and distributed runs rely on to redraw the same masks), whatever the batch."""
    seeds = torch.tensor([0, 7, 123456])
    noise = patch_noise(seeds, 49, torch.device("cpu"))
    for i, s in enumerate(seeds.tolist()):
        expected = torch.rand(49, generator=torch.Generator().manual_seed(s + 1))
        assert torch.equal(noise[i], expected)
    assert torch.equal(patch_noise(seeds[1:2], 49, torch.device("cpu"))[0], noise[1])


def test_reconstruction_of_the_target_is_the_input_for_a_non_square_image():
    """The patch grid is (H/p, W/p): on a 32 x 64 image, predicting the target exactly must give
    back the input (the existing test uses square images, where H and W cannot be confused)."""
    from sem_models import build_mae
    from sem_models.masking import reconstruction
    from sem_models.testing import MICRO_MAE

    torch.manual_seed(0)
    model = build_mae("tiny", loss="l1_norm", **{**MICRO_MAE, "in_chans": 1, "depth": 1}).eval()
    imgs = torch.rand(2, 1, 32, 64) * 0.8 + 0.1
    out = reconstruction(model, imgs, model.target(imgs))
    assert out.shape == imgs.shape
    assert torch.allclose(out, imgs, atol=1e-4)
