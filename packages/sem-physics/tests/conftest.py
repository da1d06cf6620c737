"""Shared fixtures of the sem-physics tests (real images from SEM_REAL_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def real_dir() -> Path:
    """Folder of the real SEM test images; skips (naming SEM_REAL_DATA) when it is not set (the
    root conftest sets it from ../shared/data/sem, and CI turns such a skip into a failure)."""
    folder = os.environ.get("SEM_REAL_DATA")
    if not folder:
        pytest.skip("SEM_REAL_DATA not set")
    return Path(folder)
