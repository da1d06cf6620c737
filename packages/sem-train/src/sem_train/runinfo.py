"""Provenance written beside every run: resolved config, package versions, git commit, host."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from sem_physics.atomic import atomic_write_text

from .runfolder import RUN_INFO_NAME

__all__ = ["git_commit", "package_versions", "write_run_info"]

_PACKAGES = (
    "sem-physics",
    "sem-metrology",
    "sem-models",
    "sem-baselines",
    "sem-train",
    "torch",
    "timm",
    "numpy",
    "pydantic",
    "safetensors",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the toolkit's packages and main dependencies (None if absent)."""
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(start: Path | None = None) -> dict[str, Any]:
    """The commit of the source tree (and whether it has local changes), or None outside git.

    None also when the folder lies in a repository that does not track it: an installed copy
    (a virtual environment inside someone's checkout) is not that checkout's commit.
    """
    here = Path(start or Path(__file__).resolve().parent)
    try:
        tracked = subprocess.run(
            ["git", "ls-files", "--", "."], cwd=here, capture_output=True, text=True, timeout=10
        )
        if tracked.returncode != 0 or not tracked.stdout.strip():
            return {"commit": None}
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return {"commit": None}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=20,
        )
        return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def write_run_info(
    out_dir: Path, config: dict[str, Any], extra: dict[str, Any] | None = None
) -> None:
    """Write ``run_info.json`` and ``config.json`` (the resolved config) into ``out_dir``, in
    this order: a ``config.json`` without ``run_info.json`` beside it is no run's (a fresh run
    refuses to overwrite it, see :meth:`sem_train.runfolder.RunFolder.check_fresh`)."""
    info = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "pid": os.getpid(),
        "packages": package_versions(),
        "git": git_commit(),
        **(extra or {}),
    }
    atomic_write_text(out_dir / RUN_INFO_NAME, json.dumps(info, indent=2, default=str) + "\n")
    atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2, default=str) + "\n")
