"""Fixtures for sem-train tests: tiny generated SEM-like image folders, offline settings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))


def make_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A line/space-like pattern with roughness, blobs and noise, 0..255 float."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    period = rng.uniform(6, 14)
    phase = rng.uniform(0, period)
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle) + rng.normal(0, 0.8, (h, w))
    img = np.where(((u + phase) % period) < period / 2, 180.0, 60.0)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 6)
        img += 50.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return np.clip(img + rng.normal(0, 4, (h, w)), 0, 255)


def write_folder(root: Path, n: int, size: int = 48, seed: int = 0) -> list[Path]:
    """``n`` images in mixed formats (8/16-bit TIFF, PNG, JPEG, BMP) under nested folders."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for k in range(n):
        img = make_image(rng, size, size + 8)
        sub = root / f"group{k % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        kind = k % 5
        if kind == 0:
            p = sub / f"im{k:03d}.tif"
            tifffile.imwrite(p, img.astype(np.uint8))
        elif kind == 1:
            p = sub / f"im{k:03d}.tiff"
            tifffile.imwrite(p, (img * 257).astype(np.uint16))
        elif kind == 2:
            p = sub / f"im{k:03d}.png"
            Image.fromarray(img.astype(np.uint8)).save(p)
        elif kind == 3:
            p = sub / f"im{k:03d}.jpg"
            Image.fromarray(img.astype(np.uint8)).save(p, quality=95)
        else:
            p = sub / f"im{k:03d}.bmp"
            Image.fromarray(img.astype(np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.fixture
def folder_writer():
    """The :func:`write_folder` helper (test modules cannot import conftest directly)."""
    return write_folder


@pytest.fixture
def image_folder(tmp_path) -> Path:
    root = tmp_path / "images"
    write_folder(root, 12)
    return root


@pytest.fixture
def corpus_dir() -> Path:
    env = os.environ.get("SEM_CORPUS_DATA")
    if not env or not Path(env).is_dir():
        pytest.skip("SEM_CORPUS_DATA not set (folder of real SEM micrographs)")
    return Path(env)
