"""Shared fixtures: a tiny grayscale MAE that builds in milliseconds."""

from __future__ import annotations

import pytest
import sem_models as sm
import torch

TINY = dict(
    in_chans=1,
    img_size=32,
    patch_size=8,
    embed_dim=32,
    depth=2,
    num_heads=2,
    decoder_embed_dim=32,
    decoder_depth=1,
    decoder_num_heads=2,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors run fastest on one thread, and the CI machine's cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_mae() -> sm.MaskedAutoencoder:
    torch.manual_seed(0)
    return sm.build_mae("tiny", **TINY)
