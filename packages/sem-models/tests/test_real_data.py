"""Full-frame inference on the real SEM micrographs (SEM_REAL_DATA, set by the root conftest)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import sem_models as sm
import torch


def _frame(name: str) -> np.ndarray:
    root = os.environ.get("SEM_REAL_DATA")
    if not root:
        pytest.skip("SEM_REAL_DATA not set")
    import tifffile

    img = tifffile.imread(Path(root) / name).astype(np.float32)
    return img[:896] if name.startswith("lines") else img  # info bar at rows 896-959


@pytest.mark.parametrize("name", ["lines_euv_resist_0p827nm.tif", "contacts_0p901nm.tif"])
def test_real_frames_pass_through_sliding_windows_unchanged_by_an_identity(name):
    img = _frame(name)
    out = sm.restore_image(lambda x: x, img, window=224, overlap=8, batch_size=8)
    assert out.shape == img.shape
    np.testing.assert_allclose(out, img, rtol=1e-5, atol=2e-3)


def test_real_frame_through_a_tiny_restoration_model():
    img = _frame("lines_euv_resist_0p827nm.tif")
    torch.manual_seed(0)
    mae = sm.build_mae(
        "tiny", in_chans=1, img_size=224, embed_dim=32, depth=1, num_heads=2,
        decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2,
    )  # fmt: skip
    model = sm.RestorationModel(mae)
    out = sm.restore_image(model, img, window=224, overlap=8, batch_size=8)
    assert out.shape == img.shape and np.isfinite(out).all()
    assert 0.0 <= out.min() and out.max() <= 255.0
    # Where only the first window covers the image (padded rows/cols 0..215, i.e. image
    # 0..211 after the 4-px reflect pad), the blend is that window's output exactly.
    padded = np.pad(img, 4, mode="symmetric")[None, None, :224, :224] / 255.0
    with torch.no_grad():
        alone = model(torch.from_numpy(padded.astype(np.float32)))[0, 0].numpy()
    expect = np.clip(alone * 255.0, 0.0, 255.0)[4:216, 4:216]
    np.testing.assert_allclose(out[:212, :212], expect, rtol=1e-4, atol=1e-2)
