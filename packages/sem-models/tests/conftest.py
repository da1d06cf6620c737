"""Shared fixtures: a tiny grayscale MAE that builds in milliseconds."""

from __future__ import annotations

import pytest
import sem_models as sm
import torch
from sem_models.testing import MICRO_MAE, one_torch_thread

TINY = {"in_chans": 1, **MICRO_MAE}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors run fastest on one thread, and the CI machine's cores are shared."""
    with one_torch_thread():
        yield


@pytest.fixture
def tiny_mae() -> sm.MaskedAutoencoder:
    torch.manual_seed(0)
    return sm.build_mae("tiny", **TINY)
