"""Shared fixtures of the sem-metrology tests (offline; real images from SEM_REAL_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

LINE_IMAGE = "lines_euv_resist_0p827nm.tif"
LINE_INFO_BAR_ROW = 896


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def sem_real_dir() -> Path:
    """Folder of the real SEM test images; skips (naming SEM_REAL_DATA) when absent.

    The root conftest sets SEM_REAL_DATA from ``../shared/data/sem`` beside the clone.
    """
    env = os.environ.get("SEM_REAL_DATA")
    folder = Path(env) if env else None
    if folder is None or not folder.is_dir():
        pytest.skip("real SEM images not found: set SEM_REAL_DATA to ../shared/data/sem")
    return folder


@pytest.fixture(scope="session")
def real_line_image(sem_real_dir: Path) -> np.ndarray:
    """The real line/space image (uint8), info bar (rows 896-959) removed."""
    path = sem_real_dir / LINE_IMAGE
    if not path.is_file():
        pytest.skip(f"{path} missing: set SEM_REAL_DATA to the folder holding {LINE_IMAGE}")
    try:
        from sem_physics.io import read_image

        data = np.asarray(read_image(path).data)
    except ImportError:
        import tifffile

        data = tifffile.imread(path)
    return np.ascontiguousarray(data[:LINE_INFO_BAR_ROW])
