"""Every console script speaks on stderr in one voice, as a pipeline sees it (real processes).

Each line is ``PROG: KIND: message`` (``error``, ``warning`` or ``note``; a subcommand's usage
error ``PROG SUB: error: ...``), an error is one line, and the same situation ends with the same
exit status in ``sem-psf``, ``sem-degrade``, ``sem-measure`` and ``sem restore``: 2 for bad
input (a missing file, a bad option value, an output path that cannot be written, a folder of
which no file can be read). The image reader's notes (a JPEG, a multi-page TIFF) are warnings
of the command that read the file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from sem_physics import make_sample
from sem_physics.io import JPEG_NOTE, multipage_note

READ_ONLY = Path("/sys/sem-stderr-out")  # a read-only file system even for root
LINE = re.compile(r"^(?P<prog>[\w-]+)(?: [\w-]+)?: (?P<kind>error|warning|note): \S")

#: how each command is given one input (file or folder) and, when it writes files, -o
COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "sem-psf": lambda src, out: ["sem-psf", str(src)],
    "sem-degrade": lambda src, out: ["sem-degrade", str(src), "-o", str(out)],
    "sem-measure": lambda src, out: ["sem-measure", "lines", str(src), "--pixel-size-nm", "1"],
    "sem": lambda src, out: ["sem", "restore", str(src), "-o", str(out), "--method", "input"],
}


def _script(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name) or name


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_script(argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stderr_lines(prog: str, stderr: str) -> list[tuple[str, str]]:
    """(kind, text after ``PROG: KIND: ``) of every stderr line, each checked to carry the
    program's name and a kind."""
    out = []
    for line in stderr.splitlines():
        m = LINE.match(line)
        assert m and m["prog"] == prog, f"not a '{prog}: KIND: ...' line: {line!r}"
        out.append((m["kind"], line[line.index(f"{m['kind']}: ") + len(m["kind"]) + 2 :]))
    return out


def _grey(seed: int) -> np.ndarray:
    x = make_sample("lines", (128, 128), seed=seed)
    return np.rint(255 * (x - x.min()) / (x.max() - x.min())).astype(np.uint8)


@pytest.fixture(scope="module")
def noted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of a JPEG and a two-page TIFF: readable, each with a note of the reader."""
    folder = tmp_path_factory.mktemp("noted")
    Image.fromarray(_grey(1)).save(folder / "a.jpg", quality=95)
    tifffile.imwrite(folder / "b.tif", np.stack([_grey(2), _grey(3)]))
    return folder


@pytest.fixture(scope="module")
def unreadable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("unreadable")
    for name in ("a.tif", "b.tif"):
        (folder / name).write_bytes(b"II*\x00 not a tiff")
    return folder


@pytest.mark.parametrize("prog", list(COMMANDS))
def test_reader_notes_are_warnings_of_the_command(prog: str, noted: Path, tmp_path: Path) -> None:
    """A JPEG and a multi-page TIFF: ``PROG: warning: FILE: note``, once each, in every
    command (sem-psf, sem-degrade and sem-measure printed the reader's log bare)."""
    done = run(COMMANDS[prog](noted, tmp_path / "out"))
    assert "Traceback" not in done.stderr, done.stderr
    lines = stderr_lines(prog, done.stderr)
    for path, note in ((noted / "a.jpg", JPEG_NOTE), (noted / "b.tif", multipage_note(2))):
        assert lines.count(("warning", f"{path}: {note}")) == 1, done.stderr


@pytest.mark.parametrize("prog", list(COMMANDS))
def test_a_missing_file_is_one_error_line_and_status_2_also_with_debug(
    prog: str, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.tif"
    done = run(COMMANDS[prog](missing, tmp_path / "out"))
    assert done.returncode == 2
    assert stderr_lines(prog, done.stderr) == [("error", f"{missing}: no such file or folder")]
    debug = run([*COMMANDS[prog](missing, tmp_path / "out"), "--debug"])
    assert debug.returncode == 2 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.splitlines()[-1] == done.stderr.strip()  # the traceback, then the line


@pytest.mark.parametrize("prog", list(COMMANDS))
def test_a_folder_of_unreadable_files_is_status_2(
    prog: str, unreadable: Path, tmp_path: Path
) -> None:
    """Nothing could be read: bad input, 2, in every command (sem-measure said 1), and each
    file is named in an error line (sem-degrade said ``skipped:``)."""
    done = run(COMMANDS[prog](unreadable, tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    lines = stderr_lines(prog, done.stderr)
    assert {kind for kind, _ in lines} == {"error"}
    for name in ("a.tif", "b.tif"):
        assert any(f"{unreadable / name}: " in text for _, text in lines), lines


@pytest.mark.parametrize(
    ("prog", "argv"),
    [
        ("sem-degrade", ["sem-degrade", "{src}", "-o", f"{READ_ONLY}"]),
        (
            "sem-measure",
            ["sem-measure", "lines", "{src}", "--pixel-size-nm", "1", "--output", f"{READ_ONLY}/t"],
        ),
        ("sem", ["sem", "restore", "{src}", "-o", f"{READ_ONLY}", "--method", "input"]),
    ],
)
def test_an_output_path_that_cannot_be_written_is_one_line_naming_it(
    prog: str, argv: list[str], noted: Path
) -> None:
    """Status 2 and one line naming the output, not the input (sem-measure put the image's
    name before it, as if the image were at fault)."""
    src = noted / "b.tif"
    done = run([a.format(src=src) for a in argv])
    assert done.returncode == 2
    lines = [line for kind, line in stderr_lines(prog, done.stderr) if kind == "error"]
    assert len(lines) == 1 and str(READ_ONLY) in lines[0] and str(src) not in lines[0], lines


@pytest.mark.parametrize("prog", list(COMMANDS))
def test_a_bad_option_value_is_one_usage_line_and_status_2(prog: str, noted: Path) -> None:
    done = run([*COMMANDS[prog](noted / "b.tif", noted / "out"), "--max-pixels", "0"])
    assert done.returncode == 2
    lines = stderr_lines(prog, done.stderr)
    assert len(lines) == 1 and lines[0][0] == "error" and "--max-pixels" in lines[0][1], lines


def test_restoring_a_uniform_image_says_what_can_help(tmp_path: Path) -> None:
    """No PSF changes a uniform image: the error says there is nothing to restore and to check
    the file, not to give --psf (which restores it unchanged)."""
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.full((96, 96), 120, np.uint8))
    done = run(["sem", "restore", str(flat), "-o", str(tmp_path / "out")])
    assert done.returncode == 2
    ((kind, text),) = stderr_lines("sem", done.stderr)
    assert kind == "error" and text.startswith(f"{flat}: uniform image (every pixel the same)")
    assert "nothing to restore" in text and "check that the file" in text
    assert "--psf" not in text
