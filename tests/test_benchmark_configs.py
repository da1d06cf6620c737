"""The benchmark configs the README and the model card cite load, and name folders that exist.

Each file in ``benchmarks/configs`` is read by :func:`sem_train.evaluation.load_benchmark_config`
from the repository root, as the documented commands run it: method names, fields and ranges
are checked there, and every input folder it names (``../shared`` beside the clone for the real
images) must be a folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sem_train.evaluation import load_benchmark_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "benchmarks" / "configs").glob("*.yaml"))


def test_there_are_benchmark_configs():
    assert {p.name for p in CONFIGS} >= {"foundation_s2s.yaml", "foundation_real.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_benchmark_config_loads_from_the_repository_root(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_benchmark_config(path)
    assert cfg.method_names(), path.name
    folders = [cfg.images, cfg.train_images, cfg.defocused, cfg.focused]
    shared = [f for f in folders if f is not None and "shared" in f.parts]
    if shared and not os.environ.get("SEM_REAL_DATA"):
        pytest.skip(f"{path.name} reads ../shared: set SEM_REAL_DATA (the real images) to run it")
    for folder in folders:
        if folder is not None:
            assert folder.is_dir(), f"{path.name}: {folder} is not a folder"
