"""The repository holds sources, docs and the shipped weights, never a run's outputs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Shipped model weights are the only large files the project tracks (model cards beside them).
_LARGE_OK = ("packages/sem-models/src/sem_models/pretrained/",)
_MAX_BYTES = 1_000_000


def _tracked() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail(f"{ROOT} is not a git checkout: the hygiene check reads `git ls-files`")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [p for p in out.split("\0") if p]


def test_no_run_outputs_are_tracked():
    """Report, benchmark and demo folders (``.gitignore``d) must not be committed."""
    outputs = [
        p
        for p in _tracked()
        if p.split("/")[0].startswith(("sem-benchmark", "sem-report", "sem-demo", "runs"))
        or Path(p).name in {"INCOMPLETE", "outputs.npz", ".sem-lock"}
    ]
    assert outputs == [], f"run outputs tracked in git: {outputs[:5]}"


def test_large_files_are_only_shipped_weights():
    large = [
        p
        for p in _tracked()
        if (ROOT / p).is_file()
        and (ROOT / p).stat().st_size > _MAX_BYTES
        and not p.startswith(_LARGE_OK)
        and p != "uv.lock"
    ]
    assert large == [], (
        f"files over {_MAX_BYTES} bytes tracked outside the shipped weights: {large}"
    )
