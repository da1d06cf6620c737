"""Every console script that prints lines exits quietly when its stdout is already closed.

``sem-psf IMG | head -1`` closes the pipe after one line; the next write raises
``BrokenPipeError``. Each command must then print nothing to stderr (no traceback, no "Exception
ignored" line) and exit with 141 (128 + SIGPIPE). The pipe's read end is closed before the
command starts, so the very first write fails, deterministically.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import ndimage
from sem_physics import ParameterRanges, degrade, degrade_files, make_sample, write_image
from sem_physics.pipes import EXIT_BROKEN_PIPE


def run_into_closed_pipe(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, *args], stdout=write_end, stderr=subprocess.PIPE, timeout=120
        )
    finally:
        os.close(write_end)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    y = degrade(make_sample("contacts", (160, 200), seed=1), ParameterRanges().midpoint(), rng=0)
    return write_image(tmp_path_factory.mktemp("pipe") / "contacts.tif", y, "float32")


@pytest.mark.parametrize(
    "args",
    [
        ["-m", "sem_physics.psf_cli", "{image}", "{image}"],
        ["-m", "sem_physics.cli", "{image}", "-o", "{out}", "--json"],
        ["-m", "sem_metrology.cli", "contacts", "{image}", "--pixel-size-nm", "1", "--json"],
        ["-m", "sem_train.cli", "restore", "{image}", "-o", "{out}", "--method", "input", "--json"],
    ],
    ids=["sem-psf", "sem-degrade", "sem-measure", "sem"],
)
def test_closed_stdout_gives_no_traceback_and_status_141(
    args: list[str], image: Path, tmp_path: Path
) -> None:
    proc = run_into_closed_pipe([a.format(image=image, out=tmp_path / "out") for a in args])
    assert proc.stderr.decode() == ""
    assert proc.returncode == EXIT_BROKEN_PIPE


def test_open_stdout_is_unchanged(image: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sem_physics.psf_cli", str(image), "--json"],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.count(b"\n") == 1 and proc.stderr == b""


@pytest.fixture(scope="module")
def tilted_lines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lines 1° off vertical: sem-measure warns "the image turned by -1°"."""
    x = ndimage.rotate(make_sample("lines", (320, 320), seed=1), 1.0, reshape=False, mode="reflect")
    x = x[40:-40, 40:-40]
    return write_image(tmp_path_factory.mktemp("tilted") / "lines.tif", x - x.min(), "float32")


@pytest.mark.parametrize(
    ("args", "char"),
    [
        (["-m", "sem_train.cli", "--help"], "→"),
        (["-m", "sem_physics.cli", "--replay", "{manifest}", "-o", "{out}", "--json"], "µ"),
        (["-m", "sem_metrology.cli", "lines", "{lines}", "--pixel-size-nm", "1", "--json"], "°"),
        (
            [
                "-m",
                "sem_train.cli",
                "restore",
                "{image}",
                "-o",
                "{out}",
                "--method",
                "input",
                "--json",
            ],
            "µ",
        ),
    ],
    ids=["sem --help", "sem-degrade", "sem-measure", "sem restore"],
)
def test_redirected_stdout_is_utf8_whatever_the_locale(
    args: list[str], char: str, image: Path, tilted_lines: Path, tmp_path: Path
) -> None:
    """Windows pipes and files get the ANSI code page (cp1252): output must not fail on "→",
    and ``--json > file`` must be UTF-8 (as ``--output`` is), not "°" or "µ" in cp1252."""
    named = tmp_path / "Probe_µ" / "Probe_µ1.tif"
    named.parent.mkdir()
    named.write_bytes(image.read_bytes())
    degrade_files([named], tmp_path / "degraded", mode="midpoint")
    manifest = tmp_path / "degraded" / "manifest.json"
    out = tmp_path / "Ausgabe_µ"
    argv = [a.format(image=named, lines=tilted_lines, manifest=manifest, out=out) for a in args]
    proc = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "cp1252"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert char in proc.stdout.decode("utf-8")
