"""Every package stays lint-clean (ruff) and type-consistent (mypy) as the README asks of a
change: both run here on the sources as a contributor runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sem_physics", "sem_metrology", "sem_models", "sem_baselines", "sem_train")
SOURCES = [str(ROOT / "packages" / name.replace("_", "-") / "src" / name) for name in PACKAGES]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=600,
    )


def test_ruff_finds_nothing():
    done = _run(["ruff", "check", "--no-cache", "."])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_mypy_finds_no_type_errors(tmp_path):
    # The settings are the root pyproject.toml's [tool.mypy], which mypy reads from ROOT:
    # third-party packages without stubs (scipy, tqdm, lpips, pyiqa) are read as Any, and
    # timm, scikit-image and torch's unused internals are not followed (half the time).
    args = ["mypy", "--cache-dir", str(tmp_path), *SOURCES]
    done = _run(args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
